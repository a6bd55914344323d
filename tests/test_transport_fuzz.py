"""Fuzz tests (hypothesis) for the RTP/RTCP parser, the sequence tracker, the jitter buffer and
the receiver's and sender's packet handlers: generated and mutated packets raise nothing but
RtpError, and no input corrupts state (a clean stream afterwards still plays whole, no slot
ever plays another packet's data). Runs in a few seconds."""

from __future__ import annotations

import json
import math
import socket
import struct
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.params import TransportParams
from edge.transport import rtp
from edge.transport.jitter import MAX_AHEAD_S, JitterBuffer
from edge.transport.receiver import Receiver
from edge.transport.sender import Sender, send_file
from edge.transport.seqstate import MAX_DROPOUT, MAX_MISORDER, SeqTracker
from edge.transport.stats import LossCounter

FAST = settings(max_examples=600, deadline=None)
SLOWER = settings(max_examples=250, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.function_scoped_fixture])

VALID = rtp.RtpPacket(seq=65535, timestamp=123, ssrc=0xCAFE, payload=b"\xf8\xff\xfe" * 20,
                      send_ns=1, bitrate_kbps=64, allocated_kbps=64).pack()
BYE = rtp.pack_app(rtp.APP_BYE, 0xCAFE, {"first": 1, "last": 9}, pt=rtp.RTCP_BYE)
APP = rtp.pack_app(rtp.APP_TELEMETRY, 0xCAFE, {"t": 1.0, "latency_ms": 1.0, "loss_pct": 1.0,
                                               "jitter_ms": 1.0, "bandwidth_util": 1.0,
                                               "snr_db": 1.0})


@st.composite
def mutated(draw, base=st.sampled_from([VALID, BYE, APP])):
    """A valid packet with bytes overwritten, cut off or appended."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 6))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=8))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                               max_size=4),
    max_leaves=12)


@st.composite
def rtcp_bodies(draw):
    """An APP/BYE packet around a JSON value, or around raw bytes (not JSON, deep nesting)."""
    name = draw(st.sampled_from([rtp.APP_BYE, rtp.APP_TELEMETRY, b"XXXX"]))
    pt = draw(st.sampled_from([rtp.RTCP_BYE, rtp.RTCP_APP, 200]))
    ssrc = draw(st.sampled_from([0xCAFE, 1]))
    fields = draw(st.sampled_from(["bye", "tel", "any"]))
    if fields == "bye":
        obj = {"first": draw(json_values), "last": draw(json_values)}
    elif fields == "tel":
        obj = {k: draw(json_values) for k in ("t", "latency_ms", "loss_pct", "jitter_ms",
                                                "bandwidth_util", "snr_db", "late")}
    else:
        obj = draw(json_values)
    if draw(st.booleans()):
        body = json.dumps(obj).encode()
    else:
        body = draw(st.sampled_from([b"[" * 1200, b"\xff\xfe", b'{"a":' * 600]))
    body += b" " * (-len(body) % 4)
    return struct.pack("!BBHI4s", 0x80, pt, (12 + len(body)) // 4 - 1, ssrc, name) + body


packets = st.one_of(st.binary(max_size=1600), mutated(), rtcp_bodies())


# ----------------------------------------------------------------- parser
@FAST
@given(data=packets)
def test_rtp_and_rtcp_parsers_raise_only_rtp_error(data):
    rtp.is_rtcp(data)
    try:
        p = rtp.parse_rtp(data)
    except rtp.RtpError:
        pass
    else:
        assert 0 <= p.seq <= 0xFFFF and 0 < len(p.payload) <= len(data) <= rtp.MAX_PACKET
    try:
        pt, name, ssrc, obj = rtp.parse_app(data)
    except rtp.RtpError:
        pass
    else:
        assert isinstance(obj, dict) and len(name) == 4 and 192 <= pt <= 223


def test_deeply_nested_rtcp_json_is_an_rtp_error():
    """json raised RecursionError for '[[[[...' and killed the sender's back channel."""
    body = b"[" * 1200
    data = struct.pack("!BBHI4s", 0x80, rtp.RTCP_APP, (12 + len(body)) // 4 - 1, 1,
                       rtp.APP_TELEMETRY) + body
    with pytest.raises(rtp.RtpError, match="JSON"):
        rtp.parse_app(data)


@FAST
@given(chunks=st.lists(st.binary(max_size=300), max_size=20))
def test_deframer_takes_any_byte_stream(chunks):
    d = rtp.Deframer(max_packet=200)
    for c in chunks:
        for f in d.feed(c):
            assert len(f) <= 200
    assert len(d._buf) < 2 + 0xFFFF


