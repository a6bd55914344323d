"""``edge-denoise clock start|status|stop``. Heavy imports stay inside the commands so that
``edge-denoise --help`` stays fast."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from edge.cliutil import CONTEXT, Group, err_console

STALE_S = 5.0  # status.json older than this: the supervisor is not polling any more


@click.group("clock", cls=Group, context_settings=CONTEXT)
def clock_group() -> None:
    """Start, stop and watch the PTP clock (linuxptp) of this device."""


@clock_group.command("start")
@click.option("--role", type=click.Choice(["master", "slave"]), required=True,
              help="master: grandmaster priority from the profile; slave: slaveOnly.")
@click.option("--iface", help="Network interface (default: the profile's ptp.iface).")
@click.option("--profile", default="generic-linux", show_default=True,
              help="Hardware profile name or .toml path ([ptp] settings).")
@click.option("--timestamping", type=click.Choice(["auto", "hardware", "software"]),
              default="auto", show_default=True, help="auto: probe the NIC with ethtool -T.")
@click.option("--free-running", is_flag=True,
              help="Measure only, never steer a clock (free_running 1): for namespaces "
                   "sharing one system clock, and for monitoring.")
@click.option("--fast-announce", is_flag=True,
              help="Announce every 1 s, timeout 2: a master is elected in ~2 s (labs, tests).")
@click.option("--daemon", is_flag=True, help="Detach and return once ptp4l runs.")
def start_cmd(role, iface, profile, timestamping, free_running, fast_announce, daemon) -> None:
    """Run ptp4l (and phc2sys with hardware timestamping) under supervision (foreground)."""
    from edge.clock.config import (
        ClockError,
        make_config,
        require_iface,
        require_linuxptp,
        require_root,
        with_fast_announce,
    )
    from edge.profile import DeviceProfile

    settings = DeviceProfile.by_name(profile).ptp
    require_linuxptp("ptp4l", "pmc")
    iface = iface or settings.iface
    require_iface(iface)
    require_root("clock start")
    cfg = make_config(settings, role, iface,
                      timestamping=None if timestamping == "auto" else timestamping,
                      free_running=free_running)
    if fast_announce:
        cfg = with_fast_announce(cfg)
    pid = _supervisor_pid(cfg.run_dir)
    if pid is not None:
        raise ClockError(f"a clock is already running on {iface} (supervisor pid {pid}); "
                         f"`edge-denoise clock stop --iface {iface}` first")
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    if daemon:
        args = ["clock", "start", "--role", role, "--iface", iface, "--profile", profile,
                "--timestamping", timestamping]
        args += ["--free-running"] * free_running + ["--fast-announce"] * fast_announce
        _start_daemon(cfg.run_dir, args, iface)
        return
    _run_foreground(cfg, settings)


def _run_foreground(cfg, settings) -> None:
    from edge.clock.monitor import Monitor
    from edge.clock.supervisor import Supervisor

    pid_file = cfg.run_dir / "supervisor.pid"
    monitor = Monitor(cfg.iface, cfg.role, lock_threshold_ns=settings.lock_threshold_ns,
                      holdover_s=settings.holdover_s, window_s=settings.window_s)
    sup = Supervisor(cfg, monitor)
    pid_file.write_text(f"{os.getpid()}\n")
    stopping = []

    def on_signal(*_):
        stopping.append(True)
        sup._stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    import logging

    from edge.logs import configured

    log = logging.getLogger("edge.clock")
    try:
        sup.start()
        msg = (f"ptp4l {cfg.role} on {cfg.iface} ({cfg.timestamping} timestamping"
               f"{', free running' if cfg.free_running else ''}), pid {sup.pid()}, "
               f"run dir {cfg.run_dir}")
        if configured():
            log.info(msg)
        else:
            err_console.print(f"clock: {msg}")
        last_print = 0.0
        while not sup._stop.wait(1.0):
            if time.monotonic() - last_print >= 10:
                last_print = time.monotonic()
                line = _line(monitor.status().to_dict())
                if configured():
                    log.info(line)
                else:
                    click.echo(line, err=True)
    finally:
        sup.stop()
        pid_file.unlink(missing_ok=True)


def _start_daemon(run_dir: Path, args: list[str], iface: str) -> None:
    from edge.clock.config import ClockError

    log = run_dir / "supervisor.log"
    with open(log, "ab") as f:
        proc = subprocess.Popen([sys.executable, "-m", "edge", *args], stdout=f,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd="/")
    deadline = time.monotonic() + 15
    state = run_dir / "state.json"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise ClockError(f"clock start failed: {tail[0]}")
        try:
            if json.loads(state.read_text()).get("supervisor_pid") == proc.pid:
                click.echo(f"clock started on {iface}: supervisor pid {proc.pid}, "
                           f"run dir {run_dir}")
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise ClockError(f"clock start: ptp4l did not come up in 15 s (see {log})")


@clock_group.command("status")
@click.option("--iface", help="Only this interface (default: every running instance).")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--watch", is_flag=True, help="Refresh every second until Ctrl-C.")
def status_cmd(iface, as_json, watch) -> None:
    """Offset (ns), path delay (ns), port state, drift (ppm) and lock of each instance.

    The lock is what ptp4l's port state and the offsets support: with free_running or while
    the servo converges a slave port is UNCALIBRATED, and that is reported, not a lock.
    """
    while True:
        rows = read_status(iface)
        if as_json:
            click.echo(json.dumps(rows if iface is None else rows[0]))
        else:
            click.echo(f"{'iface':12s} {'role':6s} {'port':13s} {'lock':9s} {'offset ns':>10s} "
                       f"{'delay ns':>9s} {'rms ns':>8s} {'drift ppm':>9s}  reason")
            for r in rows:
                click.echo(_line(r))
        if not watch:
            return
        time.sleep(1.0)


def read_status(iface: str | None) -> list[dict]:
    """Status dicts of one instance or of all; an instance whose supervisor is gone or
    stale is reported unlocked with the reason, never with its last good numbers as live."""
    from edge.clock.config import ClockError, run_base, run_dir_for

    dirs = [run_dir_for(iface)] if iface else sorted(run_base().glob("ptp-*"))
    rows = []
    for d in dirs:
        path = d / "status.json"
        try:
            st = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        pid = _supervisor_pid(d)
        age = time.time() - st.get("written_at", 0)
        if pid is None or age > STALE_S:
            st.update(lock="unlocked", port_state=None, offset_ns=None, path_delay_ns=None,
                      reason="not running" if pid is None else
                      f"supervisor pid {pid} has not reported for {age:.0f} s")
        rows.append(st)
    if not rows:
        where = f"on {iface}" if iface else f"under {run_base()}"
        raise ClockError(f"no clock instance {where}: start one with `edge-denoise clock "
                         "start`")
    return rows


def lock_problem() -> str | None:
    """Why PTP time cannot be followed now (no clock instance, none locked), or None when
    one instance is locked, in holdover, or the master (whose clock is the reference)."""
    from edge.clock.config import ClockError

    try:
        rows = read_status(None)
    except ClockError as e:
        return str(e)
    if any(r.get("lock") in ("locked", "holdover", "master") for r in rows):
        return None
    return "no PTP clock is locked (" + "; ".join(
        f"{r.get('iface', '?')}: {r.get('lock')}, {r.get('reason') or 'no reason given'}"
        for r in rows) + ")"


@clock_group.command("stop")
@click.option("--iface", help="Only this interface (default: every running instance).")
def stop_cmd(iface) -> None:
    """Stop the supervisor of one instance (or of all) and its ptp4l/phc2sys."""
    from edge.clock.config import ClockError, run_base, run_dir_for

    dirs = [run_dir_for(iface)] if iface else sorted(run_base().glob("ptp-*"))
    stopped = 0
    for d in dirs:
        pid = _supervisor_pid(d)
        if pid is None:
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            raise ClockError(f"supervisor pid {pid} did not stop in 10 s")
        stopped += 1
        click.echo(f"stopped clock on {d.name.removeprefix('ptp-')} (supervisor pid {pid})")
    if not stopped:
        raise ClockError(f"no running clock {'on ' + iface if iface else 'instance'}")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] not in ("Z", "X")
    except OSError:
        return False


def _supervisor_pid(run_dir: Path) -> int | None:
    """The pid in supervisor.pid if that process is alive and is our ``clock start``."""
    try:
        pid = int((run_dir / "supervisor.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if b"clock" in cmdline and b"start" in cmdline and _alive(pid) else None


def _fmt(v, spec: str) -> str:
    return format("-", f">{spec.split('.')[0]}") if v is None else format(v, spec)


def _line(r: dict) -> str:
    return (f"{r.get('iface', '?'):12s} {r.get('role', '?'):6s} "
            f"{r.get('port_state') or '-':13s} {r.get('lock', '?'):9s} "
            f"{_fmt(r.get('offset_ns'), '10.0f')} {_fmt(r.get('path_delay_ns'), '9.0f')} "
            f"{_fmt(r.get('offset_rms_ns'), '8.0f')} {_fmt(r.get('drift_ppm'), '9.3f')}  "
            f"{r.get('reason', '')}")
