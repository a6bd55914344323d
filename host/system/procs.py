"""Processes of a running system and the manifest that records them.

Every process starts in its own session (so ``down`` can signal its whole group: a wrapper,
``ip netns exec`` and the program) under a small ``sh`` wrapper that writes the program's
exit status to ``NAME.rc``: a process that died on its own is reported with its status and
the tail of its log, never mistaken for one that is still running or was stopped.
The manifest (``system.json``) is rewritten atomically after every change, so a bring-up
that fails half-way leaves a manifest that ``down`` can clean up from.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST = "system.json"
WRAP = 'cd "$HL_CWD" && "$@"; echo $? > "$HL_RC"'


@dataclass
class Proc:
    name: str  # unique in the system: "host.gm", "d1.live", ...
    argv: list[str]
    pid: int
    start_ticks: int  # /proc/PID/stat field 22: tells a reused pid from ours
    log: str
    rc_file: str
    netns: str | None = None


@dataclass
class Manifest:
    root: str  # the state directory: everything the system wrote is under it
    prefix: str
    devices: list[dict] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)
    dashboard: str | None = None
    started: float = field(default_factory=time.time)

    @property
    def path(self) -> Path:
        return Path(self.root) / MANIFEST

    def save(self) -> None:
        tmp = self.path.with_name(f".{MANIFEST}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, root: str | os.PathLike) -> Manifest | None:
        try:
            d = json.loads((Path(root) / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        d["procs"] = [Proc(**p) for p in d.get("procs", [])]
        return cls(**d)

    def proc(self, name: str) -> Proc | None:
        return next((p for p in self.procs if p.name == name), None)


def start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(") ", 1)[-1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def alive(p: Proc) -> bool:
    return start_ticks(p.pid) == p.start_ticks


def start(m: Manifest, name: str, argv: list[str], *, netns: str | None = None,
          env: dict | None = None, cwd: str | os.PathLike | None = None) -> Proc:
    """Start ``argv`` (in ``netns`` when given), logging to ROOT/logs/NAME.log; recorded in
    the manifest before this returns."""
    logs = Path(m.root) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log, rc = logs / f"{name}.log", logs / f"{name}.rc"
    rc.unlink(missing_ok=True)
    full = (["ip", "netns", "exec", netns] if netns else []) + list(argv)
    penv = {**os.environ, **(env or {}), "HL_RC": str(rc),
            "HL_CWD": str(cwd or os.getcwd())}
    with open(log, "ab") as f:
        popen = subprocess.Popen(["sh", "-c", WRAP, "sh", *full], stdout=f,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=penv,
                                 start_new_session=True)
    ticks = start_ticks(popen.pid)
    p = Proc(name=name, argv=full, pid=popen.pid, start_ticks=ticks or -1, log=str(log),
             rc_file=str(rc), netns=netns)
    m.procs.append(p)
    m.save()
    return p


def state(p: Proc) -> dict:
    """``running``, or ``exited`` with its status and the last lines of its log."""
    if alive(p):
        return {"name": p.name, "state": "running", "pid": p.pid}
    try:
        rc = Path(p.rc_file).read_text().strip()
    except OSError:
        rc = "unknown (killed)"
    return {"name": p.name, "state": "exited", "pid": p.pid, "rc": rc,
            "log_tail": tail(p.log, 3)}


def tail(path: str, n: int) -> list[str]:
    try:
        lines = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return []
    return [ln[-200:] for ln in lines[-n:]]


def stop(p: Proc, timeout_s: float = 10.0) -> None:
    """SIGTERM to the process group, SIGKILL after ``timeout_s``; waits until it is gone."""
    if not alive(p):
        return
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not group_alive(p.pid):
                _reap(p.pid)
                return
            time.sleep(0.05)


def group_alive(pgid: int) -> bool:
    """Any live (non-zombie) process left in group ``pgid``."""
    return bool(group_members(pgid))


def group_members(pgid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(") ", 1)[-1].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            out.append(int(d.name))
    return out


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # our own child (tests): leave no zombie
        os.waitpid(pid, os.WNOHANG)


def mentioning(text: str) -> list[int]:
    """Live processes whose command line mentions ``text`` (the state directory): whatever
    ``down`` might have missed, e.g. a child that left its group."""
    needle, me = text.encode(), os.getpid()
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == me:
            continue
        try:
            if needle in (d / "cmdline").read_bytes() and start_ticks(int(d.name)) is not None:
                out.append(int(d.name))
        except OSError:
            continue
    return out
