"""The live service on the slot store: it runs the flashed model, follows switches while
running, and reports what it runs so that a flash trial is judged on the real loop.

``edge-denoise live --state-dir DIR`` (the directory of ``serve --state-dir``) starts on the
active slot's model and config, or on the packaged model when no bundle is installed (and
says so in its status). Every ``POLL_S`` the main thread stats ``active.json``; when the
pointer names another bundle (switch, confirm-time rollback, trial expiry) a thread loads and
warms the new interpreter and the worker swaps it in between two blocks (``LiveLoop.
request_model``): no restart, no dropped audio. The service writes ``DIR/live.json``
(``STATUS``) every poll: pid, heartbeat, the running model (bundle version, slot, sha256), its
CPU budget, and since the switch the hops, overruns and worker CPU per hop.

``live_check`` is the trial's second health check (``SlotStore.confirm``): when a live
service runs on the directory, the trial is confirmed only once that service runs the new
bundle, with a fresh heartbeat, ``MIN_HOPS`` hops whose CPU p99 is within its budget and no
overrun; otherwise ``confirm`` rolls back and the service follows the pointer back.

The budget: the profile's ``runtime.hop_budget_ms``, tightened (never loosened) by a
bundle's ``config.live.hop_budget_ms``. A bundle's ``config.transport`` sets the ``--stream``
sender's parameters at each switch (explicit command-line options win; the protocol follows
the URL).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.params import TransportParams
from edge.slots import FlashError, SlotStore

STATUS = "live.json"
POLL_S = 0.5  # pointer stat and status write
MIN_HOPS = 100  # 1 s of audio on the new model before the live check judges it
CHECK_TIMEOUT_S = 30.0  # default; flash.json ``live_check_timeout_s``
HEARTBEAT_S = 2.0  # older than this: the service is not answering now
STALE_S = 30.0  # older than this and its pid gone: no live service (the check is skipped)


@dataclass(frozen=True)
class ActiveModel:
    """The model the slot store says should run."""

    source: str  # "bundle" or "packaged"
    path: Path
    sha256: str
    slot: str | None = None
    version: str | None = None  # the bundle's version
    state: str | None = None  # the pointer's: confirmed | trial
    config: dict = field(default_factory=dict)  # the bundle's (signed) config
    note: str | None = None

    @property
    def key(self) -> tuple:
        return (self.slot, self.version, self.sha256)

    def info(self, name: str | None = None, model_version: str | None = None) -> dict:
        return {"source": self.source, "slot": self.slot, "bundle_version": self.version,
                "sha256": self.sha256, "name": name, "model_version": model_version}


def info_key(info: dict | None) -> tuple | None:
    return None if not info else (info.get("slot"), info.get("bundle_version"), info.get("sha256"))


def resolve(state_dir: str | os.PathLike) -> ActiveModel:
    """The active slot's model (signature and hashes verified), else the packaged one."""
    from edge.model import default_model_path, sha256_file

    store = SlotStore(state_dir)
    ptr = store.read_pointer()
    slot = ptr.get("active")
    if slot:
        try:
            m = store.verify_slot(slot)
            return ActiveModel("bundle", store.slots_dir / slot / m["model"]["file"],
                               m["model"]["sha256"], slot, str(m["version"]), ptr.get("state"),
                               m.get("config") or {})
        except (FlashError, OSError, KeyError, ValueError) as e:
            note = f"active slot {slot} does not verify ({e}): running the packaged model"
    else:
        note = f"no bundle installed in {state_dir}: running the packaged model"
    path = default_model_path()
    return ActiveModel("packaged", path, sha256_file(path), note=note)


def hop_budget_ms(profile_budget_ms: float, config: dict | None) -> float:
    """The profile's budget, or the bundle's ``live.hop_budget_ms`` when that is tighter."""
    b = ((config or {}).get("live") or {}).get("hop_budget_ms")
    ok = isinstance(b, (int, float)) and not isinstance(b, bool) and b > 0
    return min(float(profile_budget_ms), float(b)) if ok else float(profile_budget_ms)


