"""Jitter buffer logic with an injected clock: ordering, duplicates, late packets, FEC/PLC
choice, adaptive delay within its bounds, end of stream."""

from __future__ import annotations

import numpy as np
import pytest

from edge.transport.jitter import JitterBuffer

F = 0.02


def run(jb, arrivals, until, end=True):
    """arrivals: [(time, seq)]; returns the slots played, with their play times. With
    ``end`` the stream's last sequence number is announced (as the sender's BYE does)."""
    out = []
    events = sorted(arrivals)
    last = max(s for _, s in arrivals)
    t, i = 0.0, 0
    while t <= until:
        while i < len(events) and events[i][0] <= t:
            jb.push(events[i][1], b"p%d" % events[i][1], events[i][0])
            i += 1
            if end and jb.end_seq is None:
                jb.set_end(last)
        out += [(t, s) for s in jb.pop(t)]
        t = round(t + 0.001, 6)
    return out


def test_in_order_stream_plays_every_packet_after_the_target_delay():
    jb = JitterBuffer(buffer_ms=200)
    played = run(jb, [(k * F, k) for k in range(50)], 2.0)
    kinds = [s.kind for _, s in played]
    assert kinds == ["packet"] * 50
    assert [s.seq for _, s in played] == list(range(50))
    assert played[0][0] == pytest.approx(0.100, abs=0.0015)  # 100 ms initial target
    assert jb.late == jb.duplicates == jb.concealed == 0


def test_reordered_packets_take_their_slot_and_duplicates_are_dropped():
    jb = JitterBuffer(buffer_ms=200)
    arr = [(k * F, k) for k in range(30) if k not in (10, 11)]
    arr += [(11 * F + 0.03, 11), (10 * F + 0.05, 10), (12 * F + 0.001, 12)]
    played = run(jb, arr, 1.0)
    assert [s.seq for _, s in played] == list(range(30))
    assert all(s.kind == "packet" for _, s in played)
    assert jb.duplicates == 1


def test_missing_packet_uses_fec_of_the_next_one_else_plc():
    jb = JitterBuffer(buffer_ms=200, fec=True)
    played = run(jb, [(k * F, k) for k in range(20) if k not in (5, 12, 13)], 1.0)
    kinds = {s.seq: (s.kind, s.payload) for _, s in played}
    assert kinds[5] == ("fec", b"p6")  # decode the FEC data carried by packet 6
    assert kinds[12][0] == "plc" and kinds[13] == ("fec", b"p14")
    assert (jb.fec_frames, jb.plc_frames, jb.concealed) == (2, 1, 3)
    jb2 = JitterBuffer(buffer_ms=200, fec=False)
    run(jb2, [(k * F, k) for k in range(20) if k != 5], 1.0)
    assert (jb2.fec_frames, jb2.plc_frames) == (0, 1)


def test_late_packet_is_counted_and_not_played():
    jb = JitterBuffer(buffer_ms=100)
    arr = [(k * F, k) for k in range(30) if k != 8] + [(8 * F + 0.3, 8)]
    played = run(jb, arr, 1.0)
    assert jb.late == 1
    assert [s.kind for _, s in played if s.seq == 8] == ["fec"]


def test_numbers_past_16_bits_are_seamless():
    jb = JitterBuffer(buffer_ms=100)
    played = run(jb, [(k * F, 65530 + k) for k in range(20)], 1.0)
    assert [s.seq for _, s in played] == [65530 + k for k in range(20)]
    assert all(s.kind == "packet" for _, s in played)


@pytest.mark.parametrize("bound", [100, 250, 500])
def test_delay_adapts_to_jitter_but_stays_within_bounds(bound):
    rng = np.random.default_rng(3)
    jb = JitterBuffer(buffer_ms=bound)
    arr = [(k * F + rng.uniform(0, 0.3), k) for k in range(400)]  # 300 ms of jitter
    played = run(jb, arr, 9.0)
    assert jb.inserted > 0 or bound == 100
    assert 100 <= 1000 * jb.target_s <= bound
    assert jb.delay_ms <= bound + 20
    # more buffer -> fewer late packets
    assert jb.late <= 400
    assert len(played) >= 380


def test_less_jitter_shrinks_the_delay_by_discarding():
    jb = JitterBuffer(buffer_ms=500)
    jb.target_s = 0.5
    run(jb, [(k * F, k) for k in range(200)], 4.5)
    assert jb.discarded > 0
    assert 1000 * jb.target_s == pytest.approx(100)
    assert jb.delay_ms < 130


def test_runtime_bound_change_clamps_the_target():
    jb = JitterBuffer(buffer_ms=500)
    jb.target_s = 0.4
    jb.set_bound(150)
    assert jb.target_s == pytest.approx(0.15) and jb.max_s == pytest.approx(0.15)


def test_end_of_stream_stops_playout_and_flush_plays_the_rest():
    jb = JitterBuffer(buffer_ms=100)
    for k in range(10):
        jb.push(k, b"x", k * F)
    jb.set_end(9)
    assert not jb.finished
    out = jb.pop(10.0)
    assert len(out) == 10 and jb.finished
    assert jb.pop(20.0) == []
    jb2 = JitterBuffer()
    for k in range(5):
        jb2.push(k, b"x", 0.0)
    assert len(jb2.flush()) == 5


def test_playout_stalls_when_packets_stop_and_restarts_cleanly():
    jb = JitterBuffer(buffer_ms=100)
    run(jb, [(k * F, k) for k in range(10) if k != 8], 0.5, end=False)
    assert (jb.played, jb.plc_frames) == (15, 5)  # conceals 100 ms, then waits
    assert jb.pop(30.0) == []
    assert jb.push(8, b"x", 39.0) == "late"  # its slot was played already
    jb.push(12, b"x", 40.0)  # the sender is back: a new schedule from this packet, even
    out = jb.pop(40.1)  # though its slot was among the concealed ones
    assert [(s.kind, s.seq) for s in out] == [("packet", 12)]
    jb.pop(41.0)
    jb.push(20, b"x", 60.0)  # and again after the next pause
    out = jb.pop(60.1)
    assert [(s.kind, s.seq) for s in out] == [("packet", 20)]


def test_a_far_jump_resyncs():
    jb = JitterBuffer()
    jb.push(0, b"a", 0.0)
    jb.push(30_000, b"b", 0.02)
    assert jb.resyncs == 1 and jb.buffered == 1
