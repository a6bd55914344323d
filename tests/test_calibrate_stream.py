"""The pieces that let calibration run from the command line (the whole flow, in separate
processes: tests/test_calibrate_split.py): the receiver takes the sender's announced
parameters, the sender follows the agent's parameter file without a restart, the host
starts and stops the device's stream, and `collect` refuses seconds in which no stream ran."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner
from test_link_util import AgentProc, PtyPair

from edge.agent import HANDLERS, Agent
from edge.paramfollow import FollowingStream, ParamsFile, stream_for
from edge.params import Telemetry, TransportParams
from edge.transport.receiver import Receiver
from edge.transport.sender import Sender, send_file
from host import fitness, linkcheck
from host.cli import cli

PY = sys.executable


def test_receiver_takes_the_buffer_the_sender_announces():
    x = (0.1 * np.sin(np.arange(40_000) / 7)).astype(np.float32)
    rx = Receiver("127.0.0.1:0", TransportParams())
    tx = Sender(f"udp://127.0.0.1:{rx.port}", TransportParams())
    changed = {}

    def during(k, _t):
        if k == 75:
            tx.update(tx.params.replace(buffer_ms=350, fec=False, bitrate_kbps=100))
            changed["t"] = time.time()

    try:
        send_file(x, tx, on_frame=during)
        tx.close()
        assert rx.wait(3.0)
    finally:
        tx.close()
        rx.close()
    assert rx.params.buffer_ms == 350 and rx.jb.max_s == pytest.approx(0.35)
    assert rx.params.fec is False and rx.jb.fec is False
    assert rx.param_log[-1]["change"] == {"buffer_ms": [200, 350], "fec": [True, False]}
    assert rx.summary()["param_changes"] == 1 and rx.summary()["lost"] == 0
    recs = rx.telemetry.window(60)
    assert recs[0].buffer_ms == 200 and recs[-1].buffer_ms == 350
    assert all(100 <= r.delay_ms <= 350 for r in recs)
    assert tx.stats()["control"] >= 6  # announced at the start, on the change, every second


def test_announcements_from_another_stream_or_out_of_range_are_ignored():
    from edge.transport import rtp

    rx = Receiver("127.0.0.1:0", TransportParams())
    try:
        rx.tracker.key = (7, None)  # locked to SSRC 7 (on TCP: no source address)
        rx._on_rtcp(rtp.pack_app(rtp.APP_PARAMS, 8, {"buffer_ms": 400}))  # not our sender
        rx._on_rtcp(rtp.pack_app(rtp.APP_PARAMS, 7, {"buffer_ms": 9000}))  # out of range
        rx._on_rtcp(rtp.pack_app(rtp.APP_PARAMS, 7, {"buffer_ms": "x"}))
        assert rx.params.buffer_ms == 200 and rx.counts["malformed"] == 2
        rx._on_rtcp(rtp.pack_app(rtp.APP_PARAMS, 7, {"buffer_ms": 300, "bitrate_kbps": 90}))
        assert rx.params.buffer_ms == 300 and rx.params.bitrate_kbps == 64  # not its business
        rx.update(rx.params.replace(buffer_ms=150))  # the receiver's owner decides locally...
        rx._on_rtcp(rtp.pack_app(rtp.APP_PARAMS, 7, {"buffer_ms": 300, "bitrate_kbps": 90}))
        assert rx.params.buffer_ms == 150  # ...and a repeated announcement does not undo it
        rx._on_rtcp(rtp.pack_app(rtp.APP_PARAMS, 7, {"buffer_ms": 250}))
        assert rx.params.buffer_ms == 250 and len(rx.param_log) == 2
    finally:
        rx.close()


def test_params_file_is_read_once_per_change(tmp_path):
    p = tmp_path / "params.json"
    f = ParamsFile(p)
    assert f.poll() is None  # missing
    p.write_text(json.dumps({"active": {"bitrate_kbps": 90}}))
    assert f.poll() == TransportParams(bitrate_kbps=90)
    assert f.poll() is None  # unchanged
    p.write_text("{torn")
    assert f.poll() is None
    p.write_text(json.dumps({"active": {"bitrate_kbps": 120, "buffer_ms": 150}}))
    assert f.poll() == TransportParams(bitrate_kbps=120, buffer_ms=150)


def test_following_stream_is_not_restarted_by_a_parameter_change(tmp_path):
    stream = stream_for(f"{PY} -c 'import time, sys; time.sleep(60)' {{params_file}} "
                        "{bitrate_kbps}", tmp_path)
    assert isinstance(stream, FollowingStream)
    assert stream.params_file == tmp_path / "params.json"
    logs = []
    agent = Agent("loop://", state_dir=tmp_path, stream=stream, log=logs.append)
    try:
        assert HANDLERS["start_stream"].fn(agent, {})["running"]
        pid = stream.proc.pid
        HANDLERS["set_params"].fn(agent, {"params": {"bitrate_kbps": 120, "buffer_ms": 300}})
        HANDLERS["apply"].fn(agent, {"timeout_s": 0.0})
        assert stream.proc.pid == pid and stream.running
        saved = json.loads((tmp_path / "params.json").read_text())["active"]
        assert saved["bitrate_kbps"] == 120 and saved["buffer_ms"] == 300
        assert "parameters: bitrate_kbps 64 -> 120, buffer_ms 200 -> 300" in logs
        st = HANDLERS["stream_status"].fn(agent, {})
        assert st["configured"] and st["running"] and st["params"]["bitrate_kbps"] == 120
        HANDLERS["stop_stream"].fn(agent, {})
        assert not HANDLERS["stream_status"].fn(agent, {})["running"]
    finally:
        stream.stop()


def _rec(t: float, live: bool) -> dict:
    if not live:  # what an idle receiver writes: no packets, no latency
        return {**Telemetry(t, 0, 0.0, 0.0, 0.0, 0.0).to_dict(), "latency_ms": None}
    return Telemetry(t, 40.0, 5.0, 4.0, 1.0, 25.0, bitrate_kbps=64.0, buffer_ms=200,
                     delay_ms=100).to_dict()


def _writer(path, stop: threading.Event, live) -> threading.Thread:
    def run():
        t = 1000.0
        with open(path, "a") as f:
            while not stop.wait(0.05):
                t += 1.0
                f.write(json.dumps(_rec(t, live(t))) + "\n")
                f.flush()
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


@pytest.fixture
def device(tmp_path):
    """An agent on a pty whose telemetry file is written by ``live(t) -> bool``; extra serve
    arguments via ``request.param``."""
    made = []

    def make(live, *extra):
        pair = PtyPair(tmp_path, f"k{os.getpid()}{len(made)}")
        telem, stop = tmp_path / f"tel{len(made)}.jsonl", threading.Event()
        th = _writer(telem, stop, live)
        agent = AgentProc(pair.a, tmp_path / f"state{len(made)}", "--telemetry", str(telem),
                          *extra)
        made.append((pair, stop, th, agent))
        return pair.b

    yield make
    for pair, stop, th, agent in made:
        stop.set()
        th.join()
        agent.stop()
        pair.stop()


def test_collect_drops_idle_seconds_and_refuses_when_no_stream_ran(device, tmp_path):
    run = CliRunner().invoke
    port = device(lambda t: int(t) % 2 == 0)  # every other second idle
    out = tmp_path / "t.jsonl"
    r = run(cli, ["collect", port, "--duration", "1.5", "-o", str(out)])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines and all(x["telemetry"]["latency_ms"] == 40.0 for x in lines)
    assert "skipped" in r.stderr
    idle = device(lambda t: False)
    r = run(cli, ["collect", idle, "--duration", "1", "-o", str(tmp_path / "u.jsonl")])
    assert r.exit_code == 1 and "no packets arrived" in r.stderr, r.stderr
    assert not (tmp_path / "u.jsonl").exists()


def test_stream_start_status_stop_and_collect_refuses_a_stopped_stream(device, tmp_path):
    run = CliRunner().invoke
    port = device(lambda t: True, "--stream-cmd", f"{PY} -c 'import time; time.sleep(60)'")
    r = run(cli, ["collect", port, "--duration", "1", "-o", str(tmp_path / "t.jsonl")])
    assert r.exit_code == 1 and "stream is not running" in r.stderr, r.stderr
    r = run(cli, ["stream", "start", port, "--wait", "5"])
    assert r.exit_code == 0 and r.stdout.startswith("stream running: latency 40.0 ms"), r.output
    r = run(cli, ["stream", "status", port, "--json"])
    assert json.loads(r.stdout)["running"] is True
    r = run(cli, ["collect", port, "--duration", "1", "-o", str(tmp_path / "t.jsonl")])
    assert r.exit_code == 0, r.stderr
    r = run(cli, ["stream", "stop", port])
    assert r.exit_code == 0 and "stopped" in r.stdout
    r = run(cli, ["stream", "status", port])
    assert r.stdout.startswith("stream stopped")
    dead = device(lambda t: False, "--stream-cmd", f"{PY} -c 'raise SystemExit(3)'")
    r = run(cli, ["stream", "start", dead, "--wait", "3"])
    assert r.exit_code == 1 and "exited" in r.stderr, r.stderr
    none = device(lambda t: True)
    r = run(cli, ["stream", "start", none])
    assert r.exit_code == 1 and "no stream configured" in r.stderr, r.stderr


def test_measured_cost_uses_what_the_receiver_reports():
    w = fitness.Weights()
    tuned = TransportParams(buffer_ms=100, bitrate_kbps=150).to_dict()
    default = TransportParams().to_dict()
    rec = Telemetry(0, 40, 5.0, 4, 1.0, 25, bitrate_kbps=60.0, buffer_ms=200,
                    delay_ms=120).to_dict()
    # the set parameters never reached the link: C is the same whatever was set
    assert fitness.measured_cost([rec], tuned, w) == fitness.measured_cost([rec], default, w)
    old = Telemetry(0, 40, 5.0, 4, 1.0, 25).to_dict()  # a source that reports neither
    assert fitness.measured_cost([old], tuned, w) < fitness.measured_cost([old], default, w)


def test_pesq_of_a_looped_reference(shared_data):
    from test_calibrate_split import SPEECH

    from edge.audio import load_audio

    ref = load_audio(shared_data / SPEECH).samples
    loop = np.tile(np.pad(ref, (0, -len(ref) % 320)), 3)
    deg = loop[50_000:50_000 + 8 * 16_000] + 1e-5 * np.random.default_rng(0).standard_normal(
        8 * 16_000).astype(np.float32)
    assert np.array_equal(linkcheck.looped_reference(ref, deg), loop[50_000:50_000 + len(deg)])
    assert linkcheck.pesq_wb(ref, deg) > 4.0
    with pytest.raises(linkcheck.LinkCheckError, match="tap holds"):
        linkcheck.pesq_wb(ref, np.zeros(16_000, np.float32))


def test_a_stopped_sender_says_no_bye():
    """SIGTERM (the agent's stream stop or restart) must not end the far end's `receive`."""
    import socket

    from edge.transport import rtcp, rtp

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.3)
    got = []
    try:
        for bye in (False, True):
            tx = Sender(f"udp://127.0.0.1:{sock.getsockname()[1]}", TransportParams())
            tx.write(np.zeros(640, np.float32))
            tx.close(bye=bye)
            pts = []
            with contextlib.suppress(TimeoutError):
                while True:
                    pts.append(sock.recv(2000))
            got.append(sum(any(isinstance(p, rtcp.Bye) for p in rtcp.parse(d))
                           for d in pts if rtp.is_rtcp(d)))
    finally:
        sock.close()
    assert got == [0, 5]
