"""Where the dashboard's numbers come from.

``SystemSource``: the devices of a running ``host-calibrate system`` (its manifest), each
read once a second over its own serial link, as a host reads real devices: ``get_status``
(PTP port and offset, live loop: denoiser on/off, CPU per hop, transport in force),
``get_telemetry`` (the receiver's link measurements), ``get_params`` (the active parameters
and trial), ``get_events`` (fault events) and ``flash.status`` (installed bundle, trial).
One thread and one connection per device; actions (apply, push) run on the same connection
under its lock, so they never fight the poller for the serial line.

``FakeSource``: the same snapshot shape from a seeded simulation, for tests of the page
without a system, and ``FakeSource.impair`` to move its link.
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

from edge.errors import HushlinkError

EVENTS_KEPT = 50


def device_view(index: int, status: dict | None, tel: list[dict], params: dict | None,
                flash: dict | None, events: list[dict], extra: dict | None = None) -> dict:
    """One device's snapshot from its replies (pure: also what FakeSource fills in)."""
    clock = ((status or {}).get("clock") or [{}])[0]
    live = (status or {}).get("live") or {}
    last = tel[-1] if tel else {}
    util = last.get("bandwidth_util") or 0.0
    link = {k: last.get(k) for k in ("t", "latency_ms", "loss_pct", "jitter_ms", "bitrate_kbps",
                                     "bandwidth_util", "buffer_ms", "delay_ms", "concealed",
                                     "late", "capacity_kbps")}
    if link["capacity_kbps"] is None and extra and extra.get("rate_kbit"):
        link["capacity_kbps"] = extra["rate_kbit"]  # the emulated cap the host set
    link["allocated_kbps"] = (round(last["bitrate_kbps"] / util, 1)
                              if util > 0 and last.get("bitrate_kbps") else None)
    cpu = live.get("hop_cpu_ms") or {}
    return {
        "index": index,
        "ptp": {"port_state": clock.get("port_state"), "offset_ns": clock.get("offset_ns"),
                "path_delay_ns": clock.get("path_delay_ns"), "lock": clock.get("lock")},
        "link": link,
        "params": {"active": (params or {}).get("active") or {},
                   "trial": (params or {}).get("trial"),
                   "revert_in_s": (params or {}).get("revert_in_s")},
        "live": {"running": live.get("running"), "denoiser": (None if live.get("bypass") is None
                                                              else not live["bypass"]),
                 "cpu_p50_ms": cpu.get("p50"), "cpu_p99_ms": cpu.get("p99"),
                 "budget_ms": live.get("budget_ms"), "transport": live.get("transport") or {}},
        "bundle": {"state": (flash or {}).get("state"), "version": (flash or {}).get("version"),
                   "active": (flash or {}).get("active"),
                   "revert_in_s": (flash or {}).get("revert_in_s")},
        "events": events[-EVENTS_KEPT:],
        **(extra or {}),
    }


