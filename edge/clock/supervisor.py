"""Run ptp4l (and phc2sys with hardware timestamping) as children: restart them with backoff
when they die, poll them with pmc once a second, stop them cleanly. Only our own children are
ever signalled, by PID.

The run directory holds ``state.json`` (pids, restarts) and ``status.json`` (the monitor's
ClockStatus, rewritten each second, atomically) so that ``clock status`` in another process
reads the same numbers without a second pmc poller.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edge.clock.config import (
    ClockConfig,
    ClockError,
    phc2sys_argv,
    ptp4l_argv,
    require_linuxptp,
    write_config,
)
from edge.clock.monitor import Monitor, query_pmc

LOG_MAX_BYTES = 1 << 20  # ptp4l -m prints a line per Sync: truncate the log beyond this


def write_json(path: Path, data: dict) -> None:
    """Atomic JSON write (temp file + os.replace): readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


@dataclass
class Backoff:
    """Restart delay: base·2^k seconds, capped; k resets once a child ran ``stable_s``."""

    base_s: float = 0.5
    max_s: float = 30.0
    stable_s: float = 30.0
    failures: int = 0

    def next_delay(self, ran_s: float) -> float:
        if ran_s >= self.stable_s:
            self.failures = 0
        delay = min(self.base_s * 2 ** self.failures, self.max_s)
        self.failures += 1
        return delay


@dataclass
class Child:
    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen | None = None
    started_s: float = 0.0
    restarts: int = 0
    restart_at: float | None = None
    backoff: Backoff = field(default_factory=Backoff)
    last_exit: int | None = None


class Supervisor:
    """Supervise one ptp4l instance (plus phc2sys when the config asks for it).

    ``prefix`` is prepended to every child's argv (e.g. ``["ip", "netns", "exec", "ns1"]``:
    ip execs the program, so the PID we hold is ptp4l's own). ``monitor`` thresholds come from
    the profile; pass ``poll_s=None`` to run without pmc polling.
    """

    def __init__(self, cfg: ClockConfig, monitor: Monitor, *, prefix: Sequence[str] = (),
                 poll_s: float | None = 1.0, backoff: Backoff | None = None):
        self.cfg = cfg
        self.monitor = monitor
        self.prefix = list(prefix)
        self.poll_s = poll_s
        tools = require_linuxptp("ptp4l", "pmc", *(("phc2sys",) if cfg.use_phc2sys else ()))
        self.children = [Child("ptp4l", ptp4l_argv(cfg, tools["ptp4l"]),
                               cfg.run_dir / "ptp4l.log")]
        if cfg.use_phc2sys:
            self.children.append(Child("phc2sys", phc2sys_argv(cfg, tools["phc2sys"]),
                                       cfg.run_dir / "phc2sys.log"))
        for c in self.children:
            if backoff is not None:
                c.backoff = Backoff(backoff.base_s, backoff.max_s, backoff.stable_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # lifecycle -----------------------------------------------------------------------
    def start(self) -> Supervisor:
        write_config(self.cfg)
        for c in self.children:
            self._spawn(c)
        time.sleep(0.3)
        dead = [c for c in self.children if c.proc and c.proc.poll() is not None]
        if dead:
            tail = _tail(dead[0].log)
            self.stop()
            raise ClockError(f"{dead[0].name} exited at start (code {dead[0].last_exit}): "
                             f"{tail or 'no output'}")
        self._write_state()
        self._thread = threading.Thread(target=self._loop, name="ptp-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s + 2)
        with self._lock:
            for c in self.children:
                _terminate(c.proc, timeout_s)
                c.proc = None
        for p in (self.cfg.uds, self.cfg.run_dir / "state.json"):
            p.unlink(missing_ok=True)
        self._write_status()

    def __enter__(self) -> Supervisor:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait(self) -> None:
        """Block until stop() (e.g. from a signal handler)."""
        while not self._stop.wait(0.5):
            pass

    # queries -------------------------------------------------------------------------
    def pid(self, name: str = "ptp4l") -> int | None:
        c = self._child(name)
        return c.proc.pid if c.proc and c.proc.poll() is None else None

    def restarts(self, name: str = "ptp4l") -> int:
        return self._child(name).restarts

    def _child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    # the loop ------------------------------------------------------------------------
    def _spawn(self, c: Child) -> None:
        c.log.parent.mkdir(parents=True, exist_ok=True)
        with open(c.log, "ab") as log:
            c.proc = subprocess.Popen([*self.prefix, *c.argv], stdout=log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        c.started_s = time.monotonic()
        c.restart_at = None

    def _loop(self) -> None:
        next_poll = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                if self._stop.is_set():
                    break
                self._tend(now)
            if self.poll_s is not None and now >= next_poll:
                next_poll = now + self.poll_s
                if self.pid("ptp4l") is not None:
                    self.monitor.add(query_pmc(self.cfg.uds, self.cfg.domain,
                                               log_path=self._child("ptp4l").log))
                self._write_status()
            self._stop.wait(0.1)

    def _tend(self, now: float) -> None:
        changed = False
        for c in self.children:
            if c.proc is not None and c.proc.poll() is not None:
                c.last_exit = c.proc.returncode
                c.proc = None
                delay = c.backoff.next_delay(now - c.started_s)
                c.restart_at = now + delay
                with open(c.log, "ab") as log:
                    log.write(f"hushlink: {c.name} exited with {c.last_exit}; restart in "
                              f"{delay:.1f} s\n".encode())
                logging.getLogger(__name__).warning("%s exited with %s; restart in %.1f s",
                                                    c.name, c.last_exit, delay)
                changed = True
            if c.proc is None and c.restart_at is not None and now >= c.restart_at:
                self._spawn(c)
                c.restarts += 1
                changed = True
            try:
                if c.log.stat().st_size > LOG_MAX_BYTES:
                    os.truncate(c.log, 0)  # children write with O_APPEND: safe to truncate
            except OSError:
                pass
        if changed:
            self._write_state()

    def _write_state(self) -> None:
        state = {"supervisor_pid": os.getpid(), "role": self.cfg.role, "iface": self.cfg.iface,
                 "timestamping": self.cfg.timestamping, "free_running": self.cfg.free_running,
                 "uds": str(self.cfg.uds), "domain": self.cfg.domain,
                 "children": {c.name: {"pid": c.proc.pid if c.proc else None,
                                       "restarts": c.restarts, "last_exit": c.last_exit}
                              for c in self.children}}
        write_json(self.cfg.run_dir / "state.json", state)

    def _write_status(self) -> None:
        st = self.monitor.status(time.monotonic()).to_dict()
        st["written_at"] = time.time()
        st["timestamping"] = self.cfg.timestamping
        st["free_running"] = self.cfg.free_running
        st["restarts"] = {c.name: c.restarts for c in self.children}
        st["running"] = not self._stop.is_set()
        write_json(self.cfg.run_dir / "status.json", st)


def _terminate(proc: subprocess.Popen | None, timeout_s: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _tail(path: Path, n: int = 300) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    return " | ".join(text[-n:].splitlines()[-3:])