def transport_for(base, pinned: frozenset, config: dict | None):
    """``base`` (TransportParams from the command line) with the bundle's ``transport``
    table over it, except ``protocol`` (the URL's) and the options given explicitly."""
    from edge.params import ParamsError, TransportParams

    t = {k: v for k, v in ((config or {}).get("transport") or {}).items()
         if k != "protocol" and k not in pinned}
    try:
        return TransportParams.from_dict({**base.to_dict(), **t})
    except (ParamsError, TypeError):
        return base


# ----------------------------------------------------------------------------- the service
class SlotFollower:
    """Keeps a LiveLoop on the slot store's active model and writes ``live.json``. Call
    ``poll()`` from the loop's status callback (main thread) and ``close()`` at the end."""

    def __init__(self, state_dir, loop, running: ActiveModel, *, profile, num_threads: int = 1,
                 senders=(), transport_base=None, pinned=frozenset(), log=None):
        self.state_dir, self.loop, self.profile = Path(state_dir), loop, profile
        self.store = SlotStore(state_dir)
        self.num_threads, self.senders = num_threads, list(senders)
        self.transport_base, self.pinned = transport_base, frozenset(pinned)
        self.log = log or (lambda msg: print(f"edge-denoise live: {msg}", file=sys.stderr,
                                             flush=True))
        with contextlib.suppress(OSError):  # write_status says so if this fails
            self.state_dir.mkdir(parents=True, exist_ok=True)
        self.started = time.time()
        self.running = self.want = running
        self.want_since = self.started
        self.load_error: dict | None = None
        self._loading: tuple | None = None  # being loaded
        self._requested: tuple | None = None  # handed to the loop, not swapped in yet
        self._failed: tuple | None = None
        self._stat = self._pointer_stat()
        self._next = 0.0
        self._load_ms: dict[tuple, float] = {}
        self.transport = None
        from edge.paramfollow import ParamsFile

        # the serial agent's active parameters (``serve``'s host-side apply/confirm/revert)
        self._agent_params = ParamsFile(self.state_dir / "params.json")
        self._follow_agent()
        self._apply_transport(running)
        self.write_status()

    def _follow_agent(self) -> bool:
        """Take the agent's active parameters (``STATE/params.json``) as the transport base
        when they change; the stream's protocol stays the URL's. True when they changed."""
        p = self._agent_params.poll()
        if p is None or self.transport_base is None:
            return False
        self.transport_base = TransportParams.from_dict(
            {**p.to_dict(), "protocol": self.transport_base.protocol})
        return True

    def _pointer_stat(self) -> tuple | None:
        try:
            st = os.stat(self.store.pointer)
            return st.st_ino, st.st_mtime_ns, st.st_size
        except OSError:
            return None

    def budget_ms(self) -> float:
        return hop_budget_ms(self.profile.runtime.hop_budget_ms, self.running.config)

    def poll(self, force: bool = False) -> None:
        now = time.monotonic()
        if now < self._next and not force:
            return
        self._next = now + POLL_S
        with contextlib.suppress(FlashError, OSError):
            self.store.expire(log=self.log, wait=False)  # the trial deadline, agent or not
        st = self._pointer_stat()
        if st != self._stat:
            self._stat, self._failed = st, None
            self.want = resolve(self.state_dir)
            self.want_since = st[1] / 1e9 if st else time.time()
        key = info_key(self.loop.model_info)
        if key == self.want.key:
            self._requested = None
            if self.running.key != key:
                self._now_running(self.want)
            self.running = self.want  # same bundle; the pointer's state may have changed
        elif self.want.key not in (self._loading, self._requested, self._failed):
            self._loading = self.want.key
            threading.Thread(target=self._load, args=(self.want,), name="model-loader",
                             daemon=True).start()
        if self._follow_agent():
            self._apply_transport(self.running)
        self.write_status()

    def _load(self, target: ActiveModel) -> None:
        """Off the audio path: load, check and warm the interpreter, then hand it over."""
        from edge.model import StepModel

        t0 = time.perf_counter()
        try:
            model = StepModel(target.path, num_threads=self.num_threads)
            if model.front_end != self.loop.denoiser.fe:
                raise ValueError("its front end differs from the running model's")
            state = model.init_state()
            feats = np.zeros(model.n_bins, dtype=np.float32)
            for _ in range(3):  # first invokes allocate and fault pages in: not on the worker
                _, state = model.step(feats, state)
        except Exception as e:  # a model that will not load keeps the old one running
            self.load_error = {"bundle_version": target.version, "sha256": target.sha256,
                               "slot": target.slot, "error": f"{type(e).__name__}: {e}"}
            self._failed = target.key
            self.log(f"cannot load bundle {target.version}: {e}; keeping "
                     f"{self.running.version or 'the packaged model'}")
            self._loading = None
            return
        self._load_ms[target.key] = (time.perf_counter() - t0) * 1e3
        if self.want.key == target.key:  # not overtaken by another switch meanwhile
            md = model.metadata
            self._requested = target.key
            self.loop.request_model(model, target.info(md.name, md.version))
        self._loading = None

    def _now_running(self, am: ActiveModel) -> None:
        self.running = am
        if self.loop.switches and info_key(self.loop.switches[-1]) == am.key:
            rec = self.loop.switches[-1]
            rec["load_ms"] = round(self._load_ms.pop(am.key, float("nan")), 1)
            rec["switch_ms"] = round((rec["t"] - self.want_since) * 1e3, 1)
        if self.load_error and info_key(self.load_error) != am.key:
            self.load_error = None
        self._apply_transport(am)
        self.log(f"now running {describe(am)}")

    def _apply_transport(self, am: ActiveModel) -> None:
        if self.transport_base is None or not self.senders:
            return
        params = transport_for(self.transport_base, self.pinned, am.config)
        if params != self.transport:
            for s in self.senders:
                s.update(params)
            if self.transport is not None:
                from edge.paramfollow import describe_change

                self.log(f"transport: {describe_change(self.transport, params)}")
            self.transport = params

    def status(self, running: bool = True) -> dict:
        lp = self.loop
        return {"pid": os.getpid(), "running": running, "heartbeat": time.time(),
                "started": self.started, "state_dir": str(self.state_dir),
                "profile": self.profile.name, "model": lp.model_info,
                "bundle_state": self.want.state if self.want.key == self.running.key else None,
                "note": self.running.note, "budget_ms": self.budget_ms(),
                "bypass": lp.denoiser.bypass,
                "window": lp.stats.window(), "audio_s": round(lp.audio_s, 3),
                "overruns": lp.stats.overruns, "hops": lp.stats.hops,
                "transport": self.transport.to_dict() if self.transport else None,
                "load_error": self.load_error, "switches": lp.switches[-8:]}

    def write_status(self, running: bool = True) -> None:
        path = self.state_dir / STATUS
        tmp = path.with_name(f".{STATUS}.{os.getpid()}.tmp")
        try:  # no fsync: a heartbeat need not survive a power cut
            tmp.write_text(json.dumps(self.status(running), default=str))
            os.replace(tmp, path)
        except OSError as e:
            self.log(f"cannot write {path}: {e.strerror}")

    def close(self) -> None:
        self.write_status(running=False)