class DevicePoller:
    """One device's serial connection, polled every ``period_s`` by its own thread."""

    def __init__(self, index: int, port: str, extra: Callable[[], dict] = dict,
                 period_s: float = 1.0):
        self.index, self.port, self.period_s, self.extra = index, port, period_s, extra
        self.lock = threading.Lock()
        self.dev = None
        self.view = device_view(index, None, [], None, None, [], {"error": "connecting"})
        self._events: list[dict] = []
        self._seen: set[tuple] = set()
        self._since = 0.0
        self._tel: list[dict] = []
        self._flash: dict | None = None
        self._flash_t = 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, name=f"dashboard-d{index}", daemon=True)
        self._t.start()

    def _connect(self):
        from host.link import connect

        if self.dev is None:
            self.dev = connect(self.port, timeout=1.0, retries=3)
        return self.dev

    def _drop(self) -> None:
        if self.dev is not None:
            with contextlib.suppress(Exception):
                self.dev.close()
        self.dev = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                with self.lock:
                    self.view = self._poll()
            except (HushlinkError, OSError) as e:
                with self.lock:
                    self._drop()
                self.view = {**self.view, "error": str(e)}
            self._stop.wait(max(0.1, self.period_s - (time.monotonic() - t0)))

    def _poll(self) -> dict:
        dev = self._connect()
        status = dev.call("get_status")
        r = dev.call("get_telemetry", {"window": 5.0, "since": self._since})
        rows = [dict(zip(r["fields"], row, strict=True)) for row in r["rows"]]
        if rows:
            self._since = rows[-1]["t"]
            self._tel = (self._tel + rows)[-10:]
        params = dev.get_params()
        for ev in dev.events(16):
            key = (ev.get("kind"), ev.get("start_s"), ev.get("source"))
            if key not in self._seen:
                self._seen.add(key)
                self._events.append({**ev, "seen_at": time.time()})
        self._events = self._events[-EVENTS_KEPT:]
        if time.monotonic() - self._flash_t > 3.0:
            self._flash = dev.call("flash.status")
            self._flash_t = time.monotonic()
        return device_view(self.index, status, self._tel, params, self._flash, self._events,
                           {**self.extra(), "error": None})

    def act(self, fn: Callable, *args, **kw):
        """Run ``fn(dev, ...)`` on this device's connection (blocking; call off the loop)."""
        with self.lock:
            try:
                out = fn(self._connect(), *args, **kw)
            except (HushlinkError, OSError):
                self._drop()
                raise
            self._flash_t = 0.0  # show a new bundle at the next poll
            return out

    def close(self) -> None:
        self._stop.set()
        self._t.join(5)
        with self.lock:
            self._drop()


def apply_params(dev, params: dict, trial_s: float, confirm: bool) -> dict:
    """Stage, apply (on trial: the device reverts unless confirmed) and optionally confirm."""
    dev.set_params(params)
    out = dev.apply(timeout_s=trial_s)
    if confirm:
        out = dev.confirm()
    return out


def push_bundle(dev, bundle: Path, trial_s: float | None, confirm: bool) -> dict:
    from host.flash import push_over

    return push_over(dev, bundle, confirm=confirm, trial_timeout_s=trial_s)


class SystemSource:
    """The devices of a running system (``host-calibrate system up``'s manifest)."""

    def __init__(self, root: str | Path, period_s: float = 1.0):
        from host.system.stack import health, load

        self.root = Path(root)
        self.manifest = load(self.root)
        self._health, self._health_t, self._h = health, 0.0, {}
        self.pollers = {d["index"]: DevicePoller(d["index"], d["tty_host"],
                                                 self._extra_for(d), period_s)
                        for d in self.manifest.devices}

    def _extra_for(self, d: dict) -> Callable[[], dict]:
        return lambda: {"name": f"device {d['index']} ({d['ns']}, {d['ip']})",
                        "rate_kbit": self._impairment().get(str(d["index"]), {}).get(
                            "rate_kbit")}

    def _impairment(self) -> dict:
        import json

        with contextlib.suppress(OSError, ValueError):
            return json.loads((self.root / "impairment.json").read_text())
        return {}

    def processes(self) -> list[dict]:
        if time.monotonic() - self._health_t > 2.0:
            self._h = self._health(self.manifest)
            self._health_t = time.monotonic()
        return self._h.get("processes", [])

    def snapshot(self) -> dict:
        return {"t": time.time(), "devices": [p.view for p in self.pollers.values()],
                "processes": self.processes(), "bundles": self.bundles()}

    def bundles(self) -> list[str]:
        return sorted(p.name for p in (self.root / "host" / "bundles").glob("*.hlb"))

    def apply(self, index: int, params: dict, trial_s: float, confirm: bool) -> dict:
        return self._poller(index).act(apply_params, params, trial_s, confirm)

    def push(self, index: int, bundle: str, trial_s: float | None, confirm: bool) -> dict:
        path = self.root / "host" / "bundles" / Path(bundle).name
        if not path.is_file():
            raise HushlinkError(f"no bundle {bundle!r} (have: {', '.join(self.bundles())})")
        return self._poller(index).act(push_bundle, path, trial_s, confirm)

    def _poller(self, index: int) -> DevicePoller:
        if index not in self.pollers:
            raise HushlinkError(f"no device {index}")
        return self.pollers[index]

    def close(self) -> None:
        for p in self.pollers.values():
            p.close()


