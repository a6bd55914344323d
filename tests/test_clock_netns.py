"""Real ptp4l master and slave in two network namespaces joined by a veth pair, run by our
supervisor and read by our monitor (software timestamping).

Both namespaces share one CLOCK_REALTIME, so the slave runs with ``free_running 1``: it
measures the offset but never steers the clock; a steering slave would move the very clock
the master reads. Hence the slave's port stays UNCALIBRATED (the servo never locks) and the
expected outcome is a selected master plus fresh, small offsets, reported as *unlocked*.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sandbox import need, veth_namespaces

from edge.cli import cli
from edge.clock.config import make_config, with_fast_announce
from edge.clock.monitor import Monitor, query_pmc
from edge.clock.ptpmath import rms
from edge.clock.supervisor import Backoff, Supervisor
from edge.profile import DeviceProfile

IN_CI = os.environ.get("CI") == "true"
BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.slow, pytest.mark.root]


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=20)


def _need_root_and_linuxptp() -> None:
    missing = [t for t in ("ip", "ptp4l", "pmc")
               if not (shutil.which(t) or shutil.which(t, path="/usr/sbin:/sbin"))]
    why = ("needs root (network namespaces, PTP ports)" if os.geteuid() != 0 else
           f"needs {', '.join(missing)} (apt-get install linuxptp iproute2)" if missing else "")
    need(not why, why)


def _veth_pair(tag: str):
    """Namespaces and veth names unique to this process and tag; a finaliser-safe teardown."""
    pid = os.getpid()
    a, b = f"hc{tag}{pid}a", f"hc{tag}{pid}b"
    va, vb = f"hp{tag}{pid}a", f"hp{tag}{pid}b"  # interface names differ: run dirs by name
    teardown = veth_namespaces((a, b), (va, vb), ("10.66.0.1/24", "10.66.0.2/24"))
    return (a, va), (b, vb), teardown


@pytest.fixture(scope="module")
def run_base(tmp_path_factory):
    base = tmp_path_factory.mktemp("run")
    old = os.environ.get("HUSHLINK_RUN_DIR")
    os.environ["HUSHLINK_RUN_DIR"] = str(base)
    yield base
    if old is None:
        os.environ.pop("HUSHLINK_RUN_DIR", None)
    else:
        os.environ["HUSHLINK_RUN_DIR"] = old


@pytest.fixture(scope="module")
def ptp_pair(run_base):
    """Our supervisor running ptp4l master in namespace a and slave in namespace b."""
    _need_root_and_linuxptp()
    (a, va), (b, vb), teardown = _veth_pair("s")
    settings = DeviceProfile.by_name("generic-linux").ptp
    sups: list[Supervisor] = []
    try:
        for role, ns, iface in (("master", a, va), ("slave", b, vb)):
            cfg = with_fast_announce(make_config(
                settings, role, iface, timestamping="software",
                free_running=role == "slave"))  # shared CLOCK_REALTIME: never steer it
            mon = Monitor(iface, role, lock_threshold_ns=settings.lock_threshold_ns,
                          holdover_s=settings.holdover_s, window_s=settings.window_s)
            sups.append(Supervisor(cfg, mon, prefix=["ip", "netns", "exec", ns],
                                   backoff=Backoff(base_s=0.5)).start())
        yield sups[0], sups[1]
    finally:
        for s in sups:
            s.stop()
        teardown()


def _master_identity(master: Supervisor) -> str:
    s = query_pmc(master.cfg.uds)
    assert s.gm_identity, "the master answered no TIME_STATUS_NP"
    return s.gm_identity


def _wait_selected(slave: Supervisor, gm: str, timeout_s: float = 30.0) -> float:
    """Seconds until the slave's monitor has fresh offsets from master ``gm``."""
    t0 = time.monotonic()
    n0 = len(slave.monitor.fresh)
    while time.monotonic() - t0 < timeout_s:
        last = slave.monitor.last
        if (last is not None and last.gm_identity == gm and last.has_master
                and len(slave.monitor.fresh) >= n0 + 2):
            return time.monotonic() - t0
        time.sleep(0.2)
    raise AssertionError(f"slave did not select master {gm} in {timeout_s} s: "
                         f"{slave.monitor.status()}")


