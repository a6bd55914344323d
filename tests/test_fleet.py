# ruff: noqa: F401, F811  (pytest fixtures imported from other test modules are arguments here)
"""Fleet operations (host/fleet.py): one command on many devices at once.

The runner and the device lists are checked as plain Python; the commands run against real
agents (`edge-denoise serve`), each on its own socat pty pair with its own state directory:
eight devices for `flash-to-device push`, one of which runs a live service on a board whose
CPU budget the new bundle misses (its live check fails: rolled back, the others updated), and
three plus an unanswering port for `host-calibrate collect | tune | apply`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_calibrate_cli import _simulate
from test_flash_util import bundles, fingerprint, golden, keys, step_model
from test_link_util import AgentProc, PtyPair
from test_live_pulse import Pulse, pulse

from edge.liveslot import read_status
from edge.slots import SlotStore
from host import fleet
from host.cli import cli as calibrate_cli
from host.flash_cli import cli as flash_cli

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------- device lists, pure
def test_targets_from_ports_globs_and_devices_files(tmp_path):
    for n in ("ttyX2", "ttyX0", "ttyX1"):
        (tmp_path / n).touch()
    got = fleet.targets([str(tmp_path / "ttyX*"), "socket://127.0.0.1:7000",
                         str(tmp_path / "ttyX0")])  # given twice: once
    assert [t.name for t in got] == ["ttyX0", "ttyX1", "ttyX2", "127.0.0.1:7000"]
    toml = tmp_path / "fleet.toml"
    toml.write_text('[[device]]\nport = "/dev/ttyA"\nname = "kitchen"\nbaud = 115200\n'
                    '[[device]]\nport = "/dev/ttyB"\n')
    assert fleet.targets([], toml) == [fleet.Target("kitchen", "/dev/ttyA", 115200),
                                       fleet.Target("ttyB", "/dev/ttyB")]
    lines = tmp_path / "fleet.txt"
    lines.write_text("# lab bench\n/dev/ttyA  left\n\n/dev/ttyB # no name\n")
    assert [(t.name, t.port) for t in fleet.targets([], lines)] == [
        ("left", "/dev/ttyA"), ("ttyB", "/dev/ttyB")]
    assert fleet.out_path("t.jsonl", "left") == Path("t-left.jsonl")
    assert fleet.out_path("out/{device}/t.jsonl", "left") == Path("out/left/t.jsonl")
    for bad, why in [([str(tmp_path / "nothing*")], "no device matches"),
                     (["/a/ttyS0", "/b/ttyS0"], "two devices are named 'ttyS0'"),
                     ([], "no devices given")]:
        with pytest.raises(fleet.FleetError, match=why):
            fleet.targets(bad)
    toml.write_text('[[device]]\nport = "/dev/ttyA"\nspeed = 9600\n')
    with pytest.raises(fleet.FleetError, match="unknown key.*speed"):
        fleet.targets([], toml)


def test_one_failure_is_that_devices_result_and_a_canary_stops_the_rest():
    devs = [fleet.Target(f"d{i}", f"/dev/d{i}") for i in range(6)]
    started = []
    lock = threading.Lock()

    def op_failing(name):
        def op(t, rep):
            with lock:
                started.append(t.name)
            if t.name == name:
                raise RuntimeError("boom")
            if t.name == "d3":
                raise fleet.RolledBack("unhealthy; rolled back to 1.0.0", {"version": "1.0.0"})
            return {"v": t.name}
        return op

    res = fleet.run(devs, op_failing("d1"), workers=3)
    assert [r.status for r in res] == ["ok", "failed", "ok", "rolled back", "ok", "ok"]
    assert res[1].message == "RuntimeError: boom" and res[0].detail == {"v": "d0"}
    assert res[3].detail == {"version": "1.0.0"} and sorted(started) == [d.name for d in devs]
    s = fleet.summary(res)
    assert (s["ok"], s["failed"], s["rolled_back"], s["all_ok"]) == (4, 1, 1, False)
    assert fleet.failure_line(res, "push") == ("push succeeded on 4 of 6 devices (1 failed, "
                                               "1 rolled back)")
    started.clear()  # the canary fails: nobody else starts
    res = fleet.run(devs, op_failing("d0"), canary=1)
    assert started == ["d0"] and [r.status for r in res] == ["failed"] + ["skipped"] * 5
    assert res[1].message == "not started: canary d0 failed"
    started.clear()  # canaries pass; the rest one at a time stop at the first failure (d3)
    res = fleet.run(devs, op_failing("none"), canary=2, workers=1)
    assert started == ["d0", "d1", "d2", "d3"]
    assert [r.status for r in res] == ["ok", "ok", "ok", "rolled back", "skipped", "skipped"]
    table = fleet.render_table(res, [("v", lambda r: r.detail.get("v", "-"))], width=120)
    assert "rolled back" in table and "not started: an earlier device failed" in table


def test_fleet_command_line_errors_are_one_line(tmp_path):
    run = CliRunner().invoke
    bundle = tmp_path / "b.hlb"
    bundle.write_bytes(b"x")
    for cli, args, code, why in [
        (flash_cli, ["push", str(bundle), "--port", str(tmp_path / "none*")], 1,
         "Error: no device matches"),
        (flash_cli, ["push", str(tmp_path / "missing.hlb"), "--port", "a", "--port", "b"], 1,
         "Error: cannot read bundle"),
        (flash_cli, ["push", str(bundle), "--port", "a", "--root", str(tmp_path)], 2,
         "give serial PORTs / --devices or --root DIR"),
        (calibrate_cli, ["collect", "--devices", str(tmp_path / "no.toml")], 1,
         "Error: cannot read devices file"),
        (calibrate_cli, ["collect"], 2, "give a PORT (several, a glob, or --devices FILE)"),
        (calibrate_cli, ["apply", "a", "b", str(tmp_path / "s-{device}.json")], 2,
         "s-a.json' does not exist"),
    ]:
        r = run(cli, args)
        assert r.exit_code == code and why in r.output and "Traceback" not in r.output, (
            args, r.output)


# ------------------------------------------------------------------- 8 devices, flash
TIGHT_PROFILE = """name = "slow-board"
description = "A board too slow for any model: 1 us of CPU per hop"
[audio]
input_device = "default"
output_device = "default"
native_rate = 16000
period_frames = 160
[runtime]
hop_budget_ms = 0.001
"""


class Fleet:
    """``n`` devices: state dirs copied from ``golden`` (1.0.0 confirmed), pty pairs
    ``fl<i>-a`` (agent) / ``fl<i>-b`` (host), an agent on each; ``close`` stops what
    started, also when a start failed."""

    def __init__(self, tmp_path: Path, golden: Path, n: int):
        self.states = [tmp_path / f"state{i}" for i in range(n)]
        self.pairs, self.agents = [], []
        try:
            for i, s in enumerate(self.states):
                shutil.copytree(golden, s)
                self.pairs.append(PtyPair(tmp_path, f"fl{i}"))
                self.agents.append(AgentProc(self.pairs[i].a, s))
        except BaseException:
            self.close()
            raise
        self.ports = [p.b for p in self.pairs]

    def close(self) -> None:
        for a in self.agents:
            a.stop()
        for p in self.pairs:
            p.stop()


def _wait(pred, timeout: float, what: str, proc=None):
    t_end = time.monotonic() + timeout
    while not (got := pred()):
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process exited: {proc.communicate()}")
        if time.monotonic() > t_end:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.1)
    return got


def _live_on(state: Path, version: str):
    st = read_status(state)
    return st if st and st["running"] and st["model"].get("bundle_version") == version else None


@pytest.mark.slow
@pytest.mark.train  # the test model is exported with torch + litert-torch
def test_push_to_eight_devices_one_fails_its_live_check_and_rolls_back(
        golden, bundles, pulse, tmp_path):
    devs = Fleet(tmp_path, golden, 8)
    bad = devs.states[7]  # dev8: its live service's board has a 1 us budget per hop
    profile = tmp_path / "slow-board.toml"
    profile.write_text(TIGHT_PROFILE)
    live = subprocess.Popen(
        [sys.executable, "-m", "edge", "live", "--state-dir", str(bad), "--profile", str(profile),
         "--rate", "16000", "--no-play", "--quiet", "--duration", "600"],
        cwd=ROOT, env=pulse.client_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True)
    run = CliRunner().invoke
    try:
        _wait(lambda: _live_on(bad, "1.0.0"), 60, "dev8's live service on 1.0.0", live)
        before = [fingerprint(s) for s in devs.states]

        # staged: dev8 is the canary; it fails, so no other device is touched
        listing = tmp_path / "fleet.txt"
        listing.write_text("".join(f"{devs.ports[i]} dev{i + 1}\n" for i in (7, *range(7))))
        res = run(flash_cli, ["push", str(bundles["2.0.0"]), "--devices", str(listing),
                              "--canary", "1"])
        assert res.exit_code == 1, res.output
        assert "push succeeded on 0 of 8 devices (1 rolled back, 7 skipped)" in res.output
        rows = {line.split()[0]: line for line in res.stdout.splitlines()[2:]}
        assert "rolled back" in rows["dev8"] and "1.0.0 (tried 2.0.0)" in rows["dev8"]
        assert "live check failed" in res.stdout and "Traceback" not in res.output
        for i in range(7):
            assert "not started: canary dev8 failed" in rows[f"dev{i + 1}"]
            assert fingerprint(devs.states[i]) == before[i]
            assert not list((devs.states[i] / "staging").glob("bundle-*"))  # nothing sent
        assert fingerprint(bad) == before[7]  # back on 1.0.0, confirmed

        # all at once (a glob): seven updated, dev8 rolled back and reported, exit 1
        t0 = time.perf_counter()
        res = run(flash_cli, ["push", str(bundles["2.0.0"]), "--port", str(tmp_path / "fl*-b"),
                              "--json"])
        took = time.perf_counter() - t0
        assert res.exit_code == 1, res.output
        out = json.loads(res.stdout)
        assert (out["total"], out["ok"], out["rolled_back"], out["failed"]) == (8, 7, 1, 0)
        by_port = {d["port"]: d for d in out["devices"]}
        for i, state in enumerate(devs.states[:7]):
            d = by_port[devs.ports[i]]
            assert d["status"] == "ok" and d["name"] == f"fl{i}-b", d
            assert (d["detail"]["version"], d["detail"]["state"]) == ("2.0.0", "confirmed")
            st = SlotStore(state).status()
            assert (st["active"], st["version"], st["state"]) == ("B", "2.0.0", "confirmed")
        d = by_port[devs.ports[7]]
        assert d["status"] == "rolled back", d
        # over 1 us per hop, or (on a loaded machine) overruns first: either fails the board
        assert d["message"].startswith("live check failed: ")
        assert ("over the budget of 0.001 ms" in d["message"]
                or "overrun(s) on the new model" in d["message"]), d["message"]
        assert "rolled back to bundle 1.0.0" in d["message"]
        assert d["detail"]["version"] == "1.0.0" and d["detail"]["tried"] == "2.0.0"
        assert fingerprint(bad) == before[7]
        _wait(lambda: _live_on(bad, "1.0.0"), 10, "dev8's live service back on 1.0.0", live)
        assert live.poll() is None  # the same service, still up
        print(f"push to 8 devices at once: {took:.1f} s (seconds per device "
              f"{[round(d['seconds'], 1) for d in out['devices']]})")
    finally:
        live.send_signal(signal.SIGTERM)
        try:
            live.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            live.kill()
        devs.close()


# ------------------------------------------------------------- 3 devices, calibration
@pytest.fixture
def calib_fleet(tmp_path):
    """Three agents whose telemetry comes from a simulated link that follows their active
    parameters (tests/test_calibrate_cli.py), and a fourth pty with no agent behind it."""
    stop = threading.Event()
    pairs, agents, threads = [], [], []
    for i in range(3):
        state, telem = tmp_path / f"cstate{i}", tmp_path / f"ctelem{i}.jsonl"
        state.mkdir()
        th = threading.Thread(target=_simulate, args=(state, telem, stop), daemon=True)
        th.start()
        threads.append(th)
        pairs.append(PtyPair(tmp_path, f"cal{i}"))
        agents.append(AgentProc(pairs[-1].a, state, "--telemetry", str(telem)))
    dead = PtyPair(tmp_path, "dead")
    yield [p.b for p in pairs], dead.b
    stop.set()
    for th in threads:
        th.join()
    for a in agents:
        a.stop()
    for p in (*pairs, dead):
        p.stop()


@pytest.mark.slow
def test_collect_tune_apply_on_three_devices_and_one_that_does_not_answer(calib_fleet,
                                                                         tmp_path):
    ports, dead = calib_fleet
    run = CliRunner().invoke
    names = [Path(p).name for p in ports]
    tel = str(tmp_path / "telemetry-{device}.jsonl")
    res = run(calibrate_cli, ["collect", *ports, dead, "--duration", "2", "--sweep", "2",
                              "--settle", "0.2", "-o", tel, "--json"])
    assert res.exit_code == 1, res.output
    out = json.loads(res.stdout)
    assert [d["status"] for d in out["devices"]] == ["ok"] * 3 + ["failed"]
    assert "no answer from" in out["devices"][3]["message"]
    assert not (tmp_path / "telemetry-dead-b.jsonl").exists()
    for n in names:
        lines = (tmp_path / f"telemetry-{n}.jsonl").read_text().splitlines()
        assert len(lines) > 20 and len({json.dumps(json.loads(x)["params"]) for x in lines}) == 2
    res = run(calibrate_cli, ["tune", *(str(tmp_path / f"telemetry-{n}.jsonl") for n in names),
                              "-o", str(tmp_path / "strategy-{device}.json"), "--pop", "8",
                              "--generations", "3"])
    assert res.exit_code == 0, res.output
    assert all(n in res.stdout for n in names) and res.stdout.count(" ok ") == 3
    res = run(calibrate_cli, ["apply", *ports, str(tmp_path / "strategy-{device}.json"),
                              "--measure", "1", "--settle", "0.3", "-o",
                              str(tmp_path / "apply.json")])
    assert res.exit_code == 0, res.output
    for n in names:
        strat = json.loads((tmp_path / f"strategy-{n}.json").read_text())
        applied = json.loads((tmp_path / f"apply-{n}.json").read_text())
        assert applied["strategy"] == strat["params"]
        assert f"{'confirmed' if applied['confirmed'] else 'reverted'} (C" in res.stdout
