"""Sender -> link emulator -> receiver over loopback with real sockets, Opus and threads:
telemetry against the emulator's ground truth, audio quality (PESQ-WB), runtime parameter
changes, a protocol switch, and bad input."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner
from pesq import pesq

from edge.audio import load_audio
from edge.params import TransportParams
from edge.transport.links import TransportError
from edge.transport.receiver import Receiver
from edge.transport.sender import Sender, send_file
from edge.transport.stats import align
from host.emulate import Impairment, start_emulator

SPEECH = "speech/vctk/p278/p278_003.flac"
SECONDS = 4.0

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def speech(shared_data):
    return load_audio(shared_data / SPEECH).samples[: int(SECONDS * 16_000)]


def stream(x, params, imp=None, proto="udp", during=None):
    """Send ``x`` through an emulator (zero impairment when ``imp`` is None) and wait for the
    receiver to play it out. ``during(sender, receiver, k)`` runs before each frame k."""
    rx = Receiver("127.0.0.1:0", params.replace(protocol=proto))
    emu = start_emulator(proto, "127.0.0.1:0", f"127.0.0.1:{rx.port}", imp or Impairment())
    tx = None
    try:
        tx = Sender(f"{proto}://127.0.0.1:{emu.listen[1]}", params.replace(protocol=proto))
        send_file(x, tx, on_frame=(lambda k, t: during(tx, rx, k)) if during else None)
        time.sleep(0.3)  # the last telemetry record reaches the sender
        tx.close()
        assert rx.wait(timeout=3.0), "the receiver never played out the sender's BYE"
    finally:
        if tx is not None:
            tx.close()
        rx.close()
        truth = emu.stop()
    return rx, tx, truth


def pesq_wb(ref, deg):
    return pesq(16_000, ref, align(ref, deg), "wb")


@pytest.fixture(scope="module")
def clean(speech):
    """One 64 kbit/s run over an unimpaired relay: the base latency and jitter of the path."""
    return stream(speech, TransportParams(bitrate_kbps=64, buffer_ms=200))


def test_clean_link_quality_duration_bitrate(speech, clean):
    rx, tx, truth = clean
    s = rx.summary()
    assert s["lost"] == 0 and s["expected"] == tx.packets == 200
    assert pesq_wb(speech, rx.audio()) >= 4.0
    assert abs(len(rx.audio()) - len(speech)) <= 0.2 * 16_000  # +- one buffer
    wire_kbps = 8 * tx.bytes / SECONDS / 1000
    assert wire_kbps == pytest.approx(64, rel=0.10)
    assert 8 * truth["rtp"]["bytes_in"] / SECONDS / 1000 == pytest.approx(64, rel=0.10)
    # capacity probes come on top (with APP_PARAMS and BYE): 3 startup trains + one, at most
    # 4 x 600 bytes each
    assert 0 < tx.probe_bytes < truth["bytes_in"] - truth["rtp"]["bytes_in"]
    assert tx.probe_bytes <= 4 * 4 * 600
    per_s = [t for t in rx.telemetry.window(60) if t.bitrate_kbps > 0][1:-1]
    # per second: within 10% on average; single seconds may see a scheduling hiccup
    assert per_s and np.mean([t.bitrate_kbps for t in per_s]) == pytest.approx(64, rel=0.10)
    # utilisation: of the link's capacity, measured by the probes (far above the bitrate)
    assert all(t.capacity_kbps > 1000 for t in per_s)
    assert all(t.bandwidth_util == pytest.approx(t.bitrate_kbps / t.capacity_kbps)
               for t in per_s)
    assert all(t.bitrate_kbps == pytest.approx(64, rel=0.25) for t in per_s)
    # the back channel: the sender holds the receiver's telemetry
    assert len(tx.telemetry) >= 3 and tx.rtcp == len(tx.telemetry)
    assert [t.t for t in tx.telemetry.window(60)] == [t.t for t in rx.telemetry.window(60)][
        : len(tx.telemetry)]
    assert s["latency_ms_median"] < 5.0 and s["malformed"] == 0


def test_impaired_link_matches_ground_truth(speech, clean):
    base, base_truth = clean[0].summary(), clean[2]["rtp"]
    # the base path without the emulator's own holding time (every run's truth includes it)
    base_med = base["latency_ms_median"] - base_truth["delay_ms_median"]
    base_mean = base["latency_ms"] - base_truth["delay_ms_mean"]
    imp = Impairment(loss=0.05, delay_ms=40, jitter_ms=10, reorder=0.01, rate_kbit=300, seed=1)
    rx, tx, truth = stream(speech, TransportParams(bitrate_kbps=64, buffer_ms=200, fec=True),
                           imp)
    s, t = rx.summary(), truth["rtp"]
    assert t["dropped"] > 0
    assert s["loss_pct"] == pytest.approx(t["loss_pct"], abs=0.5)
    assert s["lost"] == t["dropped"]
    # mean and median: the median is robust to a few packets held up by a busy CPU
    assert s["latency_ms_median"] == pytest.approx(
        t["delay_ms_median"] + base_med, abs=2.0), (s, t, base)
    assert s["latency_ms"] == pytest.approx(t["delay_ms_mean"] + base_mean, abs=2.0)
    assert abs(s["jitter_ms"] - t["jitter_rfc3550_ms"]) <= 1.5 + base["jitter_ms"], (s, t)
    assert s["reordered"] == t["reordered"]
    assert s["fec"] > 0 and s["late"] <= 2
    assert pesq_wb(speech, rx.audio()) >= 3.0
    assert abs(len(rx.audio()) - len(speech)) <= 0.2 * 16_000
    per_s = rx.telemetry.window(60)
    assert sum(x.concealed for x in per_s) <= s["fec"] + s["plc"]
    assert all(35 < x.latency_ms < 100 for x in per_s if x.latency_ms == x.latency_ms)
    assert tx.stats()["loss_hint_pct"] >= 5


def test_tcp_stream(speech):
    rx, tx, truth = stream(speech, TransportParams(bitrate_kbps=96, buffer_ms=150),
                           Impairment(delay_ms=20, jitter_ms=5), proto="tcp")
    s = rx.summary()
    assert s["lost"] == 0 and s["connections"] == 1 and s["bye"] == 1
    assert s["latency_ms"] == pytest.approx(truth["delay_ms_mean"], abs=5.0)
    assert 8 * tx.bytes / SECONDS / 1000 == pytest.approx(96, rel=0.10)
    assert pesq_wb(speech, rx.audio()) >= 4.0
    assert len(tx.telemetry) >= 3


def test_bitrate_and_buffer_change_at_runtime(speech):
    changed = {}

    def during(tx, rx, k):
        if k == 75:  # 1.5 s in
            tx.update(tx.params.replace(bitrate_kbps=128))
            rx.update(rx.params.replace(buffer_ms=400))
            changed["t"] = time.time()

    rx, tx, _ = stream(speech, TransportParams(bitrate_kbps=64, buffer_ms=200), during=during)
    s = rx.summary()
    assert s["lost"] == 0 and rx.jb.resyncs == 0 and tx.reconnects == 0
    assert rx.jb.max_s == pytest.approx(0.4)
    after = [t for t in rx.telemetry.window(60) if t.t > changed["t"] + 1.0][:-1]
    assert after and np.mean([t.bitrate_kbps for t in after]) == pytest.approx(128, rel=0.10)
    before = [t for t in rx.telemetry.window(60) if t.t < changed["t"]]
    assert before and np.mean([t.bitrate_kbps for t in before]) == pytest.approx(64, rel=0.10)
    assert tx.stats()["codec_bps"] == 128_000 - 12_800
    assert pesq_wb(speech, rx.audio()) >= 3.5


def test_protocol_switch_reconnects_within_a_second(speech):
    def during(tx, rx, k):
        if k == 75:
            rx.update(rx.params.replace(protocol="tcp"))
            tx.update(tx.params.replace(protocol="tcp"))

    rx = Receiver("127.0.0.1:0", TransportParams())
    tx = Sender(f"udp://127.0.0.1:{rx.port}", TransportParams())
    try:
        send_file(speech, tx, on_frame=lambda k, t: during(tx, rx, k))
        tx.close()
        assert rx.wait(3.0)
    finally:
        tx.close()
        rx.close()
    s = rx.summary()
    assert rx.proto == "tcp" and s["connections"] == 1 and s["bye"] == 1
    assert s["lost"] <= 50  # at most one second of packets (50/s) lost while switching
    assert s["received"] >= 150
    assert abs(len(rx.audio()) - len(speech)) <= 0.2 * 16_000


def _rtp(seq, pt=111, payload=b"\xf8\xff\xfe", ssrc=1):
    return struct.pack("!BBHII", 0x80, pt, seq, seq * 960, ssrc) + payload


def test_bad_input_is_counted_and_survived(speech, caplog):
    rx = Receiver("127.0.0.1:0", TransportParams())
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for data in [b"", b"\x00", b"hello world, not rtp", b"\x80\xc8" + bytes(30),
                     _rtp(1, pt=0), _rtp(2, pt=96), b"\x80\x6f" + bytes(3000),
                     bytes(60000), _rtp(3, payload=b"\xff\xff\xff\xff")]:
            s.sendto(data, ("127.0.0.1", rx.port))
        time.sleep(0.5)
        # the same port still takes a real stream afterwards (a new SSRC takes over)
        tx = Sender(f"udp://127.0.0.1:{rx.port}", TransportParams())
        time.sleep(1.1)
        send_file(speech[:16_000], tx)
        tx.close()
        assert rx.wait(3.0)
    finally:
        s.close()
        rx.close()
    c = rx.summary()
    assert c["wrong_pt"] == 2 and c["oversized"] == 2
    assert c["malformed"] >= 4
    assert c["received"] >= 50 and c["decode_errors"] <= 1
    assert "dropped" in caplog.text


def test_vanished_peers_are_survived(speech):
    # TCP receiver disappears mid-stream, comes back: the sender reconnects, never raises
    rx = Receiver("127.0.0.1:0", TransportParams(protocol="tcp"))
    port = rx.port
    tx = Sender(f"tcp://127.0.0.1:{port}", TransportParams(protocol="tcp"))
    rx2 = None
    try:
        send_file(speech[:8000], tx)
        rx.close()
        send_file(speech[:8000], tx)
        assert tx.send_errors + tx.dropped > 0
        rx2 = Receiver(f"127.0.0.1:{port}", TransportParams(protocol="tcp"))
        send_file(speech[:16000], tx)
        tx.close()
        assert rx2.wait(3.0) and rx2.summary()["received"] >= 30
        assert tx.reconnects >= 1
    finally:
        tx.close()
        rx.close()
        if rx2:
            rx2.close()
    # UDP receiver gone: ICMP errors are counted, nothing raises
    rx = Receiver("127.0.0.1:0", TransportParams())
    port = rx.port
    rx.close()
    with Sender(f"udp://127.0.0.1:{port}", TransportParams()) as tx:
        send_file(speech[:8000], tx, realtime=False)
    assert tx.packets + tx.send_errors == 25
    # the sender vanishes without BYE: the receiver conceals 100 ms, then waits
    rx = Receiver("127.0.0.1:0", TransportParams())
    tx = Sender(f"udp://127.0.0.1:{rx.port}", TransportParams())
    send_file(speech[:8000], tx)
    tx._link.close()
    time.sleep(0.8)
    rx.close()
    s = rx.summary()
    assert s["received"] == 25 and s["plc"] <= 5 and not rx.done.is_set()


def test_port_in_use_is_a_clear_error():
    from edge.cli import cli

    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", 0))
    port = blocker.getsockname()[1]
    try:
        with pytest.raises(TransportError, match="already in use"):
            Receiver(f"127.0.0.1:{port}", TransportParams())
        r = CliRunner().invoke(cli, ["receive", "--listen", f"127.0.0.1:{port}",
                                     "--duration", "0.1"])
    finally:
        blocker.close()
    assert r.exit_code == 1
    assert r.output.strip().splitlines()[-1].startswith("Error: udp://127.0.0.1:")
    assert "Traceback" not in r.output


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_send_receive_record_and_telemetry(shared_data, tmp_path, speech):
    from edge.cli import cli

    wav = tmp_path / "in.wav"
    import soundfile as sf

    sf.write(wav, speech[:32_000], 16_000)
    port = _free_port()
    out, rx_tel, tx_tel = tmp_path / "out.wav", tmp_path / "rx.jsonl", tmp_path / "tx.jsonl"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "edge", "receive", "--listen",
                             f"127.0.0.1:{port}", "--record", str(out), "--telemetry",
                             str(rx_tel), "--json", "--duration", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert "listening" in proc.stderr.readline()
        r = CliRunner().invoke(cli, ["send", str(wav), "--to", f"udp://127.0.0.1:{port}",
                                     "--bitrate", "80", "--telemetry", str(tx_tel), "--json"])
        assert r.exit_code == 0, r.output
        sent = json.loads(r.output.strip().splitlines()[-1])
        assert sent["packets"] == 100 and sent["codec_bps"] == 80_000 - 12_800
        summary = json.loads(proc.communicate(timeout=15)[0].strip().splitlines()[-1])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert summary["received"] == 100 and summary["lost"] == 0
    assert sf.info(out).duration == pytest.approx(2.0, abs=0.2)
    rows = [json.loads(x) for x in rx_tel.read_text().splitlines()]
    assert len(rows) >= 2 and {"latency_ms", "loss_pct", "jitter_ms", "bandwidth_util",
                                "snr_db", "late", "concealed"} <= set(rows[0])
    assert tx_tel.exists() and len(tx_tel.read_text().splitlines()) >= 1
    r = CliRunner().invoke(cli, ["send", str(wav), "--to", "udp://127.0.0.1:9",
                                 "--bitrate", "300"])
    # an option outside its range is a usage error (exit 2) naming the range
    assert r.exit_code == 2 and "300 is out of range 50..200" in r.output


def test_network_sink_interface(speech):
    """What the live loop uses: NetworkSink(url, params).write(block) with any block size."""
    from edge.transport.sender import NetworkSink

    got = []
    rx = Receiver("127.0.0.1:0", TransportParams(), on_audio=got.append, keep_audio=False)
    try:
        sink = NetworkSink(f"udp://127.0.0.1:{rx.port}", TransportParams(bitrate_kbps=50))
        t0 = time.monotonic()
        for k, i in enumerate(range(0, 16_000, 256)):  # 16 ms blocks, not 20 ms frames
            time.sleep(max(0.0, t0 + 0.016 * (k + 1) - time.monotonic()))
            sink.write(speech[i:i + 256])
        sink.close()
        assert rx.wait(3.0)
    finally:
        rx.close()
    s = rx.summary()
    n = -(-63 * 256 // 320)  # 63 blocks; the last partial frame is zero padded on close
    assert s["lost"] == 0 and s["received"] == n
    assert len(got) == n + s["plc"] + s["inserted"] - s["discarded"]
    assert s["plc"] + s["inserted"] + s["discarded"] <= 3
    assert all(f.shape == (320,) and f.dtype == np.float32 for f in got)


def test_threads_do_not_leak():
    before = threading.active_count()
    rx = Receiver("127.0.0.1:0", TransportParams())
    tx = Sender(f"udp://127.0.0.1:{rx.port}", TransportParams())
    tx.close()
    rx.close()
    time.sleep(0.3)
    assert threading.active_count() <= before


def test_rtp_timestamps_follow_the_media_clock():
    """With the PTP time of each block, RTP timestamps are that time in 48 kHz ticks."""
    from edge.transport import rtp

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(1.0)
    t0 = 1_795_000_000_123_456_789
    try:
        with Sender(f"udp://127.0.0.1:{sock.getsockname()[1]}", TransportParams()) as tx:
            for k in range(3):  # 20 ms blocks stamped by the media clock
                tx.write(np.zeros(320, np.float32), t_ns=t0 + k * 20_000_000)
        got = [sock.recv(2000) for _ in range(3 + 3)]  # (the parameter announcements: RTCP)
        ts = [rtp.parse_rtp(p).timestamp for p in got if not rtp.is_rtcp(p)]
    finally:
        sock.close()
    first = (t0 * 48_000 // 1_000_000_000) & 0xFFFFFFFF
    assert ts == [first, first + 960, first + 1920]
