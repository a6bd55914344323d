"""The device side of the serial control link: ``edge-denoise serve``.

One thread reads frames, answers each request once (retries are answered from a cache of
recent responses, so a resent ``put_chunk`` or ``apply`` is never executed twice), sends a
NAK for every damaged frame so the host resends at once, and reopens the port after an
unplug. Handlers live in a registry so other modules add messages without editing this one:

    # edge/flashdev.py
    from edge.agent import RemoteFailure, handler

    @handler("flash.begin", slow=True)          # slow: an ACK goes out before it runs
    def flash_begin(agent, args: dict) -> dict:  # args: the request's CBOR map
        path = agent.staged_file(args["name"])   # a file finished by put_end
        ...
        return {"ok": True}                       # any CBOR-encodable result
        # or: raise RemoteFailure("bad_signature", "bundle signature does not verify")

    def setup_agent(agent):  # optional hook, called once per Agent after import
        agent.info_providers["bundle"] = lambda: {...}

Modules named in ``EXTENSIONS`` (and any ``--plugin MODULE``) are imported when an Agent is
created; a missing module is skipped. ``Agent.register(name, fn)`` registers on one instance.
Messages and error codes: docs/protocol.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import math
import os
import platform
import shlex
import string
import subprocess
import sys
import time
import uuid
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cbor2

from edge import __version__
from edge import protocol as P
from edge.errors import HushlinkError
from edge.link import Link, LinkError, open_link
from edge.params import ParamsError, Telemetry, TransportParams, ranges

EXTENSIONS = ("edge.flashdev", "edge.devstatus")  # imported if present: flash, get_status


class RemoteFailure(HushlinkError):
    """Raised by a handler: the host gets ``{"ok": false, "e": code, "msg": message}``."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Handler:
    fn: Callable  # fn(agent, args: dict) -> CBOR-encodable result
    slow: bool = False  # send an ACK before running (the host then waits slow_timeout)


HANDLERS: dict[str, Handler] = {}


def handler(name: str, *, slow: bool = False):
    """Decorator: register ``fn(agent, args)`` for message ``name`` in every Agent."""
    def deco(fn):
        HANDLERS[name] = Handler(fn, slow)
        return fn
    return deco


# ---------------------------------------------------------------- telemetry sources

def _telemetry_record(d: dict) -> dict:
    return Telemetry.from_dict(d).to_dict()


class FileTelemetry:
    """Telemetry from a JSON-lines file of ``Telemetry.to_dict()`` records (the receiver's
    log), read incrementally into a ring buffer of the last ``keep`` records. ``parse`` turns
    one decoded line into a record (``dict`` for other logs, e.g. fault events)."""

    def __init__(self, path: str | Path, keep: int = 3600,
                 parse: Callable[[dict], dict] = _telemetry_record):
        self.path = Path(path)
        self.parse = parse
        self.ring: deque[dict] = deque(maxlen=keep)
        self._pos = 0
        self._partial = b""

    def records(self) -> list[dict]:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return list(self.ring)
        if size < self._pos:  # rotated or truncated: start again
            self._pos, self._partial = 0, b""
            self.ring.clear()
        if size > self._pos:
            with self.path.open("rb") as f:
                f.seek(self._pos)
                data = self._partial + f.read(size - self._pos)
            self._pos = size
            *lines, self._partial = data.split(b"\n")
            for line in lines:
                with contextlib.suppress(ValueError, TypeError):
                    self.ring.append(self.parse(json.loads(line)))
        return list(self.ring)


class MemoryTelemetry:
    """In-process ring buffer: the transport calls ``push(Telemetry)`` when both run in one
    process."""

    def __init__(self, keep: int = 3600):
        self.ring: deque[dict] = deque(maxlen=keep)

    def push(self, t: Telemetry | dict) -> None:
        self.ring.append(t.to_dict() if isinstance(t, Telemetry) else dict(t))

    def records(self) -> list[dict]:
        return list(self.ring)


# ---------------------------------------------------------------- stream control

