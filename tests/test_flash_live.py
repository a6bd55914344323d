# ruff: noqa: F401, F811  (pytest fixtures imported from other test modules are arguments here)
"""A flashed bundle reaches the running live service (edge/liveslot.py): the trial's live
check, the hot switch, and the rollback of a bundle whose model misses its CPU budget.

The end-to-end test runs the device as it is deployed, in separate processes: `edge-denoise
serve` on a socat pty and `edge-denoise live --state-dir` on the same state directory,
capturing from a private PulseAudio server while noise plays into it; the host pushes with
`flash-to-device push --port`.
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

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from test_flash_util import bundles, golden, keys, step_model
from test_link_util import AgentProc, PtyPair
from test_live_pulse import Pulse, pulse

from edge.audio import save_audio
from edge.liveslot import hop_budget_ms, judge, read_status, resolve, transport_for
from edge.model import default_model_path, sha256_file
from edge.params import TransportParams
from edge.slots import SlotStore
from edge.transport.receiver import Receiver

EDGE = [sys.executable, "-m", "edge"]


# ------------------------------------------------------------------- the verdict, pure
WANT = ("B", "2.0.0", "ab" * 32)


def status(**kw) -> dict:
    st = {"pid": 1, "running": True, "heartbeat": 1000.0, "budget_ms": 5.0,
          "model": {"slot": "B", "bundle_version": "2.0.0", "sha256": "ab" * 32},
          "window": {"hops": 150, "overruns": 0, "hop_cpu_ms": {"p50": 0.2, "p99": 0.4}},
          "load_error": None}
    st.update(kw)
    return st


@pytest.mark.parametrize("st, alive, verdict, why", [
    (None, True, "absent", "no live service"),
    (status(running=False), True, "absent", "stopped"),
    (status(heartbeat=900.0), False, "absent", "gone"),
    (status(heartbeat=990.0), False, "wait", "restarting"),
    (status(heartbeat=995.0), True, "wait", "no heartbeat"),
    (status(model={"slot": "A", "bundle_version": "1.0.0", "sha256": "cd" * 32}), True,
     "wait", "still runs 1.0.0"),
    (status(load_error={"slot": "B", "bundle_version": "2.0.0", "sha256": "ab" * 32,
                        "error": "ModelError: bad"}), True, "fail", "cannot load it"),
    (status(window={"hops": 40, "overruns": 0, "hop_cpu_ms": {"p99": 0.4}}), True,
     "wait", "40 of 100 hops"),
    (status(window={"hops": 40, "overruns": 2, "hop_cpu_ms": {"p99": 0.4}}), True,
     "fail", "2 overrun(s)"),
    (status(budget_ms=0.01), True, "fail", "over the budget of 0.01 ms"),
    (status(), True, "pass", "within 5 ms"),
])
def test_judge_the_live_service_on_the_new_bundle(st, alive, verdict, why):
    v, reason = judge(st, WANT, now=1000.5, alive=alive)
    assert v == verdict and why in reason


def test_budget_a_bundle_can_only_tighten():
    assert hop_budget_ms(5.0, {}) == 5.0
    assert hop_budget_ms(5.0, {"live": {"hop_budget_ms": 0.5}}) == 0.5
    assert hop_budget_ms(5.0, {"live": {"hop_budget_ms": 50}}) == 5.0
    assert hop_budget_ms(5.0, {"live": {"hop_budget_ms": True}}) == 5.0


def test_bundle_transport_over_the_command_line_defaults_but_not_its_explicit_options():
    base = TransportParams(bitrate_kbps=64, protocol="udp", share=1.0)
    cfg = {"transport": {"bitrate_kbps": 96, "protocol": "tcp", "fec": False, "share": 0.5}}
    got = transport_for(base, frozenset({"share"}), cfg)
    assert (got.bitrate_kbps, got.protocol, got.fec, got.share) == (96, "udp", False, 1.0)
    assert transport_for(base, frozenset(), {"transport": {"bitrate_kbps": 9999}}) == base
    assert transport_for(base, frozenset(), None) == base


def test_no_bundle_means_the_packaged_model_and_says_so(tmp_path):
    am = resolve(tmp_path / "empty")
    assert am.source == "packaged" and am.path == default_model_path()
    assert am.sha256 == sha256_file(default_model_path()) and "no bundle installed" in am.note


# ------------------------------------------------------------------- the real service
@pytest.fixture(scope="module")
def live_bundles(tmp_path_factory, step_model, keys) -> dict:
    """2.0.0: the shipped model (another sha256 than 1.0.0's test model) with a transport
    config of 96 kbit/s; 3.0.0: the test model with a signed budget of 1 µs per hop, which no
    model meets: it overruns its budget on any machine, measured by the running service."""
    from host.bundle import build

    d = tmp_path_factory.mktemp("live-bundles")
    tight, fast = d / "tight.json", d / "fast.toml"
    tight.write_text(json.dumps({"live": {"hop_budget_ms": 0.001}}))
    fast.write_text("[transport]\nbitrate_kbps = 96\n")
    out = {"2.0.0": d / "b2.hlb", "3.0.0": d / "b3.hlb"}
    build(default_model_path(), keys["vendor"]["key"], out["2.0.0"], version="2.0.0",
          config=fast)
    build(step_model, keys["vendor"]["key"], out["3.0.0"], version="3.0.0", config=tight)
    return out


def wait_for(pred, timeout: float, what: str, proc=None):
    t_end = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the live service exited: {proc.communicate()}")
        if time.monotonic() > t_end:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.1)


def running(state: Path, version: str | None):
    st = read_status(state)
    if st and st["running"] and (st["model"] or {}).get("bundle_version") == version:
        return st
    return None


@pytest.mark.slow
@pytest.mark.train
def test_push_switches_the_running_service_and_a_bundle_over_budget_rolls_back(
        pulse, golden, live_bundles, step_model, tmp_path):
    state = tmp_path / "state"
    shutil.copytree(golden, state)  # 1.0.0 (the test model) confirmed in slot A
    noise = tmp_path / "noise.wav"
    rng = np.random.default_rng(0)
    t = np.arange(16_000 * 60) / 16_000
    save_audio(noise, (0.05 * rng.standard_normal(len(t)) + 0.1 * np.sin(2 * np.pi * 300 * t)
                       ).astype(np.float32))
    out, tele = tmp_path / "live.wav", tmp_path / "tele.jsonl"
    rx = Receiver("127.0.0.1:0")
    live = subprocess.Popen(
        [*EDGE, "live", "--state-dir", str(state), "--rate", "16000", "--record", str(out),
         "--summary", str(tmp_path / "summary.json"), "--quiet", "--duration", "300",
         "--stream", f"udp://127.0.0.1:{rx.port}", "--telemetry", str(tele)],
        env=pulse.client_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    player = subprocess.Popen(["paplay", f"--device={pulse.sink}", str(noise)], env=pulse.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pair = PtyPair(tmp_path, f"fl{os.getpid()}")
    agent = AgentProc(pair.a, state)
    run = CliRunner().invoke
    try:
        st = wait_for(lambda: running(state, "1.0.0"), 60, "live on 1.0.0", live)
        assert st["model"]["sha256"] == sha256_file(step_model)
        assert st["model"]["source"] == "bundle" and st["pid"] == live.pid
        assert st["transport"]["bitrate_kbps"] == 64  # the command line's
        wait_for(lambda: len(wire_kbps(tele)) >= 3, 20, "telemetry at 64 kbit/s", live)
        before = wire_kbps(tele)[-1]

        # v2: installed, switched, checked on the running service, confirmed
        t0 = time.perf_counter()
        res = run(cli_flash(), ["push", str(live_bundles["2.0.0"]), "--port", pair.b, "--json"])
        push_s = time.perf_counter() - t0
        assert res.exit_code == 0, res.output + agent.log.read_text()
        pushed = json.loads(res.output)
        v2_sha = sha256_file(default_model_path())
        assert pushed["state"] == "confirmed" and pushed["live"]["running"]
        assert pushed["live"]["model"]["bundle_version"] == "2.0.0"
        assert pushed["live"]["model"]["sha256"] == v2_sha
        assert pushed["live"]["window"]["hops"] >= 100
        assert pushed["live"]["window"]["overruns"] == 0
        st = wait_for(lambda: running(state, "2.0.0"), 10, "live on 2.0.0", live)
        sw = st["switches"][-1]
        assert sw["bundle_version"] == "2.0.0" and sw["sha256"] == v2_sha
        print(f"switch 1.0.0 -> 2.0.0: pointer to swap {sw['switch_ms']} ms (load "
              f"{sw['load_ms']} ms), swap {sw['swap_ms']} ms, block with the swap "
              f"{sw['block_ms']} ms of a {sw['period_ms']} ms period")
        assert sw["block_ms"] < sw["period_ms"]  # the switch held the audio up < 1 period
        assert st["transport"]["bitrate_kbps"] == 96  # the bundle's, on the running sender
        n = len(wire_kbps(tele))
        wait_for(lambda: len(wire_kbps(tele)) >= n + 3, 20, "telemetry at 96 kbit/s", live)
        after = wire_kbps(tele)[-1]
        assert after > before + 20, (before, after)  # measured on the wire by the receiver

        # v3 misses its budget on the running service: confirm rolls back to 2.0.0
        t0 = time.perf_counter()
        res = run(cli_flash(), ["push", str(live_bundles["3.0.0"]), "--port", pair.b])
        fail_s = time.perf_counter() - t0
        assert res.exit_code == 1, res.output
        assert "live check failed: hop CPU p99" in res.output
        assert "over the budget of 0.001 ms" in res.output
        assert "rolled back to bundle 2.0.0, which the live service runs again" in res.output
        assert "Traceback" not in res.output
        ptr = SlotStore(state).status()
        assert (ptr["active"], ptr["version"], ptr["state"]) == ("B", "2.0.0", "confirmed")
        assert ptr["live"]["running"] and ptr["live"]["version"] == "2.0.0"
        shown = run(cli_flash(), ["status", pair.b])
        assert shown.exit_code == 0 and "live service running: bundle 2.0.0" in shown.output
        st = wait_for(lambda: running(state, "2.0.0"), 10, "live back on 2.0.0", live)
        assert live.poll() is None and st["pid"] == live.pid  # the same process, still up
        assert st["model"]["sha256"] == v2_sha
        assert st["transport"]["bitrate_kbps"] == 96
        back = st["switches"][-1]
        print(f"push 2.0.0 -> confirmed {push_s:.1f} s ({pushed['live']['detail']}); "
              f"push 3.0.0 -> rolled back {fail_s:.1f} s ({res.output.strip()}); back on "
              f"2.0.0 {back['switch_ms']} ms after the rollback, block with the swap "
              f"{back['block_ms']} ms; wire {before:.1f} -> {after:.1f} kbit/s")
    finally:
        agent.stop()
        pair.stop()
        player.kill()
        player.wait()
        if live.poll() is None:
            live.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = live.communicate(timeout=30)
        finally:
            rx.close()
    assert live.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["reason"] == "stopped" and summary["error"] is None
    assert summary["model"]["bundle_version"] == "2.0.0"
    assert summary["model"]["sha256"] == v2_sha and summary["model"]["source"] == "bundle"
    assert [s["bundle_version"] for s in summary["model_switches"]] == ["2.0.0", "3.0.0", "2.0.0"]
    assert summary["overruns"] == 0 and summary["input_overflows"] == 0
    assert abs(sf.info(out).frames - summary["audio_s"] * 16_000) <= 160  # no audio lost
    assert read_status(state)["running"] is False
    assert "running bundle 1.0.0" in stderr and "now running bundle 2.0.0" in stderr


def wire_kbps(tele: Path) -> list[float]:
    """Bitrate on the wire per second, as the receiver measured it (RTCP telemetry)."""
    if not tele.exists():
        return []
    recs = [json.loads(x) for x in tele.read_text().splitlines() if x.strip()]
    return [r["bitrate_kbps"] for r in recs if r.get("bitrate_kbps")]


def cli_flash():
    from host.flash_cli import cli

    return cli


def test_service_starts_packaged_follows_an_install_and_expires_a_trial_by_itself(tmp_path):
    """No sound server and no agent: a FileSource loop with the SlotFollower on an empty
    state directory runs the packaged model (and says so), hot-switches to a bundle when one
    is installed, rolls an unconfirmed trial back by itself at its deadline, and a confirm
    checks the running loop."""
    import threading

    from edge.denoise import Denoiser
    from edge.live import LiveLoop, LoopConfig
    from edge.liveslot import SlotFollower
    from edge.model import StepModel
    from edge.profile import DeviceProfile
    from edge.sinks import NullSink
    from edge.sources import FileSource
    from host.bundle import build, keygen

    key, pub, _ = keygen(tmp_path / "k")
    b1 = tmp_path / "b1.hlb"
    build(default_model_path(), key, b1, version="1.0.0")
    root = tmp_path / "state"
    store = SlotStore(root)
    store.init([pub.read_bytes()])

    am = resolve(root)
    model = StepModel(am.path)
    noise = (0.1 * np.random.default_rng(1).standard_normal(16_000)).astype(np.float32)
    loop = LiveLoop(FileSource(noise, 16_000, 160, loop=True), Denoiser(model), [NullSink()],
                    LoopConfig(queue_blocks=1024))
    loop.model_info = am.info(model.metadata.name, model.metadata.version)
    follower = SlotFollower(root, loop, am, profile=DeviceProfile.by_name("generic-linux"),
                            log=lambda msg: None)
    worker = threading.Thread(target=loop.run, args=(lambda lp: follower.poll(), 0.1))
    worker.start()
    try:
        st = read_status(root)
        assert st["model"]["source"] == "packaged" and "no bundle installed" in st["note"]
        store.install(b1, trial_timeout_s=4.0)  # nobody confirms: the service rolls it back
        st = wait_for(lambda: running(root, "1.0.0"), 20, "switch to 1.0.0")
        assert st["model"]["source"] == "bundle" and st["bundle_state"] == "trial"
        wait_for(lambda: store.status()["state"] == "empty", 20, "trial expiry")
        st = wait_for(lambda: running(root, None), 20, "back on the packaged model")
        assert st["model"]["source"] == "packaged"

        store.install(b1)
        done = store.confirm()  # waits for the running loop on 1.0.0, then confirms
        assert done["live"]["running"] and done["live"]["model"]["bundle_version"] == "1.0.0"
        assert done["live"]["window"]["hops"] >= 100 and store.status()["state"] == "confirmed"
        wait_for(lambda: (running(root, "1.0.0") or {}).get("bundle_state") == "confirmed", 5,
                 "status follows the confirm")
    finally:
        loop.stop()
        worker.join(10)
        follower.close()
    assert read_status(root)["running"] is False
    assert [s["bundle_version"] for s in loop.switches] == ["1.0.0", None, "1.0.0"]
