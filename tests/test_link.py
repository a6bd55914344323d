"""The serial control link end to end over socat pty pairs: the agent in a subprocess, the
host client (and CLI) on the other end."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time

import pytest
import serial
from click.testing import CliRunner
from test_link_util import AgentProc, PtyPair, Relay

from edge import protocol as P
from edge.link import LinkError, NoAnswer, PortBusy, PortMissing, RemoteError, Requester, open_link
from edge.params import Telemetry
from host.link import VersionMismatch, connect


@pytest.fixture
def pair(tmp_path):
    p = PtyPair(tmp_path, f"p{os.getpid()}")
    yield p
    p.stop()


@pytest.fixture
def agent(pair, tmp_path):
    telem = tmp_path / "telemetry.jsonl"
    with telem.open("w") as f:
        for i in range(150):
            t = Telemetry(t=1000.0 + i, latency_ms=40 + i % 7, loss_pct=i % 5, jitter_ms=8.0,
                          bandwidth_util=0.5, snr_db=20.0)
            f.write(json.dumps(t.to_dict()) + "\n")
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps({"kind": "hum", "start_s": 1.0 + i, "end_s": 1.5 + i,
                                          "confidence": 0.9, "params": {"f0_hz": 50.0}}) + "\n"
                              for i in range(40)))
    a = AgentProc(pair.a, tmp_path / "state", "--telemetry", str(telem),
                  "--fault-events", str(events))
    yield a
    a.stop()


def test_hello_info_params_apply_confirm_revert(pair, agent):
    with connect(pair.b) as dev:
        assert dev.info["protocol"] == P.PROTOCOL_VERSION
        assert dev.info["profile"] == "generic-linux" and len(dev.info["device_id"]) == 16
        before = dev.get_params()["active"]
        with pytest.raises(RemoteError) as e:
            dev.set_params(buffer_ms=50)
        assert e.value.code == "out_of_range" and "buffer_ms" in str(e.value)
        assert dev.get_params()["pending"] is None and dev.get_params()["active"] == before
        with pytest.raises(RemoteError) as e:
            dev.set_params(nonsense=1)
        assert e.value.code == "out_of_range"
        with pytest.raises(RemoteError) as e:
            dev.apply()
        assert e.value.code == "no_pending"

        dev.set_params(buffer_ms=150, bitrate_kbps=96)
        dev.apply(timeout_s=0.4)
        p = dev.get_params()
        assert p["trial"] and p["active"]["buffer_ms"] == 150
        time.sleep(0.7)  # not confirmed: the device reverts on its own
        p = dev.get_params()
        assert not p["trial"] and p["active"] == before

        dev.set_params(buffer_ms=300)
        dev.apply(timeout_s=5)
        dev.confirm()
        assert dev.get_params()["active"]["buffer_ms"] == 300
        with pytest.raises(RemoteError) as e:
            dev.confirm()
        assert e.value.code == "not_in_trial"
        with pytest.raises(RemoteError) as e:
            dev.call("no_such_message")
        assert e.value.code == "unknown_method"


def test_telemetry_pages_through_the_window(pair, agent):
    with connect(pair.b) as dev:
        recs = dev.telemetry(window=1e9)
        assert [r.t for r in recs] == [1000.0 + i for i in range(150)]
        assert [r.t for r in dev.telemetry(window=9.5)] == [1140.0 + i for i in range(10)]


def test_fault_events_reach_the_host(pair, agent):
    with connect(pair.b) as dev:
        ev = dev.events(limit=5)
        assert [e["start_s"] for e in ev] == [36.0, 37.0, 38.0, 39.0, 40.0]
        assert ev[-1]["kind"] == "hum" and ev[-1]["params"] == {"f0_hz": 50.0}


def test_upload_resumes_and_verifies(pair, agent, tmp_path):
    src = tmp_path / "blob.bin"
    data = random.Random(1).randbytes(50_000)
    src.write_bytes(data)
    with connect(pair.b) as dev:
        sha = hashlib.sha256(data).hexdigest()
        assert dev.call("put_begin", {"name": "blob.bin", "size": len(data),
                                      "sha256": sha})["have"] == 0
        import zlib
        for off in range(0, 12_288, 4096):  # three chunks, then the host "vanishes"
            piece = data[off:off + 4096]
            dev.call("put_chunk", {"name": "blob.bin", "offset": off, "data": piece,
                                   "crc32": zlib.crc32(piece)})
        with pytest.raises(RemoteError) as e:
            dev.call("put_chunk", {"name": "blob.bin", "offset": 12_288, "data": b"x",
                                   "crc32": 0})
        assert e.value.code == "crc"
        with pytest.raises(RemoteError) as e:
            dev.call("put_begin", {"name": "../etc/passwd", "size": 1, "sha256": sha})
        assert e.value.code == "bad_args"
    seen = []
    with connect(pair.b) as dev:
        out = dev.upload(src, "blob.bin", progress=lambda done, total: seen.append(done))
    assert seen[0] == 12_288 and seen[-1] == len(data)
    assert out["sha256"] == sha
    assert (tmp_path / "state" / "staging" / "blob.bin").read_bytes() == data


def test_clear_errors(pair, agent, tmp_path, monkeypatch):
    with pytest.raises(PortMissing, match="does not exist"):
        connect(str(tmp_path / "ttyNOPE"))
    with serial.Serial(pair.b, exclusive=True), pytest.raises(PortBusy, match="busy"):
        connect(pair.b)
    # a pty pair with nobody on the other end: no answer
    other = PtyPair(tmp_path, f"q{os.getpid()}")
    try:
        with pytest.raises(NoAnswer, match="nothing came back"):
            connect(other.b, timeout=0.1, retries=1)
        # something that talks, but not hushlink (or at the wrong baud rate): it answers
        # every request with line noise. Answering (not writing ahead) matters: opening the
        # port flushes whatever arrived before, so pre-written noise would race the open.
        with serial.Serial(other.a, timeout=0.02) as noisy:
            stop = threading.Event()

            def babble():
                while not stop.is_set():
                    if noisy.read(64):
                        noisy.write(b"\xfe\x13" * 200 + b"\x00")

            talker = threading.Thread(target=babble, daemon=True)
            talker.start()
            try:
                with pytest.raises(NoAnswer, match="were not hushlink frames"):
                    connect(other.b, timeout=0.1, retries=1)
            finally:
                stop.set()
                talker.join(2)
    finally:
        other.stop()
    monkeypatch.setattr(P, "PROTOCOL_VERSION", 99)
    with pytest.raises(VersionMismatch, match="protocol 99"):
        connect(pair.b)


def test_survives_garbage_partial_frames_and_vanishing_host(pair, agent):
    link = open_link(pair.b)
    link.write(random.Random(2).randbytes(20_000))  # line noise, oversize packets
    link.write(P.request(7, "get_info")[:9])  # a host that dies mid-frame
    link.close()
    with connect(pair.b) as dev:
        assert dev.get_info()["device_id"] == dev.info["device_id"]
    assert agent.alive()


def test_naks_for_earlier_noise_do_not_use_up_retries(pair):
    """A burst of NAKs (the device's answers to line noise that reached it before our
    request) makes the host resend, not give up: only silences use up the retry budget."""
    dev = serial.Serial(pair.a, timeout=0.02)
    requests: list[int] = []

    def device():
        dec = P.FrameDecoder()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for fr in dec.feed(dev.read(256)):
                requests.append(fr.seq)
                if len(requests) <= 12:  # still chewing through the noise: one NAK a read
                    dev.write(P.encode_frame(P.Kind.NAK, 0))
                else:
                    dev.write(P.response_ok(fr.seq, "pong"))
                    return

    t = threading.Thread(target=device, daemon=True)
    t.start()
    link = open_link(pair.b)
    try:
        rpc = Requester(link, timeout=0.5, retries=2)
        assert rpc.call("ping") == "pong"
        assert rpc.stats.naks >= 10 and rpc.stats.timeouts == 0
        assert len(set(requests)) == 1  # every resend carried the same seq
    finally:
        link.close()
        t.join(5)
        dev.close()


def test_unplug_and_replug(pair, agent):
    with connect(pair.b) as dev:
        did = dev.info["device_id"]
    pair.stop()  # cable out: both ptys vanish
    time.sleep(0.5)
    pair.start()  # cable in
    deadline = time.monotonic() + 10
    while True:
        try:
            with connect(pair.b, timeout=0.2, retries=2) as dev:
                assert dev.info["device_id"] == did
                break
        except NoAnswer:
            assert time.monotonic() < deadline, agent.log.read_text()
    assert agent.alive()


def test_plugin_handlers_and_info(pair, tmp_path):
    """A module registers its own messages (as edge/flashdev.py does) without editing the
    agent: the handler decorator, a slow handler (ACK first) and the setup_agent hook."""
    mod = f"hlplugin{os.getpid()}"
    (tmp_path / f"{mod}.py").write_text(
        "from edge.agent import RemoteFailure, arg, handler\n"
        "@handler('demo.size', slow=True)\n"
        "def size(agent, args):\n"
        "    return agent.staged_file(arg(args, 'name', str)).stat().st_size\n"
        "@handler('demo.fail')\n"
        "def fail(agent, args):\n"
        "    raise RemoteFailure('demo', 'as asked')\n"
        "def setup_agent(agent):\n"
        "    agent.info_providers['demo'] = lambda: {'slots': ['a', 'b']}\n")
    a = AgentProc(pair.a, tmp_path / "state", "--plugin", mod,
                  env={"PYTHONPATH": str(tmp_path)})
    try:
        src = tmp_path / "x.bin"
        src.write_bytes(b"12345")
        with connect(pair.b) as dev:
            assert dev.info["demo"] == {"slots": ["a", "b"]}
            assert "demo.size" in dev.info["messages"]
            dev.upload(src, "x.bin")
            assert dev.call("demo.size", {"name": "x.bin"}) == 5
            with pytest.raises(RemoteError) as e:
                dev.call("demo.size", {"name": "missing.bin"})
            assert e.value.code == "not_found"
            with pytest.raises(RemoteError) as e:
                dev.call("demo.fail")
            assert e.value.code == "demo" and "as asked" in str(e.value)
    finally:
        a.stop()


def test_probe_cli(pair, agent):
    from host.cli import cli

    r = CliRunner().invoke(cli, ["probe", pair.b, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["profile"] == "generic-linux"
    r = CliRunner().invoke(cli, ["probe", pair.b + "-missing"])
    assert r.exit_code == 1 and r.output.startswith("Error:") and "does not exist" in r.output


@pytest.mark.slow
def test_corrupting_relay_10000_exchanges(tmp_path):
    """Host <-> pty pair <-> relay (1% of bytes flipped, dropped or doubled with an inserted
    byte, each way) <-> pty pair <-> agent. No corrupted frame is accepted, every request
    succeeds, the agent lives."""
    tag = f"r{os.getpid()}"
    host_side, dev_side = PtyPair(tmp_path, tag + "h"), PtyPair(tmp_path, tag + "d")
    agent = AgentProc(dev_side.a, tmp_path / "state")
    relay = Relay(host_side.a, dev_side.b, 0.01, seed=8)
    try:
        link = open_link(host_side.b, timeout=0.002)
        rpc = Requester(link, timeout=0.05, retries=200, seed=1)
        rng = random.Random(3)
        for i in range(10_000):
            payload = {"i": i, "d": rng.randbytes(rng.randrange(1, 12))}
            assert rpc.call("echo", payload) == payload
        link.close()
        assert agent.alive()
        stats = relay.stop()
        hits = dict(kv.split("=") for kv in stats.split())
        assert int(hits["flip"]) > 1000 and int(hits["drop"]) > 1000
        assert rpc.stats.retries > 1000  # the corruption really happened and was recovered
        print(f"relay: {stats}; host: {rpc.stats}; bad frames seen by host: "
              f"{link.decoder.stats.bad}")
    finally:
        relay.stop()
        agent.stop()
        host_side.stop()
        dev_side.stop()


def test_stream_control_restarts_with_new_params(pair, tmp_path):
    """start_stream runs --stream-cmd with the active parameters, restarts it when they
    change, stop_stream ends it."""
    out = tmp_path / "runs.txt"
    script = tmp_path / "fake_stream.py"
    script.write_text("import sys, time\n"
                      f"open({str(out)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
                      "time.sleep(60)\n")
    a = AgentProc(pair.a, tmp_path / "state", "--stream-cmd",
                  f"{sys.executable} {script} {{bitrate_kbps}} {{protocol}} {{buffer_ms}}")
    try:
        def runs(n):
            deadline = time.monotonic() + 20
            while len(out.read_text().splitlines() if out.exists() else []) < n:
                assert time.monotonic() < deadline, a.log.read_text()
                time.sleep(0.05)
            return out.read_text().splitlines()

        with connect(pair.b) as dev:
            assert dev.start_stream() == {"running": True}
            assert runs(1) == ["64 udp 200"]
            dev.set_params(buffer_ms=250, bitrate_kbps=80)
            dev.apply(timeout_s=0)
            assert runs(2) == ["64 udp 200", "80 udp 250"]
            assert dev.stop_stream() == {"running": False}
    finally:
        a.stop()


def test_socket_url(tmp_path):
    """A device reachable over TCP (ser2net-style bridge): the host uses socket://."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    link = str(tmp_path / f"s{os.getpid()}")
    bridge = subprocess.Popen(["socat", f"tcp-listen:{port},bind=127.0.0.1,reuseaddr",
                               f"pty,raw,echo=0,link={link}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # socat creates the pty once a TCP client is there: connect first, then the agent
        for _ in range(50):
            try:
                ln = open_link(f"socket://127.0.0.1:{port}")
                break
            except LinkError:
                time.sleep(0.1)
        _wait_path(link)
        a = AgentProc(link, tmp_path / "state")
        try:
            rpc = Requester(ln, timeout=0.5, retries=5)
            assert rpc.call("hello", {"version": P.PROTOCOL_VERSION})["protocol"] == 1
            assert rpc.call("echo", {"x": b"\x00\x01"}) == {"x": b"\x00\x01"}
        finally:
            ln.close()
            a.stop()
    finally:
        bridge.terminate()
        bridge.wait(5)


def _wait_path(path: str) -> None:
    deadline = time.monotonic() + 5
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_agent_in_process_dedup_and_wide_telemetry(tmp_path):
    """Frames handed straight to an Agent: a resent seq is answered from the cache, never
    executed twice; telemetry too wide for one frame is paged in fewer rows."""
    import zlib

    from edge.agent import Agent, MemoryTelemetry

    mem = MemoryTelemetry()
    for i in range(100):
        mem.push({"t": float(i), **{f"x{j}": 1.5 + j for j in range(40)}})
    ag = Agent("loop://", state_dir=tmp_path / "st", telemetry=mem, log=lambda m: None)

    def ask(seq, method, args):
        fr = P.FrameDecoder().feed(P.request(seq, method, args))[0]
        return P.FrameDecoder().feed(ag.handle_frame(fr))[0].message()

    r = ask(1, "get_telemetry", {"window": 1e9})
    assert r["ok"] and 0 < len(r["r"]["rows"]) < 64 and r["r"]["more"]
    ask(2, "put_begin", {"name": "f", "size": 4, "sha256": "0" * 64})
    chunk = {"name": "f", "offset": 0, "data": b"ab", "crc32": zlib.crc32(b"ab")}
    assert ask(3, "put_chunk", chunk)["r"] == {"have": 2}
    assert ask(3, "put_chunk", chunk)["r"] == {"have": 2}  # the resend: same answer
    assert (tmp_path / "st" / "staging" / ".f.part").read_bytes() == b"ab"  # written once
    assert ask(4, "put_chunk", chunk)["r"] == {"have": 2}  # a new seq for old data: idempotent
    bad = ask(5, "put_chunk", {**chunk, "offset": 3})
    assert bad["e"] == "offset"
