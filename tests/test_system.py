"""``host-calibrate system up|status|impair|down`` for real: a host and 2 devices in network
namespaces (ptp4l grandmaster and slaves, PulseAudio null sinks playing recordings of
../shared/data, ``edge-denoise live --stream --fix-faults`` and ``serve`` on socat ptys,
one receiver per device), watched through ``host-calibrate dashboard`` in headless
Chromium: the link is impaired and the page shows it, a parameter applied from the page
reaches the device, a bundle pushed from the page is installed, a killed process is reported
as a crash, and ``down`` leaves no namespace, process or file behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest
from browser import chromium_page
from click.testing import CliRunner
from sandbox import need, need_tools

from host.cli import cli
from host.system import netns, procs
from host.system.procs import Manifest

pytestmark = [pytest.mark.slow, pytest.mark.root]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def system(tmp_path, shared_data):
    need(os.geteuid() == 0, "needs root (network namespaces, PTP ports)")
    need_tools("ptp4l", "pmc", "socat", "pulseaudio", "paplay", "iptables", "tc",
               hint="(scripts/bootstrap-system)")
    root = tmp_path / "sys"
    prefix = f"t{os.getpid() % 100000}"
    port = _free_port()
    r = _run("system", "up", "--state-dir", str(root), "-n", "2", "--prefix", prefix,
             "--data", str(shared_data), "--dashboard-port", str(port), "--timeout", "120")
    try:
        assert r.exit_code == 0, r.output
        yield root, prefix, f"http://127.0.0.1:{port}/"
    finally:
        _run("system", "down", "--state-dir", str(root), "--prefix", prefix)


def _loss(page, i: int) -> float:
    return float(page.inner_text(f"#d{i}-link").split("/")[1].strip().split()[0])


def test_system_up_dashboard_impair_apply_push_crash_down(system):
    root, prefix, url = system
    m = Manifest.load(root)
    assert sorted(m.namespaces) == sorted([f"{prefix}-host", f"{prefix}-d1", f"{prefix}-d2"])
    r = _run("system", "status", "--state-dir", str(root), "--json")
    assert r.exit_code == 0, r.output
    st = json.loads(r.output)
    assert not st["crashed"] and all(d["ptp_port"] == "UNCALIBRATED" for d in st["devices"])
    with chromium_page() as page:
        page.goto(url)
        page.wait_for_function("document.body.dataset.updates >= 2 && "
                               "document.getElementById('d2-ptp').textContent.includes('ns')",
                               timeout=30_000)
        assert page.inner_text("#d1-ptp").startswith("UNCALIBRATED")  # master selected
        assert page.inner_text("#d1-live").startswith("on /")  # the denoiser runs
        r = _run("system", "impair", "--state-dir", str(root), "-d", "1", "--loss", "30")
        assert r.exit_code == 0, r.output
        page.wait_for_function(
            "parseFloat(document.getElementById('d1-link').textContent.split('/')[1]) > 12",
            timeout=30_000)
        assert _loss(page, 2) < 8  # device 2's link is not impaired

        page.fill("#d1-apply input[name=bitrate_kbps]", "96")
        page.fill("#d1-apply input[name=buffer_ms]", "150")
        page.click("#d1-apply button")  # on trial: the device reverts unless confirmed
        page.wait_for_function(  # the device's live loop reports it in force
            "document.getElementById('d1-inforce').textContent.startsWith('96 kbit/s / 150')",
            timeout=30_000)
        live = json.loads((root / "d1" / "state" / "live.json").read_text())
        assert live["transport"]["bitrate_kbps"] == 96 and live["transport"]["buffer_ms"] == 150
        assert "trial" in page.inner_text("#d1-params")

        page.uncheck("#d2-push input[name=confirm]")  # a loaded machine may fail the live check
        page.click("#d2-push button")
        page.wait_for_function(
            "document.getElementById('d2-bundle').textContent.includes('sim.1')",
            timeout=60_000)
        assert "done" in page.inner_text("#d2-result")

        live2 = m.proc("d2.live")
        child = [pid for pid in procs.group_members(live2.pid) if pid != live2.pid]
        assert child
        for pid in child:  # a crash of the device's live loop (not a stop)
            os.kill(pid, signal.SIGKILL)
        page.wait_for_function(
            "document.getElementById('procs').textContent.includes('d2.live ✖')",
            timeout=30_000)
    r = _run("system", "status", "--state-dir", str(root))
    assert r.exit_code == 1 and "crashed: d2.live" in r.output
    assert "d2.live" in r.output and "exit 137" in r.output

    r = _run("system", "down", "--state-dir", str(root))
    assert r.exit_code == 0 and "nothing left behind" in r.output, r.output
    assert netns.listed(prefix) == []
    assert not root.exists()
    assert procs.mentioning(str(root)) == []
    assert not any(procs.alive(p) for p in m.procs)
    assert not any(Path(d["tty_host"]).exists() for d in m.devices)
    r = _run("system", "down", "--state-dir", str(root))  # idempotent
    assert r.exit_code == 0, r.output


def test_up_refuses_a_second_system_and_down_of_nothing(tmp_path):
    root = tmp_path / "sys"
    root.mkdir()
    Manifest(root=str(root), prefix="zz").save()
    r = _run("system", "up", "--state-dir", str(root), "--prefix", "zz")
    assert r.exit_code == 1 and "already up" in r.output
    r = _run("system", "down", "--state-dir", str(root))
    assert r.exit_code == 0 and not root.exists()
    r = _run("system", "down", "--state-dir", str(root))
    assert r.exit_code == 0 and "nothing left behind" in r.output
    r = _run("system", "status", "--state-dir", str(root))
    assert r.exit_code == 1 and "no system is up" in r.output
    r = _run("system", "up", "--prefix", "Bad-Name")
    assert r.exit_code == 2 and "--prefix" in r.output


def test_crashed_process_is_reported_with_its_status(tmp_path):
    m = Manifest(root=str(tmp_path), prefix="zz")
    m.save()
    p = procs.start(m, "t.fail", ["sh", "-c", "echo boom >&2; exit 3"])
    deadline = time.monotonic() + 10
    while procs.alive(p) and time.monotonic() < deadline:
        time.sleep(0.05)
    procs._reap(p.pid)
    st = procs.state(p)
    assert st["state"] == "exited" and st["rc"] == "3" and st["log_tail"] == ["boom"]
    q = procs.start(m, "t.sleep", ["sleep", "60"])
    assert procs.state(q)["state"] == "running"
    procs.stop(q)
    assert not procs.alive(q) and procs.group_members(q.pid) == []