class CommandStream:
    """Runs the device's audio stream as a subprocess, restarted when parameters change.

    ``template`` is the operator's command line, split into words once, here (shell-like
    quoting); each word may hold ``{bitrate_kbps} {protocol} {buffer_ms} {share} {fec}
    {loss_hint_pct}`` placeholders, replaced per start. A value always stays inside its own
    word (the argv is never re-split), so no parameter can add arguments."""

    FIELDS = tuple(f.name for f in dataclasses.fields(TransportParams))

    def __init__(self, template: str):
        try:
            self.argv = shlex.split(template)
            for word in self.argv:
                for _, field, spec, conv in string.Formatter().parse(word):
                    if field is not None and (field not in self.FIELDS or spec or conv):
                        raise ValueError(f"unknown placeholder {{{field}}}; use "
                                         + " ".join(f"{{{f}}}" for f in self.FIELDS))
        except ValueError as e:
            raise HushlinkError(f"--stream-cmd {template!r}: {e}") from None
        if not self.argv:
            raise HushlinkError("--stream-cmd is empty")
        self.template = template
        self.proc: subprocess.Popen | None = None

    def argv_for(self, params: TransportParams) -> list[str]:
        values = params.to_dict()
        return [word.format(**values) for word in self.argv]

    def start(self, params: TransportParams) -> None:
        self.stop()
        self.proc = subprocess.Popen(self.argv_for(params), stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


# ---------------------------------------------------------------- the agent

def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Agent:
    """Answers requests on one serial URL. ``state_dir`` holds ``device_id``, ``params.json``
    (active parameters and any trial) and ``staging/`` (uploaded files)."""

    def __init__(self, url: str, baud: int = 921_600, *, state_dir: str | Path = "state",
                 profile: str = "generic-linux", telemetry=None, stream=None,
                 plugins: tuple[str, ...] = (), pace: bool = False, log=None, events=None):
        self.url, self.baud, self.profile, self.pace = url, baud, profile, pace
        self.state_dir = Path(state_dir)
        self.staging_dir = self.state_dir / "staging"
        try:
            self.staging_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise HushlinkError(f"cannot use state directory {self.state_dir}: {e.strerror} "
                                "(choose one with --state-dir)") from None
        self.telemetry = telemetry  # object with records() -> list[dict], or None
        self.events = events  # fault events (live --fix-faults log), same interface, or None
        self.stream = stream  # object with start(params), stop(), running; or None
        self.handlers: dict[str, Handler] = {}
        self.info_providers: dict[str, Callable[[], object]] = {}
        self.param_listeners: list[Callable[[TransportParams], None]] = []
        self.log = log or (lambda msg: print(f"edge-denoise serve: {msg}", file=sys.stderr,
                                             flush=True))
        self.cache: OrderedDict[int, bytes] = OrderedDict()  # seq -> encoded response
        self.requests = 0
        self.started = time.monotonic()
        self.device_id = self._device_id()
        self.pending: TransportParams | None = None
        self.active, self.previous, self.trial_deadline = self._load_params()
        self._stop = False
        self.link: Link | None = None
        for mod in (*EXTENSIONS, *plugins):
            self._load_plugin(mod, required=mod in plugins)

    # -- registry
    def register(self, name: str, fn: Callable, *, slow: bool = False) -> None:
        """Register ``fn(agent, args)`` for ``name`` on this agent only (wins over HANDLERS)."""
        self.handlers[name] = Handler(fn, slow)

    def lookup(self, name: str) -> Handler | None:
        return self.handlers.get(name) or HANDLERS.get(name)

    def _load_plugin(self, mod: str, required: bool) -> None:
        """Import an extension and run its ``setup_agent``. A broken built-in extension is
        logged and skipped (the agent is how a device gets fixed, so it must still start);
        a broken ``--plugin`` is an error."""
        try:
            m = importlib.import_module(mod)
            hook = getattr(m, "setup_agent", None)
            if callable(hook):
                hook(self)
        except ModuleNotFoundError as e:
            if required:
                raise HushlinkError(f"plugin {mod}: {e}") from None
            if e.name != mod:
                self.log(f"extension {mod} skipped: {e}")
        except Exception as e:
            if required:
                raise HushlinkError(f"plugin {mod} failed to load: {type(e).__name__}: {e}"
                                    ) from None
            self.log(f"extension {mod} skipped: {type(e).__name__}: {e}")

    # -- state
    def _device_id(self) -> str:
        p = self.state_dir / "device_id"
        try:
            return p.read_text().strip()
        except FileNotFoundError:
            did = uuid.uuid4().hex[:16]
            _atomic_write(p, did.encode())
            return did

    def _load_params(self):
        p = self.state_dir / "params.json"
        try:
            d = json.loads(p.read_text())
            active = TransportParams.from_dict(d["active"])
            if d.get("previous"):  # restarted during a trial: not confirmed, so revert
                active = TransportParams.from_dict(d["previous"])
        except (FileNotFoundError, ValueError, KeyError, TypeError, ParamsError):
            active = TransportParams()
        return active, None, None

    def _save_params(self, active: TransportParams, previous: TransportParams | None) -> None:
        d = {"active": active.to_dict(), "previous": previous.to_dict() if previous else None}
        _atomic_write(self.state_dir / "params.json", json.dumps(d, indent=1).encode())

    def _commit(self, active: TransportParams, previous: TransportParams | None,
                deadline: float | None) -> None:
        """Persist the new state, then switch to it: a failed write changes nothing."""
        self._save_params(active, previous)
        self._switch(active, previous, deadline)

    def _switch(self, active: TransportParams, previous: TransportParams | None,
                deadline: float | None) -> None:
        changed = active != self.active
        if changed:  # the device's side of the calibration log
            self.log("parameters: " + ", ".join(
                f"{k} {a} -> {b}" for (k, a), b in zip(self.active.to_dict().items(),
                                                       active.to_dict().values(), strict=True)
                if a != b))
        self.active, self.previous, self.trial_deadline = active, previous, deadline
        if changed:  # a failing listener must not stop the others, nor the agent
            for fn in self.param_listeners:
                try:
                    fn(active)
                except Exception as e:
                    self.log(f"parameter listener failed: {type(e).__name__}: {e}")
            if self.stream is not None and self.stream.running:
                try:
                    self.stream.start(active)
                except Exception as e:
                    self.log(f"stream restart failed: {type(e).__name__}: {e}")

    def tick(self) -> None:
        """Housekeeping between reads: revert an unconfirmed trial when its time is up."""
        if self.trial_deadline is not None and time.monotonic() >= self.trial_deadline:
            self.log("apply not confirmed in time: reverting parameters")
            try:
                self._commit(self.previous, None, None)
            except OSError as e:  # revert anyway: the saved trial is reverted at restart too
                self.log(f"cannot save the reverted parameters: {e}")
                self._switch(self.previous, None, None)

    def staged_file(self, name: str) -> Path:
        """Path of a completed upload; RemoteFailure if there is none."""
        p = self.staging_dir / _safe_name(name)
        if not p.is_file():
            raise RemoteFailure("not_found", f"no uploaded file named {name!r}")
        return p

    # -- serving
    def stop(self) -> None:
        self._stop = True

    def serve_forever(self) -> None:
        """Serve until stop(); reopen the port after an unplug (or before it exists)."""
        announced = False
        while not self._stop:
            try:
                self.link = open_link(self.url, self.baud, timeout=0.05, pace=self.pace)
            except LinkError as e:
                if not announced:
                    self.log(f"waiting for {self.url}: {e}")
                    announced = True
                self.tick()
                time.sleep(0.2)
                continue
            self.log(f"listening on {self.url} at {self.baud} baud "
                     f"(device {self.device_id}, protocol {P.PROTOCOL_VERSION})")
            announced = False
            try:
                while not self._stop:
                    self.poll_once()
            except LinkError as e:
                self.log(f"link lost ({e}); reopening")
            finally:
                self.link.close()
            time.sleep(0.1)

    def poll_once(self) -> None:
        """Read what has arrived, answer it, and do housekeeping."""
        link = self.link
        bad = link.decoder.stats.bad
        data = link.read_some()
        frames = link.receive(data) if data else []
        if not data:
            link.ask_for_missing()
        # a NAK says "resend": not while pieces of a message are coming (NEED asks for them)
        if link.decoder.stats.bad > bad and not (link.pieces and link.incoming):
            self._send(P.encode_frame(P.Kind.NAK, 0))
        for fr in frames:
            if fr.kind == P.Kind.REQUEST:
                self._send(self.handle_frame(fr))
        self.tick()

    def _send(self, data: bytes) -> None:
        try:
            self.link.send_encoded(data)
        except LinkError as e:  # host gone mid-reply: keep serving, the cache answers a retry
            self.log(f"reply dropped: {e}")

    def handle_frame(self, fr: P.Frame) -> bytes:
        """Encoded response for one request frame (from the cache for a retried seq)."""
        cached = self.cache.get(fr.seq)
        if cached is not None:
            return cached
        try:
            msg = fr.message()
            method, args = msg.get("m"), msg.get("a", {})
            if not isinstance(method, str) or not isinstance(args, dict):
                raise RemoteFailure("bad_request", "a request needs m (str) and a (map)")
            h = self.lookup(method)
            if h is None:
                raise RemoteFailure("unknown_method", f"unknown message {method!r}")
            if h.slow:
                self._send(P.encode_frame(P.Kind.ACK, fr.seq))
            result = h.fn(self, args)
            try:
                out = P.response_ok(fr.seq, result)
            except P.ProtocolError as e:
                raise RemoteFailure("too_large", f"{method}: reply too large ({e})") from None
        except RemoteFailure as e:
            out = P.response_error(fr.seq, e.code, str(e))
        except P.ProtocolError as e:
            out = P.response_error(fr.seq, "bad_request", str(e))
        except Exception as e:  # a handler bug must never kill the agent
            self.log(f"handler error: {type(e).__name__}: {e}")
            out = P.response_error(fr.seq, "internal", f"{type(e).__name__}: {e}")
        self.requests += 1
        self.cache[fr.seq] = out
        while len(self.cache) > 64:
            self.cache.popitem(last=False)
        return out


# ---------------------------------------------------------------- argument helpers

def arg(args: dict, name: str, typ, default=...):
    """``args[name]`` checked against ``typ``; RemoteFailure("bad_args") otherwise."""
    if name not in args:
        if default is ...:
            raise RemoteFailure("bad_args", f"missing argument {name!r}")
        return default
    v = args[name]
    if typ is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v) if abs(v) < 2**1023 else math.copysign(math.inf, v)
    if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
        raise RemoteFailure("bad_args", f"argument {name!r} must be {typ.__name__}")
    return v