def describe(am: ActiveModel) -> str:
    if am.source == "packaged":
        return f"the packaged model (sha256 {am.sha256[:16]}…): {am.note}"
    return f"bundle {am.version} (slot {am.slot}, {am.state}, model sha256 {am.sha256[:16]}…)"


# --------------------------------------------------------------------- the trial's live check
def read_status(root: str | os.PathLike) -> dict | None:
    with contextlib.suppress(OSError, ValueError):
        return json.loads((Path(root) / STATUS).read_text())
    return None


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except PermissionError:
        return True
    except (ProcessLookupError, ValueError, TypeError, OverflowError):
        return False


def judge(st: dict | None, want: tuple, now: float, alive: bool,
          min_hops: int = MIN_HOPS) -> tuple[str, str]:
    """Verdict on one ``live.json`` for the bundle ``want`` (slot, version, sha256):
    ``absent`` (no service runs: nothing to check), ``wait``, ``fail`` or ``pass``, with why."""
    if st is None:
        return "absent", "no live service runs on this state directory"
    if not st.get("running"):
        return "absent", "the live service is stopped"
    age = now - float(st.get("heartbeat") or 0)
    if not alive:
        if age > STALE_S:
            return "absent", f"the live service is gone (last heartbeat {age:.0f} s ago)"
        return "wait", "the live service is restarting"
    if age > HEARTBEAT_S:
        return "wait", f"no heartbeat from the live service for {age:.1f} s"
    err = st.get("load_error")
    if err and info_key(err) == want:
        return "fail", f"the live service cannot load it: {err.get('error')}"
    m = st.get("model") or {}
    if info_key(m) != want:
        return "wait", (f"the live service still runs {m.get('bundle_version') or 'the packaged'}"
                        f" model (sha256 {str(m.get('sha256'))[:16]}…)")
    w, budget = st.get("window") or {}, float(st.get("budget_ms") or 0)
    if w.get("overruns"):
        return "fail", f"{w['overruns']} overrun(s) on the new model"
    p99 = (w.get("hop_cpu_ms") or {}).get("p99")
    if w.get("hops", 0) < min_hops or p99 is None:
        return "wait", f"{w.get('hops', 0)} of {min_hops} hops on the new model"
    if p99 > budget:
        return "fail", (f"hop CPU p99 {p99:.3f} ms is over the budget of {budget:g} ms "
                        f"({w['hops']} hops)")
    return "pass", (f"bundle {want[1]} live: {w['hops']} hops, CPU p99 {p99:.3f} ms within "
                    f"{budget:g} ms, no overruns")


