"""The user-space link emulator: seeded decisions, exact counts, real UDP/TCP relaying."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time

import pytest
from click.testing import CliRunner

from host.emulate import (
    EmulatorError,
    Impairment,
    LinkModel,
    TcpEmulator,
    UdpEmulator,
    parse_ms,
    parse_pct,
    parse_rate,
)


@pytest.mark.parametrize("f,s,v", [
    (parse_pct, "5%", 0.05), (parse_pct, "0.5%", 0.005), (parse_pct, "0.05", 0.05),
    (parse_pct, "20", 0.2), (parse_ms, "40ms", 40.0), (parse_ms, "0.04s", 40.0),
    (parse_ms, "10", 10.0), (parse_ms, "500us", 0.5), (parse_rate, "300kbit", 300.0),
    (parse_rate, "1mbit", 1000.0), (parse_rate, "64000bit", 64.0), (parse_rate, "300k", 300.0),
])
def test_units(f, s, v):
    assert f(s) == pytest.approx(v)


@pytest.mark.parametrize("f,s", [(parse_pct, "five"), (parse_ms, "40 parsecs"),
                                 (parse_rate, "fast")])
def test_bad_units_are_errors(f, s):
    with pytest.raises(EmulatorError):
        f(s)


def test_impairment_validation():
    with pytest.raises(EmulatorError, match="loss"):
        Impairment(loss=1.5)
    with pytest.raises(EmulatorError, match="delay"):
        Impairment(delay_ms=-1)


def _rtp(seq: int, size: int = 200) -> bytes:
    return struct.pack("!BBHII", 0x80, 111, seq, 0, 1) + bytes(size - 12)


def _feed(model, n=2000, gap=0.02):
    return [model.decide(i * gap, 200, i) for i in range(n)]


def test_model_is_seeded_and_counts_exactly():
    imp = Impairment(loss=0.05, delay_ms=40, jitter_ms=10, reorder=0.01, seed=7)
    a, b = LinkModel(imp), LinkModel(imp)
    da, db = _feed(a), _feed(b)
    assert da == db
    t = a.truth()
    dropped = sum(d is None for d in da)
    assert t["dropped_loss"] == dropped == t["rtp"]["dropped"]
    assert len(t["rtp"]["dropped_seqs"]) == dropped
    assert 3.5 < t["loss_pct"] < 6.5
    assert t["forwarded"] + dropped == 2000 == t["packets_in"]
    assert t["reorder_held"] > 5
    assert t["delay_ms_min"] >= 30 and t["delay_ms_max"] <= 50 + 50
    assert t["delay_ms_mean"] == pytest.approx(40 + 50 * t["reorder_held"] / t["forwarded"],
                                               abs=1.0)
    assert LinkModel(Impairment(loss=0.05, seed=8)).truth() != t
    assert _feed(LinkModel(Impairment(loss=0.05, seed=8))) != da


def test_rate_limit_queues_then_drops_tail():
    m = LinkModel(Impairment(rate_kbit=80, queue_ms=100))
    # 200 bytes every 10 ms = 160 kbit/s into an 80 kbit/s bottleneck
    d = [m.decide(i * 0.01, 200, i) for i in range(500)]
    t = m.truth()
    assert t["dropped_queue"] > 200 and t["dropped_loss"] == 0
    sent = [x for x in d if x is not None]
    rate = 8 * 200 * len(sent) / (sent[-1] - sent[0]) / 1000
    assert rate == pytest.approx(80, rel=0.05)
    assert t["delay_ms_max"] <= 100 + 20 + 1e-6  # queue bound + one packet's service time


def _udp_pair():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(0.5)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.settimeout(0.5)
    return tx, rx


def test_udp_relay_applies_delay_and_reports_truth(tmp_path):
    tx, rx = _udp_pair()
    truth = tmp_path / "truth.json"
    emu = UdpEmulator("127.0.0.1:0", f"127.0.0.1:{rx.getsockname()[1]}",
                      Impairment(loss=0.1, delay_ms=30, seed=3), truth)
    got = {}

    def collect():
        while True:
            try:
                data, src = rx.recvfrom(2000)
            except TimeoutError:
                return
            got[struct.unpack_from("!H", data, 2)[0]] = time.monotonic()
            rx.sendto(b"back", src)  # the reverse path is relayed untouched

    th = threading.Thread(target=collect)
    th.start()
    try:
        sent = {}
        for i in range(100):
            sent[i] = time.monotonic()
            tx.sendto(_rtp(i), emu.listen)
            time.sleep(0.002)
        th.join()
        assert tx.recvfrom(100)[0] == b"back"
    finally:
        t = emu.stop()
        tx.close()
        rx.close()
    assert sorted(set(range(100)) - set(got)) == sorted(t["rtp"]["dropped_seqs"])
    delays = [1000 * (got[i] - sent[i]) for i in got]
    assert min(delays) >= 29.5 and sum(delays) / len(delays) < 40
    on_disk = json.loads(truth.read_text())
    assert on_disk["rtp"]["dropped"] == t["rtp"]["dropped"] == 100 - len(got)
    assert on_disk["back_packets"] >= 1


def test_tcp_relay_keeps_order_and_delays(tmp_path):
    srv = socket.create_server(("127.0.0.1", 0))
    emu = TcpEmulator("127.0.0.1:0", f"127.0.0.1:{srv.getsockname()[1]}",
                      Impairment(delay_ms=20, jitter_ms=10, loss=0.5, seed=1))
    try:
        c = socket.create_connection(emu.listen)
        up, _ = srv.accept()
        payload = b"".join(struct.pack("!I", i) for i in range(2000))
        t0 = time.monotonic()
        for i in range(0, len(payload), 400):
            c.sendall(payload[i:i + 400])
            time.sleep(0.002)
        c.shutdown(socket.SHUT_WR)  # what is in flight is still delivered
        up.settimeout(2.0)
        buf = b""
        first = None
        while len(buf) < len(payload):
            chunk = up.recv(65536)
            if not chunk:
                break
            first = first or time.monotonic()
            buf += chunk
        up.sendall(b"ok")
        assert c.recv(10) == b"ok"
        c.close()
        up.close()
    finally:
        t = emu.stop()
        srv.close()
    assert buf == payload  # TCP: nothing lost, nothing reordered
    assert first - t0 >= 0.0095
    assert t["dropped_loss"] == 0 and t["reordered"] == 0 and t["delayed"] == t["forwarded"]


def test_cli_emulate_writes_truth_and_errors(tmp_path):
    from host.cli import cli

    truth = tmp_path / "t.json"
    r = CliRunner().invoke(cli, ["emulate", "--listen", "127.0.0.1:0", "--forward",
                                 "127.0.0.1:9", "--loss", "5%", "--delay", "40ms",
                                 "--jitter", "10ms", "--reorder", "1%", "--rate", "300kbit",
                                 "--seed", "1", "--truth", str(truth), "--duration", "0.2"])
    assert r.exit_code == 0, r.output
    t = json.loads(truth.read_text())
    assert t["impairment"]["loss"] == 0.05 and t["impairment"]["rate_kbit"] == 300
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", 0))
    try:
        r = CliRunner().invoke(cli, ["emulate", "--listen",
                                     f"127.0.0.1:{blocker.getsockname()[1]}",
                                     "--forward", "127.0.0.1:9", "--duration", "0.1"])
    finally:
        blocker.close()
    assert r.exit_code == 1 and "cannot listen" in r.output
    r = CliRunner().invoke(cli, ["emulate", "--listen", ":0", "--forward", "127.0.0.1:9",
                                 "--loss", "lots"])
    assert r.exit_code == 1 and "percentage" in r.output