def _safe_name(name: str) -> str:
    if (not name or len(name) > 128 or name.startswith(".") or "/" in name or "\\" in name
            or "\x00" in name):
        raise RemoteFailure("bad_args", f"invalid file name {name!r}: a plain name like "
                            "bundle.tar is expected")
    return name


# ---------------------------------------------------------------- built-in messages

@handler("hello")
def _hello(agent: Agent, args: dict) -> dict:
    ver = arg(args, "version", int)
    if ver != P.PROTOCOL_VERSION:
        raise RemoteFailure("version", f"host speaks protocol {ver}, device speaks "
                            f"{P.PROTOCOL_VERSION}")
    cap = args.get("pieces")  # the host reads pieces: this reply already goes in pieces
    if agent.link is not None:
        agent.link.pieces = isinstance(cap, int) and not isinstance(cap, bool) and cap > 0
        agent.link.piece_cap = min(cap, P.MAX_BODY) if agent.link.pieces else 0
    return _info(agent)


def _models() -> dict:
    out = {}
    for meta in sorted((Path(__file__).parent / "models").glob("*.json")):
        with contextlib.suppress(ValueError, OSError):
            out[meta.stem] = str(json.loads(meta.read_text()).get("version", "?"))
    return out


def _info(agent: Agent) -> dict:
    info = {"protocol": P.PROTOCOL_VERSION, "device_id": agent.device_id,
            "profile": agent.profile, "runtime": __version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "models": _models(), "max_body": P.MAX_BODY, "chunk_size": P.CHUNK_SIZE,
            "pieces": 1,
            "uptime_s": round(time.monotonic() - agent.started, 3),
            "messages": sorted({*HANDLERS, *agent.handlers})}
    for key, fn in agent.info_providers.items():
        try:
            info[key] = fn()
        except Exception as e:  # an info provider must not break get_info
            info[key] = f"error: {e}"
    return info