def _wait_settled(slave: Supervisor, since: float, timeout_s: float = 45.0) -> None:
    """Until some 10 s window of fresh offsets after monotonic time ``since`` has rms <= 10 us.

    Until the first delay exchanges of a (re)started ptp4l finish, the offset carries the
    initial path-delay guess (tens of µs on a loaded machine); what must be small is the
    settled offset.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        time.sleep(1)
        t, off = slave.monitor.offsets()
        recent = off[(t > t[-1] - 10) & (t > since)]
        if len(recent) >= 8 and rms(recent) <= 10_000:
            return
        assert time.monotonic() < deadline, (
            f"offset never settled: last 10 s rms {rms(recent):.0f} ns > 10 us over "
            f"{len(recent)} samples (need >= 8: about one fresh offset a second)")


def test_slave_selects_master_and_offsets_are_small(ptp_pair):
    master, slave = ptp_pair
    gm = _master_identity(master)
    _wait_selected(slave, gm)
    _wait_settled(slave, since=0.0)
    st = slave.monitor.status()
    ingress = [s.ingress_ns for s in slave.monitor.fresh]
    assert ingress == sorted(set(ingress)), "each fresh sample comes from a new Sync"
    assert 0 < st.path_delay_ns < 1_000_000, "a veth path delay is microseconds"
    assert st.gm_identity == gm
    assert st.age_s is not None and st.age_s < 3
    # Truthful lock: free_running never lets the servo lock, so the port is UNCALIBRATED.
    assert st.port_state == "UNCALIBRATED"
    assert st.lock == "unlocked" and "UNCALIBRATED" in st.reason
    assert master.monitor.status().lock == "master"
    assert abs(st.drift_ppm) < 1.0, "one shared clock: no drift"


def test_status_command_reads_the_instances(ptp_pair):
    master, slave = ptp_pair
    # The supervisors are in this process, so `status` must not believe a supervisor.pid:
    # it reports each instance from status.json only while a supervisor process owns it.
    slave.cfg.run_dir.joinpath("supervisor.pid").write_text(f"{os.getpid()}\n")
    try:
        r = CliRunner().invoke(cli, ["clock", "status", "--iface", slave.cfg.iface, "--json"])
    finally:
        slave.cfg.run_dir.joinpath("supervisor.pid").unlink()
    assert r.exit_code == 0, r.output
    st = json.loads(r.output)
    # pytest's cmdline has no "clock start": the status is reported as not running, truthfully
    assert st["lock"] == "unlocked" and st["reason"] == "not running"
    raw = json.loads((slave.cfg.run_dir / "status.json").read_text())
    assert raw["port_state"] == "UNCALIBRATED" and raw["lock"] == "unlocked"
    assert raw["timestamping"] == "software" and raw["free_running"] is True


def test_killed_ptp4l_is_restarted_and_reselects(ptp_pair):
    master, slave = ptp_pair
    gm = _master_identity(master)
    _wait_selected(slave, gm)
    old_pid = slave.pid()
    os.kill(old_pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (slave.pid() in (None, old_pid)):
        time.sleep(0.1)
    assert slave.pid() not in (None, old_pid), "the supervisor did not restart ptp4l"
    assert slave.restarts() == 1
    state = json.loads((slave.cfg.run_dir / "state.json").read_text())
    assert state["children"]["ptp4l"]["last_exit"] == -signal.SIGKILL
    restarted = time.monotonic()
    _wait_selected(slave, gm)
    _wait_settled(slave, since=restarted)  # the restarted ptp4l locks again


@pytest.fixture
def cli_pair(run_base):
    _need_root_and_linuxptp()
    (a, va), (b, vb), teardown = _veth_pair("c")
    yield (a, va), (b, vb)
    for ns, iface in ((a, va), (b, vb)):  # stop our daemons, even when the test failed
        subprocess.run(["ip", "netns", "exec", ns, str(BIN / "edge-denoise"), "clock", "stop",
                        "--iface", iface], capture_output=True, timeout=30)
    teardown()


def _edge(ns: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, str(BIN / "edge-denoise"), *args],
                          capture_output=True, text=True, timeout=60)


def test_cli_start_status_stop_daemons(cli_pair, run_base):
    (a, va), (b, vb) = cli_pair
    # master in the foreground (the default), slave as a daemon
    fg = subprocess.Popen(["ip", "netns", "exec", a, str(BIN / "edge-denoise"), "clock",
                           "start", "--role", "master", "--iface", va, "--fast-announce"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _test_cli(cli_pair, run_base, fg)
    finally:
        if fg.poll() is None:
            fg.kill()
            fg.wait(10)


def _test_cli(cli_pair, run_base, fg):
    (a, va), (b, vb) = cli_pair
    deadline = time.monotonic() + 15
    while not (run_base / f"ptp-{va}" / "state.json").exists() and time.monotonic() < deadline:
        assert fg.poll() is None, fg.communicate()
        time.sleep(0.1)
    r = _edge(b, "clock", "start", "--role", "slave", "--iface", vb, "--daemon",
              "--free-running", "--fast-announce")
    assert r.returncode == 0, r.stderr
    again = _edge(b, "clock", "start", "--role", "slave", "--iface", vb, "--daemon")
    assert again.returncode == 1 and "already running" in again.stderr
    st = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = _edge(b, "clock", "status", "--iface", vb, "--json")
        assert r.returncode == 0, r.stderr
        st = json.loads(r.stdout)
        if st["port_state"] == "UNCALIBRATED" and st["samples"] >= 3:
            break
        time.sleep(1)
    assert st["port_state"] == "UNCALIBRATED" and st["lock"] == "unlocked", st
    assert abs(st["offset_ns"]) < 10_000 and st["path_delay_ns"] > 0
    table = _edge(a, "clock", "status")  # every instance, from any namespace
    assert vb in table.stdout and va in table.stdout and "UNCALIBRATED" in table.stdout
    pids = [json.loads((run_base / f"ptp-{i}" / "state.json").read_text())["children"]
            ["ptp4l"]["pid"] for i in (va, vb)]
    fg.send_signal(signal.SIGTERM)  # the foreground supervisor stops its ptp4l and exits
    _, err = fg.communicate(timeout=15)
    assert fg.returncode == 0, err
    assert f"ptp4l master on {va}" in err
    r = _edge(b, "clock", "stop", "--iface", vb)
    assert r.returncode == 0, r.stderr
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    r = _edge(b, "clock", "status", "--iface", vb, "--json")
    assert json.loads(r.stdout)["lock"] == "unlocked"


def test_clear_errors(run_base):
    _need_root_and_linuxptp()
    r = CliRunner().invoke(cli, ["clock", "start", "--role", "slave", "--iface", "nosuch0"])
    assert r.exit_code == 1 and "nosuch0" in r.output and "not found" in r.output
    r = CliRunner().invoke(cli, ["clock", "stop", "--iface", "nosuch0"])
    assert r.exit_code == 1 and "no running clock" in r.output
    r = CliRunner().invoke(cli, ["clock", "status", "--iface", "nosuch0"])
    assert r.exit_code == 1 and "no clock instance" in r.output
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    can_drop = os.geteuid() == 0 and shutil.which("setpriv") and subprocess.run(
        [*drop, sys.executable, "-c", "import edge"], capture_output=True, timeout=60,
        cwd="/").returncode == 0
    if can_drop:  # really unprivileged: nobody
        p = subprocess.run([*drop, str(BIN / "edge-denoise"), "clock", "start", "--role",
                            "slave", "--iface", "lo"], capture_output=True, text=True,
                           timeout=60, cwd="/",
                           env={**os.environ, "HUSHLINK_RUN_DIR": "/nonexistent"})
        assert p.returncode == 1 and "needs root" in p.stderr, p.stderr
    else:  # the checkout is not readable by nobody (or we are not root): check the message
        from edge.clock import config

        orig = os.geteuid
        os.geteuid = lambda: 1000
        try:
            with pytest.raises(config.ClockError, match="needs root"):
                config.require_root("clock start")
        finally:
            os.geteuid = orig