# ----------------------------------------------------------------- sequence tracker
SRCS = [("10.0.0.1", 5004), ("10.0.0.1", 5005), ("10.0.0.2", 5004), None]
track_ops = st.lists(st.one_of(
    st.tuples(st.just("next"), st.integers(1, 4), st.floats(0, 0.1)),  # the line, with loss
    st.tuples(st.just("jump"), st.integers(-0x8000, 0x7FFF), st.floats(0, 0.1)),
    st.tuples(st.just("other"), st.integers(0, 0xFFFF), st.floats(0, 0.1)),
    st.tuples(st.just("wait"), st.just(0), st.floats(0, 3.0)),
), max_size=150)


@settings(max_examples=400, deadline=None)
@given(ops=track_ops, seq0=st.integers(0, 0xFFFF), ssrc=st.sampled_from([1, 2, 3]),
       src=st.sampled_from(SRCS), rnd=st.randoms(use_true_random=False))
def test_seq_tracker_never_corrupts_its_numbering(ops, seq0, ssrc, src, rnd):
    tr = SeqTracker(0.02, 1.0)
    t, seq, fed, given_back = 0.0, seq0, 0, set()
    for op, v, dt in ops:
        t += dt
        if op in ("next", "jump"):
            seq = (seq + v) & 0xFFFF
        if op == "wait":
            continue
        key = (ssrc, src) if op != "other" else (rnd.choice([1, 2, 3]), rnd.choice(SRCS))
        s = seq if op != "other" else v
        top = tr.top
        out = tr.packet(*key, s, t, fed)
        fed += 1
        exts = [e for e, _ in out]
        assert exts == sorted(exts)
        for e, item in out:
            assert item not in given_back and 0 <= item < fed  # each packet once, never made up
            given_back.add(item)
            if top is not None:
                assert top - MAX_MISORDER <= e <= top + MAX_DROPOUT
        c = tr.counts
        assert min(c.values()) >= 0
    # no state corruption: after 2 s of silence a new sender's clean stream passes whole
    top = tr.top
    t += 2.0
    got = []
    start = rnd.randrange(0x10000)
    for k in range(100):
        got += [e for e, _ in tr.packet(99, ("10.9.9.9", 9), (start + k) & 0xFFFF,
                                         t + k * 0.02)]
    first = start if top is None else top + 1
    assert got == list(range(first, first + 100))
    loss = LossCounter()
    for e in got:
        loss.add(e)
    assert loss.lost == 0 and tr.ssrc == 99


# ----------------------------------------------------------------- jitter buffer
jb_ops = st.lists(st.one_of(
    st.tuples(st.just("push"), st.integers(-40, 120), st.floats(0, 0.2)),
    st.tuples(st.just("far"), st.integers(-30_000, 30_000), st.floats(0, 0.2)),
    st.tuples(st.just("pop"), st.just(0), st.floats(0, 3.0)),
    st.tuples(st.just("end"), st.integers(-50, 200), st.just(0.0)),
    st.tuples(st.just("bound"), st.integers(100, 500), st.just(0.0)),
    st.tuples(st.just("flush"), st.just(0), st.just(0.0)),
), max_size=200)


def _check(slots, pushed):
    """No slot plays data that is not its own: packet/discard carry the packet pushed for that
    number, fec the next one's."""
    for s in slots:
        assert s.kind in ("packet", "fec", "plc", "discard")
        if s.kind in ("packet", "discard"):
            assert s.seq in pushed and s.payload == b"%d" % s.seq
        elif s.kind == "fec":
            assert s.payload == b"%d" % (s.seq + 1)
        else:
            assert s.payload is None