@handler("get_info")
def _get_info(agent: Agent, args: dict) -> dict:
    return _info(agent)


@handler("echo")
def _echo(agent: Agent, args: dict) -> dict:
    """Returns ``args`` unchanged: link tests and throughput measurement."""
    return args


@handler("get_events")
def _get_events(agent: Agent, args: dict) -> dict:
    """The newest ``limit`` fault events (``edge-denoise live --fix-faults`` log), oldest
    first, fewer if they would not fit one frame."""
    limit = max(1, min(arg(args, "limit", int, 32), 256))
    recs = agent.events.records() if agent.events is not None else []
    while True:
        out = {"events": recs[-limit:], "total": len(recs), "source": agent.events is not None}
        if limit == 1 or len(cbor2.dumps(out)) <= P.MAX_BODY - 64:
            return out
        limit //= 2


@handler("get_telemetry")
def _get_telemetry(agent: Agent, args: dict) -> dict:
    """Records with ``t > since`` and within the last ``window`` seconds, oldest first, as
    columns (compact); at most ``limit`` rows; ``more`` says whether to ask again."""
    window = arg(args, "window", float, 60.0)
    since = arg(args, "since", float, 0.0)
    limit = max(1, min(arg(args, "limit", int, 64), 64))
    recs = agent.telemetry.records() if agent.telemetry is not None else []
    if recs:
        newest = recs[-1]["t"]
        recs = [r for r in recs if r["t"] > since and r["t"] >= newest - window]
    fields = list(recs[0]) if recs else []
    while True:  # fewer rows if wide records would not fit one frame
        rows = [[r.get(k) for k in fields] for r in recs[:limit]]
        out = {"fields": fields, "rows": rows, "more": len(recs) > limit,
               "params": agent.active.to_dict(), "source": agent.telemetry is not None}
        if limit == 1 or len(cbor2.dumps(out)) <= P.MAX_BODY - 64:
            return out
        limit //= 2