def live_check(root: str | os.PathLike, want: tuple, *, timeout_s: float = CHECK_TIMEOUT_S,
               min_hops: int = MIN_HOPS) -> dict:
    """Wait (bounded) for the live service to run ``want`` healthily. Returns the evidence,
    ``{"running": False, ...}`` when no live service runs; raises FlashError ``unhealthy``."""
    t_end = time.monotonic() + timeout_s
    while True:
        st = read_status(root)
        verdict, why = judge(st, want, time.time(), _alive((st or {}).get("pid")), min_hops)
        if verdict == "absent":
            return {"running": False, "note": why}
        if verdict == "pass":
            return {"running": True, "ok": True, "detail": why, "model": st["model"],
                    "window": st["window"], "budget_ms": st["budget_ms"], "pid": st["pid"]}
        if verdict == "fail":
            raise FlashError(f"live check failed: {why}", "unhealthy")
        if time.monotonic() > t_end:
            raise FlashError(f"live check failed: not healthy within {timeout_s:g} s ({why})",
                             "unhealthy")
        time.sleep(0.1)


def wait_running(root: str | os.PathLike, want: tuple, timeout_s: float = 10.0) -> bool:
    """Whether a running live service reports ``want`` within ``timeout_s``."""
    t_end = time.monotonic() + timeout_s
    while time.monotonic() < t_end:
        st = read_status(root)
        if st and st.get("running") and info_key(st.get("model")) == want:
            return True
        time.sleep(0.1)
    return False


def brief(root: str | os.PathLike) -> dict | None:
    """What ``flash-to-device status`` shows of the live service (None: never ran here)."""
    st = read_status(root)
    if st is None:
        return None
    m, w = st.get("model") or {}, st.get("window") or {}
    age = time.time() - float(st.get("heartbeat") or 0)
    return {"running": bool(st.get("running")) and _alive(st.get("pid")) and age < STALE_S,
            "source": m.get("source"), "version": m.get("bundle_version"),
            "sha256": m.get("sha256"), "heartbeat_age_s": round(age, 1),
            "hop_cpu_p99_ms": (w.get("hop_cpu_ms") or {}).get("p99"),
            "budget_ms": st.get("budget_ms"), "overruns": w.get("overruns"),
            "note": st.get("note")}