@settings(max_examples=400, deadline=None)
@given(ops=jb_ops, fec=st.booleans(), bound=st.integers(100, 500))
def test_jitter_buffer_never_plays_wrong_data_and_recovers(ops, fec, bound):
    jb = JitterBuffer(bound, fec=fec)
    t, base, pushed, played = 0.0, 0, set(), set()
    last_seq, resyncs = None, 0
    for op, v, dt in ops:
        t += dt
        if op in ("push", "far"):
            ext = base + v
            assert jb.push(ext, b"%d" % ext, t) in ("ok", "late", "duplicate")
            pushed.add(ext)
            base = max(base, ext)
        elif op == "end":  # the receiver's BYE range is validated: near the newest packet
            jb.set_end((base if jb._newest is None else jb._newest) + v)
        elif op == "bound":
            jb.set_bound(v)
        slots = jb.flush() if op == "flush" else jb.pop(t)
        _check(slots, pushed)
        if jb.resyncs != resyncs:
            last_seq, resyncs = None, jb.resyncs
        for s in slots:
            if s.kind in ("packet", "discard"):
                assert s.seq not in played  # no packet plays twice
                played.add(s.seq)
            # playout goes back only to restart after a stall at a packet newer than all
            # that played, over slots that were concealed (the grow step repeats a number)
            if last_seq is not None and s.seq < last_seq:
                assert s.kind == "packet" and s.seq > max(played - {s.seq}, default=-1)
            last_seq = s.seq
        assert jb.buffered <= MAX_AHEAD_S / jb.frame + 1
        assert jb.min_s <= jb.target_s <= jb.max_s and math.isfinite(jb.delay_ms)
    # recovery: a new talk spurt far ahead plays whole
    t += 100.0
    start = base + 100_000
    out = []
    jb.end_seq = None
    for k in range(50):
        jb.push(start + k, b"%d" % (start + k), t + k * 0.02)
        pushed.add(start + k)
        if k == 0:
            jb.set_end(start + 49)
        out += jb.pop(t + k * 0.02)
    for k in range(100):
        out += jb.pop(t + 1.0 + k * 0.02)
    _check(out, pushed)
    assert {s.seq for s in out if s.kind in ("packet", "discard")} == set(
        range(start, start + 50))
    assert jb.finished


# ----------------------------------------------------------------- receiver and sender
@pytest.fixture(scope="module")
def rx():
    r = Receiver("127.0.0.1:0", TransportParams(), keep_audio=False)
    yield r
    r.close()


@SLOWER
@given(data=packets, src=st.sampled_from(SRCS))
def test_receiver_survives_any_datagram(rx, data, src):
    rx._on_datagram(data, time.time_ns(), src)
    assert all(t.is_alive() for t in rx._threads)
    assert min(v for v in rx.summary().values() if isinstance(v, int)) >= 0


@SLOWER
@given(data=packets)
def test_sender_back_channel_survives_any_datagram(data):
    tx = _sender()
    tx._on_rtcp(data)
    assert tx.rtcp + tx.rtcp_bad >= 1 and tx._rx.is_alive()
    assert 0 <= tx.measured_loss_pct <= 100 and 0 <= tx._enc.loss_pct <= 100


_TX = []


def _sender() -> Sender:
    if not _TX:
        _TX.append(Sender("udp://127.0.0.1:9", TransportParams()))
    return _TX[0]


def teardown_module():
    for tx in _TX:
        tx.close()
    _TX.clear()


@pytest.mark.parametrize("loss", ["\"1.5\"", "true", "1e308", "NaN", "-5", "Infinity", "[1]"])
def test_sender_rejects_telemetry_it_cannot_use(loss):
    """Text, huge, NaN or negative loss raised inside the back-channel thread (TypeError,
    OverflowError in ceil) and stopped it for good."""
    body = ('{"t":1,"latency_ms":1,"loss_pct":' + loss
            + ',"jitter_ms":1,"bandwidth_util":1,"snr_db":1}').encode()
    body += b" " * (-len(body) % 4)
    data = struct.pack("!BBHI4s", 0x80, rtp.RTCP_APP, (12 + len(body)) // 4 - 1, 1,
                       rtp.APP_TELEMETRY) + body
    tx = _sender()
    bad = tx.rtcp_bad
    tx._on_rtcp(data)
    assert tx.rtcp_bad == bad + 1 and 0 <= tx.measured_loss_pct <= 100


def test_receiver_still_plays_a_real_stream_after_garbage():
    """2,000 random and mutated datagrams (some valid RTP with random SSRCs, from several
    ports) and then a real sender: its stream is taken whole, nothing counted as lost."""
    rng = np.random.default_rng(7)
    rx = Receiver("127.0.0.1:0", TransportParams(), keep_audio=False)
    junk = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    try:
        for i in range(2000):
            kind = i % 3
            if kind == 0:
                data = rng.bytes(int(rng.integers(0, 200)))
            elif kind == 1:
                b = bytearray(VALID)
                b[2:4] = struct.pack("!H", int(rng.integers(0, 0x10000)))
                b[8:12] = struct.pack("!I", int(rng.integers(0, 4)))
                data = bytes(b)
            else:
                data = bytes(rng.choice([BYE, APP]))
            junk[i % 3].sendto(data, ("127.0.0.1", rx.port))
        time.sleep(1.2)  # whatever the junk locked onto falls silent
        with Sender(f"udp://127.0.0.1:{rx.port}", TransportParams()) as tx:
            send_file(np.zeros(100 * 320, np.float32), tx)
        assert rx.wait(5.0)
    finally:
        for s in junk:
            s.close()
        rx.close()
    s = rx.summary()
    assert s["received"] == s["expected"] >= 100 and s["lost"] == 0 and s["bye"] == 1