@handler("get_params")
def _get_params(agent: Agent, args: dict) -> dict:
    left = (None if agent.trial_deadline is None
            else round(max(0.0, agent.trial_deadline - time.monotonic()), 3))
    return {"active": agent.active.to_dict(),
            "pending": agent.pending.to_dict() if agent.pending else None,
            "trial": agent.trial_deadline is not None, "revert_in_s": left,
            "ranges": ranges()}


@handler("set_params")
def _set_params(agent: Agent, args: dict) -> dict:
    """Validate ``params`` (a partial map) over the active set and stage it for ``apply``."""
    params = arg(args, "params", dict)
    try:
        agent.pending = TransportParams.from_dict({**agent.active.to_dict(), **params})
    except ParamsError as e:
        raise RemoteFailure("out_of_range", str(e)) from None
    return {"pending": agent.pending.to_dict()}


@handler("apply")
def _apply(agent: Agent, args: dict) -> dict:
    """Activate the staged parameters on trial: reverted unless ``confirm`` comes within
    ``timeout_s`` seconds (0 = no trial, permanent at once). All or nothing: the new state is
    saved before it takes effect."""
    timeout_s = arg(args, "timeout_s", float, 30.0)
    if agent.pending is None:
        raise RemoteFailure("no_pending", "nothing staged: send set_params first")
    if not 0 <= timeout_s <= 3600:  # (NaN fails this too)
        raise RemoteFailure("out_of_range", "timeout_s must be in 0..3600")
    new = agent.pending
    deadline = time.monotonic() + timeout_s if timeout_s > 0 else None
    previous = None if deadline is None else (agent.previous if agent.trial_deadline
                                              is not None else agent.active)
    try:
        agent._commit(new, previous, deadline)
    except OSError as e:
        raise RemoteFailure("io", f"cannot save the parameters ({e.strerror or e}); nothing "
                            "changed") from None
    agent.pending = None
    return {"active": new.to_dict(), "revert_in_s": timeout_s if timeout_s > 0 else None}


@handler("confirm")
def _confirm(agent: Agent, args: dict) -> dict:
    if agent.trial_deadline is None:
        raise RemoteFailure("not_in_trial", "no applied parameters are waiting for "
                            "confirmation (already confirmed, or reverted)")
    try:
        agent._commit(agent.active, None, None)
    except OSError as e:
        raise RemoteFailure("io", f"cannot save the parameters ({e.strerror or e}); still on "
                            "trial") from None
    return {"active": agent.active.to_dict()}


@handler("revert")
def _revert(agent: Agent, args: dict) -> dict:
    if agent.trial_deadline is None:
        raise RemoteFailure("not_in_trial", "nothing to revert")
    agent.trial_deadline = time.monotonic()
    agent.tick()
    return {"active": agent.active.to_dict()}


@handler("start_stream")
def _start_stream(agent: Agent, args: dict) -> dict:
    if agent.stream is None:
        raise RemoteFailure("unsupported", "no stream configured on this device "
                            "(serve --stream-cmd)")
    agent.stream.start(agent.active)
    return {"running": agent.stream.running}


