# ruff: noqa: F401, F811  (pytest fixtures imported from test_flash_util are arguments here)
"""flash-to-device over the serial link: socat pty pairs with `edge-denoise serve` in a
subprocess; push, status, rollback, refusals, trial timeout, and SIGKILL of the agent at
each stage (mid-transfer included) followed by a restart and a resumed push."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import time

import pytest
from click.testing import CliRunner
from test_flash_util import (
    bundles,
    fingerprint,
    golden,
    keys,
    resign,
    small_fs,
    step_model,
)
from test_link_util import AgentProc, PtyPair

from edge.link import LinkError
from edge.slots import CRASH_STAGES, SlotStore
from host.flash import push_serial, status_serial
from host.flash_cli import cli
from host.link import connect

pytestmark = pytest.mark.train  # the fixture model is exported with torch + litert-torch


@pytest.fixture
def rig(golden, tmp_path):
    """A pty pair, a device state dir (1.0.0 confirmed) and its agent; restartable."""
    state = tmp_path / "state"
    shutil.copytree(golden, state)

    class Rig:
        def __init__(self):
            self.state = state
            self.pair = PtyPair(tmp_path, f"f{os.getpid()}")
            self.agent = AgentProc(self.pair.a, state)

        def kill_agent(self) -> int:
            if self.agent.alive():
                self.agent.proc.send_signal(signal.SIGKILL)
            rc = self.agent.proc.wait(30)
            self.agent.stop()
            return rc

        def restart(self) -> None:
            """Replug the cable and start the agent again (the device reboots)."""
            self.kill_agent()
            self.pair.stop()
            self.pair.start()
            self.agent = AgentProc(self.pair.a, state)

        def close(self) -> None:
            self.agent.stop()
            self.pair.stop()

    r = Rig()
    yield r
    r.close()


def test_push_status_rollback_over_serial(rig, bundles):
    run = CliRunner().invoke
    res = run(cli, ["push", str(bundles["2.0.0"]), "--port", rig.pair.b, "--json"])
    assert res.exit_code == 0, res.output + rig.agent.log.read_text()
    out = json.loads(res.output)
    assert out["state"] == "confirmed" and out["slot"] == "B" and out["resumed_from"] == 0
    assert out["health"]["ok"] and out["confirmed"]["ok"]
    assert not list((rig.state / "staging").glob("bundle-*"))  # installed: staging emptied
    res = run(cli, ["status", rig.pair.b])
    assert res.exit_code == 0 and "active slot  B (confirmed)" in res.output
    assert "slot A       1.0.0" in res.output and "slot B       2.0.0" in res.output
    res = run(cli, ["rollback", rig.pair.b])
    assert res.exit_code == 0 and "slot A (1.0.0)" in res.output
    st = status_serial(rig.pair.b)
    assert st["active"] == "A" and st["previous"] == "B"


def test_refusal_over_serial_changes_nothing(rig, bundles, keys, tmp_path):
    forged = resign(bundles["2.0.0"], tmp_path / "x.hlb", keys["stranger"]["key"])
    before = fingerprint(rig.state)
    res = CliRunner().invoke(cli, ["push", str(forged), "--port", rig.pair.b])
    assert res.exit_code == 1
    assert "which this device does not trust" in res.output and "[unknown_key]" in res.output
    assert fingerprint(rig.state) == before
    assert not list((rig.state / "staging").glob("bundle-*"))
    res = CliRunner().invoke(cli, ["push", str(bundles["1.0.0"]), "--port", rig.pair.b,
                                   "--trial-timeout", "5"])
    assert res.exit_code == 0, res.output  # same version again: allowed (a reinstall)


def test_full_device_refuses_before_the_upload(small_fs, golden, bundles, tmp_path):
    state = small_fs / "state"
    shutil.copytree(golden, state)
    pair = PtyPair(tmp_path, f"s{os.getpid()}")
    agent = AgentProc(pair.a, state)
    try:
        before = fingerprint(state)
        free = shutil.disk_usage(small_fs).free
        (small_fs / "filler").write_bytes(b"\0" * (free - 900_000))
        res = CliRunner().invoke(cli, ["push", str(bundles["2.0.0"]), "--port", pair.b])
        assert res.exit_code == 1 and "not enough disk space on the device" in res.output
        assert fingerprint(state) == before
        assert not list((state / "staging").iterdir())  # nothing was sent
        SlotStore(state).init([], max_bundle_bytes=10_000)
        res = CliRunner().invoke(cli, ["push", str(bundles["2.0.0"]), "--port", pair.b])
        assert res.exit_code == 1 and "over the device's limit of 10,000" in res.output
        assert fingerprint(state) == before
    finally:
        agent.stop()
        pair.stop()


def test_unconfirmed_trial_times_out_on_the_agent(rig, bundles):
    out = push_serial(bundles["2.0.0"], rig.pair.b, confirm=False, trial_timeout_s=0.5)
    assert out["state"] == "trial"
    time.sleep(1.0)  # the agent's tick rolls it back
    st = status_serial(rig.pair.b)
    assert (st["active"], st["state"], st["version"]) == ("A", "confirmed", "1.0.0")
    assert "trial not confirmed in time" in rig.agent.log.read_text()


def test_no_confirm_then_confirm_over_serial(rig, bundles):
    run = CliRunner().invoke
    res = run(cli, ["push", str(bundles["2.0.0"]), "--port", rig.pair.b, "--no-confirm"])
    assert res.exit_code == 0 and "(trial)" in res.output, res.output
    assert "B (trial, rolls back in" in run(cli, ["status", rig.pair.b]).output
    res = run(cli, ["confirm", rig.pair.b])
    assert res.exit_code == 0 and "confirmed: bundle 2.0.0 in slot B" in res.output
    rig.restart()  # a confirmed bundle survives a restart
    st = status_serial(rig.pair.b)
    assert (st["active"], st["state"], st["version"]) == ("B", "confirmed", "2.0.0")
    res = run(cli, ["confirm", rig.pair.b])
    assert res.exit_code == 1 and "[not_in_trial]" in res.output


def _staged_name(bundle) -> str:
    return f"bundle-{hashlib.sha256(bundle.read_bytes()).hexdigest()[:16]}.hlb"


def _assert_comes_up_verified(rig) -> dict:
    st = status_serial(rig.pair.b)
    assert st["state"] == "confirmed" and st["version"] in ("1.0.0", "2.0.0")
    assert SlotStore(rig.state).verify_slot(st["active"])["version"] == st["version"]
    return st


@pytest.mark.slow
def test_sigkill_mid_transfer_then_resume(rig, bundles):
    b = bundles["2.0.0"]
    size = b.stat().st_size
    with connect(rig.pair.b, timeout=0.2, retries=1) as dev:
        def cb(done, total):
            if done >= size // 2 and rig.agent.alive():
                rig.agent.proc.send_signal(signal.SIGKILL)
        with pytest.raises(LinkError):
            dev.upload(b, _staged_name(b), progress=cb)
    rig.restart()
    _assert_comes_up_verified(rig)
    seen = []
    out = push_serial(b, rig.pair.b, progress=lambda d, t: seen.append(d))
    assert size // 2 <= out["resumed_from"] < size and seen[0] == out["resumed_from"]
    assert out["state"] == "confirmed" and out["version"] == "2.0.0"


@pytest.mark.slow
@pytest.mark.parametrize("stage", CRASH_STAGES)
def test_sigkill_agent_at_each_stage_then_restart(rig, bundles, stage, monkeypatch):
    b = bundles["2.0.0"]
    rig.kill_agent()
    monkeypatch.setenv("HUSHLINK_CRASH_AT", stage)
    rig.agent = AgentProc(rig.pair.a, rig.state)
    monkeypatch.delenv("HUSHLINK_CRASH_AT")
    with connect(rig.pair.b, timeout=0.5) as dev:
        dev.upload(b, _staged_name(b))
        dev.rpc.slow_timeout = 5.0
        with pytest.raises(LinkError):
            dev.call("flash.install", {"name": _staged_name(b)}, retries=0)
    assert rig.kill_agent() == -signal.SIGKILL
    assert f"HUSHLINK_CRASH_AT={stage}" in rig.agent.log.read_text()
    rig.restart()
    _assert_comes_up_verified(rig)
    out = push_serial(b, rig.pair.b)
    assert out["resumed_from"] == out["bytes"]  # the upload survived: not sent again
    assert out["state"] == "confirmed" and out["version"] == "2.0.0"
    _assert_comes_up_verified(rig)