class FakeSource:
    """``n`` simulated devices with the SystemSource's interface (tests, docs)."""

    def __init__(self, n: int = 2, seed: int = 0):
        self.rng = random.Random(seed)
        self.t0 = time.time()
        self.loss = dict.fromkeys(range(1, n + 1), 0.0)
        self.params = {i: {"bitrate_kbps": 64, "protocol": "udp", "buffer_ms": 200,
                           "share": 1.0, "fec": True, "loss_hint_pct": 5}
                       for i in range(1, n + 1)}
        self.bundle = dict.fromkeys(range(1, n + 1))
        self.events: dict[int, list] = {i: [] for i in range(1, n + 1)}

    def impair(self, index: int, loss_pct: float) -> None:
        """Move device ``index``'s loss; a fault event marks the change."""
        self.loss[index] = loss_pct
        now = time.time()
        self.events[index].append({"kind": "dropout", "start_s": round(now - self.t0, 1),
                                   "end_s": round(now - self.t0 + 0.2, 1), "confidence": 0.8,
                                   "source": "capture", "seen_at": now})

    def snapshot(self) -> dict:
        now = time.time()
        devs = []
        for i, loss in self.loss.items():
            r = self.rng
            p = self.params[i]
            if r.random() < 0.05:
                self.events[i].append({"kind": r.choice(["hum", "clipping", "dropout"]),
                                       "start_s": round(now - self.t0, 1), "confidence": 0.9,
                                       "source": "capture", "seen_at": now})
            tel = [{"t": now, "latency_ms": 2 + r.random() + loss / 5,
                    "loss_pct": max(0.0, loss + r.gauss(0, 0.5)),
                    "jitter_ms": 1 + r.random() + loss / 10,
                    "bitrate_kbps": p["bitrate_kbps"] * (0.9 + 0.1 * r.random()),
                    "bandwidth_util": 0.9, "buffer_ms": p["buffer_ms"], "delay_ms": 120.0,
                    "concealed": int(loss)}]
            b = self.bundle[i]
            devs.append(device_view(
                i, {"clock": [{"port_state": "UNCALIBRATED", "lock": "unlocked",
                               "offset_ns": 500 * math.sin(now / 3 + i) + r.gauss(0, 100),
                               "path_delay_ns": 1900.0}],
                    "live": {"running": True, "bypass": False, "budget_ms": 5.0,
                             "hop_cpu_ms": {"p50": 0.3, "p99": 0.6}, "transport": p}},
                tel, {"active": p, "trial": False, "revert_in_s": None},
                {"state": "confirmed" if b else "empty", "version": b, "active": "A" if b
                 else None}, self.events[i], {"name": f"device {i} (simulated)",
                                             "error": None}))
        return {"t": now, "devices": devs, "processes": [], "bundles": ["shipped.hlb"]}

    def apply(self, index: int, params: dict, trial_s: float, confirm: bool) -> dict:
        from edge.params import TransportParams

        p = TransportParams.from_dict({**self.params[index], **params}).to_dict()
        self.params[index] = p
        return {"active": p}

    def push(self, index: int, bundle: str, trial_s: float | None, confirm: bool) -> dict:
        self.bundle[index] = "2.0.0+sim.1"
        return {"version": self.bundle[index]}

    def close(self) -> None:
        pass