@handler("stream_status")
def _stream_status(agent: Agent, args: dict) -> dict:
    """Whether a stream is configured and running (so the host can refuse to measure an
    idle link)."""
    return {"configured": agent.stream is not None,
            "running": bool(agent.stream is not None and agent.stream.running),
            "params": agent.active.to_dict()}


@handler("stop_stream")
def _stop_stream(agent: Agent, args: dict) -> dict:
    if agent.stream is None:
        raise RemoteFailure("unsupported", "no stream configured on this device")
    agent.stream.stop()
    return {"running": False}


# -- chunked, resumable file transfer into state_dir/staging

def _part(agent: Agent, name: str) -> tuple[Path, Path]:
    n = _safe_name(name)
    return agent.staging_dir / f".{n}.part", agent.staging_dir / f".{n}.meta"


@handler("put_begin")
def _put_begin(agent: Agent, args: dict) -> dict:
    """Start or resume an upload of ``size`` bytes with ``sha256``; returns ``have``: the
    bytes already received (same name, size and hash), from which the host continues."""
    name = arg(args, "name", str)
    size = arg(args, "size", int)
    sha = arg(args, "sha256", str).lower()
    part, meta = _part(agent, name)
    if not 0 <= size <= 2**31:
        raise RemoteFailure("out_of_range", "size must be in 0..2 GiB")
    want = {"size": size, "sha256": sha}
    have = 0
    with contextlib.suppress(FileNotFoundError, ValueError):
        if json.loads(meta.read_text()) == want and part.exists():
            have = min(part.stat().st_size, size)
    if have == 0:
        _atomic_write(meta, json.dumps(want).encode())
        part.write_bytes(b"")
    else:
        with part.open("r+b") as f:
            f.truncate(have)
    return {"have": have, "chunk_size": P.CHUNK_SIZE}


@handler("put_chunk")
def _put_chunk(agent: Agent, args: dict) -> dict:
    """Append ``data`` at ``offset`` (== bytes held) after checking its ``crc32``."""
    name = arg(args, "name", str)
    offset = arg(args, "offset", int)
    data = arg(args, "data", bytes)
    crc = arg(args, "crc32", int)
    part, meta = _part(agent, name)
    if not meta.exists() or not part.exists():
        raise RemoteFailure("no_transfer", f"no upload of {name!r} in progress: put_begin")
    if zlib.crc32(data) != crc:
        raise RemoteFailure("crc", f"chunk at {offset} fails its CRC32")
    size = json.loads(meta.read_text())["size"]
    have = part.stat().st_size
    if offset + len(data) <= have:
        return {"have": have}  # already written (a resend after a lost reply)
    if offset != have:
        raise RemoteFailure("offset", f"chunk at {offset}, device holds {have} bytes")
    if have + len(data) > size:
        raise RemoteFailure("out_of_range", f"chunk runs past the announced size {size}")
    with part.open("ab") as f:
        f.write(data)
    return {"have": have + len(data)}


@handler("put_end", slow=True)
def _put_end(agent: Agent, args: dict) -> dict:
    """Check size and sha256, fsync, and move the file to ``staging/<name>`` atomically."""
    name = arg(args, "name", str)
    part, meta = _part(agent, name)
    final = agent.staging_dir / _safe_name(name)
    if not meta.exists() or not part.exists():
        if final.exists():  # resend of a put_end whose reply was lost after the cache rolled
            return {"name": name, "size": final.stat().st_size,
                    "sha256": hashlib.sha256(final.read_bytes()).hexdigest()}
        raise RemoteFailure("no_transfer", f"no upload of {name!r} in progress")
    want = json.loads(meta.read_text())
    h = hashlib.sha256()
    with part.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
        os.fsync(f.fileno())
    have = part.stat().st_size
    if have != want["size"]:
        raise RemoteFailure("incomplete", f"have {have} of {want['size']} bytes")
    if h.hexdigest() != want["sha256"]:
        part.unlink()
        meta.unlink()
        raise RemoteFailure("sha256", "whole-file sha256 mismatch; upload discarded")
    os.replace(part, final)
    meta.unlink()
    return {"name": name, "size": have, "sha256": want["sha256"]}


@handler("put_status")
def _put_status(agent: Agent, args: dict) -> dict:
    name = arg(args, "name", str)
    part, _ = _part(agent, name)
    final = agent.staging_dir / _safe_name(name)
    return {"have": part.stat().st_size if part.exists() else 0, "done": final.exists()}
