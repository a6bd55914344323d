"""Sequence validation and stream lock (edge/transport/seqstate.py), alone and as the receiver
uses it (tracker -> loss counter -> jitter buffer) in simulated time: every scenario of issue
18 items 1, 2 and 10 against its ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from edge.transport.jitter import JitterBuffer
from edge.transport.seqstate import (
    MAX_DROPOUT,
    MAX_MISORDER,
    SeqState,
    SeqTracker,
    seq_delta,
)
from edge.transport.telemetry import TelemetryMeter

F = 0.02
A = ("192.0.2.7", 40000)  # the sender's address
B = ("192.0.2.7", 40001)  # a restarted sender, or a forger on another port


class Pipe:
    """What Receiver._on_datagram and its playout thread do with each packet, in simulated
    time: SeqTracker -> TelemetryMeter (loss) and JitterBuffer; one telemetry record a second."""

    def __init__(self, peer=None) -> None:
        self.tr = SeqTracker(F, 1.0, peer)
        self.meter = TelemetryMeter()
        self.jb = JitterBuffer(200)
        self.frames = 0  # 20 ms frames played out (the recording's length)
        self.records = []

    def packet(self, t, ssrc, src, seq) -> None:
        for ext, t_arr in self.tr.packet(ssrc, src, seq, t, t):
            self.meter.packet(ext, 0, 0, int(t_arr * 1e9), 200)
            self.jb.push(ext, b"x", t_arr)

    def bye(self, ssrc, src, first, last) -> None:
        rng = self.tr.bye_range(ssrc, src, first & 0xFFFF, last & 0xFFFF)
        if rng is not None and self.jb.end_seq is None:
            self.meter.loss.close_range(*rng)
            self.jb.set_end(rng[1])

    def run(self, events, until: float) -> Pipe:
        """events: (t, kind, args) with kind 'rtp' (ssrc, src, seq) or 'bye' (ssrc, src,
        first, last)."""
        events = sorted(events, key=lambda e: e[0])
        i, t, next_rec = 0, 0.0, 1.0
        while t <= until:
            while i < len(events) and events[i][0] <= t:
                te, kind, args = events[i]
                (self.packet if kind == "rtp" else self.bye)(*((te, *args) if kind == "rtp"
                                                                else args))
                i += 1
            self.frames += sum(s.kind != "discard" for s in self.jb.pop(t))
            if t >= next_rec:
                self.records.append(self.meter.take(t, self.jb.late, self.jb.concealed, 64))
                next_rec += 1.0
            t = round(t + 0.005, 6)
        return self

    @property
    def seconds(self) -> float:
        return self.frames * F


def stream(n, seq0, ssrc=7, src=A, t0=0.0, drop=(), bye=True):
    """A paced sender: packet k leaves at t0 + k*20 ms (+5 ms on the wire); then its BYE."""
    ev = [(t0 + k * F + 0.005, "rtp", (ssrc, src, (seq0 + k) & 0xFFFF))
          for k in range(n) if k not in drop]
    if bye:
        ev.append((t0 + n * F + 0.006, "bye", (ssrc, src, seq0, seq0 + n - 1)))
    return ev


def drops(n, k, seed, keep=()):
    """``k`` lost packet indices out of ``n`` (never the first/last two, nor ``keep``)."""
    rng = np.random.default_rng(seed)
    pool = [i for i in range(2, n - 2) if i not in keep]
    return set(rng.choice(pool, k, replace=False).tolist())


# ----------------------------------------------------------------- issue 18 scenarios
def test_one_stray_copy_at_plus_500_changes_nothing():
    """Item 1: a copy of packet 200 with seq+500 (beyond the end of the 12 s stream). Before:
    4.7 s recorded, 399 late, 14 % loss on a loss-free link."""
    ev = stream(600, 1000)
    ev.append((200 * F + 0.006, "rtp", (7, A, 1000 + 200 + 500)))
    p = Pipe().run(ev, 13.5)
    loss = p.meter.loss
    assert (loss.expected, loss.received, loss.lost) == (600, 600, 0)
    assert p.jb.late == 0 and p.jb.plc_frames == 0 and p.jb.resyncs == 0
    assert p.seconds == pytest.approx(12.0, abs=0.1) and p.jb.finished
    assert p.tr.counts["stray"] == 1
    assert all(r.loss_pct == 0 for r in p.records)


@pytest.mark.parametrize("ahead", [3, 20, 60])
def test_a_small_stray_ahead_makes_no_packet_late(ahead):
    """A stray close enough to be taken for a gap still cannot pull the schedule forward."""
    ev = stream(300, 50)
    ev.append((100 * F + 0.006, "rtp", (7, A, 50 + 100 + ahead)))
    p = Pipe().run(ev, 7.0)
    assert p.jb.late == 0 and p.jb.resyncs == 0
    assert p.meter.loss.lost == 0 and p.seconds == pytest.approx(6.0, abs=0.1)


def test_a_jump_of_30000_is_a_resync_not_loss():
    """Item 2: the sender renumbers by +30000 after 300 of 1000 packets, 43 lost (4.3 %).
    Before: 98 % loss."""
    lost = drops(1000, 43, 1, keep=range(297, 304))
    ev = [e for e in stream(300, 100, drop=lost, bye=False)]
    ev += [(t + 300 * F, k, (s, src, (q + 30000) & 0xFFFF))
           for t, k, (s, src, q) in stream(700, 400, drop={d - 300 for d in lost if d >= 300},
                                           bye=False)]
    ev.append((1000 * F + 0.006, "bye", (7, A, 100, 100 + 30000 + 999)))
    p = Pipe().run(ev, 21.0)
    loss = p.meter.loss
    assert (loss.expected, loss.lost) == (1000, 43)
    assert loss.loss_pct() == pytest.approx(4.3)
    assert p.tr.counts["seq_resyncs"] == 1 and p.jb.resyncs == 0
    assert p.jb.late == 0 and p.seconds == pytest.approx(20.0, abs=0.1)
    assert max(r.loss_pct for r in p.records) < 15  # no second of 100 % loss


def test_one_stale_packet_at_minus_20000_is_dropped():
    """Item 2: truth 4.3 % loss; one stale packet 20000 behind. Before: 97 %."""
    lost = drops(1000, 43, 2)
    ev = stream(1000, 30000, drop=lost)
    ev.append((500 * F + 0.006, "rtp", (7, A, 30000 + 500 - 20000)))
    p = Pipe().run(ev, 21.0)
    loss = p.meter.loss
    assert (loss.expected, loss.lost) == (1000, 43) and loss.loss_pct() == pytest.approx(4.3)
    assert p.tr.counts["stray"] == 1 and p.jb.late == 0


@pytest.mark.parametrize("gap_s", [1.3, 0.4])
def test_sender_restart_with_a_new_ssrc_loses_nothing(gap_s):
    """Item 2: killed after 300 packets, restarted ``gap_s`` later (new SSRC, new port, new
    random sequence start that wraps). Before: 94 % loss, a second of 100 % loss. The new
    sender began after the old one fell silent, so it takes over at once: no packet refused
    (before the quiet rule, a restart within the 1 s takeover time lost up to 50 packets)."""
    ev = stream(300, 5000, ssrc=0xAAAA, src=A, bye=False)
    t1 = 300 * F + gap_s
    ev += stream(300, 65400, ssrc=0xBBBB, src=B, t0=t1)
    p = Pipe().run(ev, t1 + 8.0)
    loss, c = p.meter.loss, p.tr.counts
    assert loss.lost == 0 and c["streams"] == 2
    assert c["foreign_ssrc"] == 0 and loss.received == 600
    assert all(r.loss_pct == 0 for r in p.records)
    assert p.jb.finished and p.jb.late == 0
    assert p.seconds == pytest.approx(600 * F, abs=0.15)


def test_a_sender_that_overlapped_the_stream_waits_for_its_silence():
    """A second sender interleaved with a live stream is refused for as long as the stream
    goes on; once the stream fell silent, its next line that begins after the quiet time
    takes over."""
    ev = stream(100, 100, ssrc=1, src=A, bye=False)  # 0 .. 2 s
    ev += stream(200, 7000, ssrc=2, src=B, t0=1.0 + 0.01)  # 1.01 .. 5 s, overlapping
    p = Pipe().run(ev, 6.0)
    c = p.tr.counts
    assert c["streams"] == 2 and p.tr.ssrc == 2
    # refused from 1.01 s until a line began 0.1 s after the stream's last packet (~2.09 s)
    assert c["foreign_ssrc"] == pytest.approx((2.09 - 1.01) / F, abs=3)
    assert p.meter.loss.lost == 0


def test_forged_packets_from_another_port_are_foreign_and_do_not_hide_loss():
    """Item 10: a forger on another port sends the stream's SSRC with the numbers the link
    lost. Before: they were decoded and the reported loss fell to 0 %."""
    lost = drops(500, 50, 3)
    ev = stream(500, 9000, drop=lost)
    ev += [(k * F + 0.007, "rtp", (7, B, 9000 + k)) for k in sorted(lost)]
    for peer in (None, (A[0], A[1]), (A[0], 0)):
        p = Pipe(peer=peer).run(ev, 11.0)
        assert p.meter.loss.loss_pct() == pytest.approx(10.0)
        # port 0 lets any port of that host start the stream; it still locks to the first
        assert p.tr.counts["foreign_source"] == 50


def test_configured_peer_refuses_everyone_else_from_the_start():
    tr = SeqTracker(F, 1.0, peer=("192.0.2.9", 0))
    assert tr.packet(1, A, 10, 0.0) == [] and tr.packet(1, A, 11, 0.02) == []
    assert tr.foreign_source == 2 and tr.ssrc is None
    assert [e for e, _ in tr.packet(1, ("192.0.2.9", 5), 10, 0.04)] == []
    assert [e for e, _ in tr.packet(1, ("192.0.2.9", 5), 11, 0.06)] == [10, 11]


# ----------------------------------------------------------------- the rules, one by one
@pytest.mark.parametrize("a,b,want", [(5, 3, 2), (0, 65535, 1), (65535, 0, -1),
                                      (32767, 0, 32767), (32768, 0, -32768)])
def test_seq_delta_wraps(a, b, want):
    assert seq_delta(a, b) == want


def test_probation_holds_the_first_packet_then_releases_it():
    tr = SeqTracker(F)
    assert tr.packet(1, A, 65535, 0.0, "a") == []
    assert tr.packet(1, A, 0, 0.02, "b") == [(65535, "a"), (65536, "b")]
    assert tr.packet(1, A, 1, 0.04, "c") == [(65537, "c")]
    assert tr.counts["streams"] == 1


def test_a_lone_packet_never_passes_probation():
    tr = SeqTracker(F)
    for k in range(5):  # scattered numbers: each replaces the last
        assert tr.packet(1, A, k * 1000, k * F) == []
    assert tr.ssrc is None


def test_reordered_and_duplicate_packets_keep_their_numbers():
    st = SeqState(100, 100, 0.0)
    assert st.update(102, 0.04) == [(102, None)]
    assert st.update(101, 0.05) == [(101, None)]
    assert st.update(102, 0.06) == [(102, None)]  # duplicate: the consumers count it
    assert st.update((102 - MAX_MISORDER) & 0xFFFF, 0.07) == [(102 - MAX_MISORDER, None)]
    assert st.update((101 - MAX_MISORDER) & 0xFFFF, 0.08) == []  # too old: probation


def test_an_outage_is_loss_when_time_could_carry_the_gap():
    st = SeqState(0, 0, 0.0)
    assert st.update(151, 3.0) == [(151, None)]  # 3 s silent, 150 packets missing: loss
    st = SeqState(0, 0, 0.0)
    assert st.update(151, 0.02) == []  # 150 ahead 20 ms later: not believed alone
    assert st.update(1, 0.04) == [(1, None)] and st.strays == 1  # the line went on


def test_a_confirmed_jump_beyond_max_dropout_resyncs_even_after_silence():
    st = SeqState(0, 0, 0.0)
    far = MAX_DROPOUT + 10
    assert st.update(far, 600.0) == []
    assert st.update(far + 1, 600.02) == [(1, None), (2, None)]
    assert st.resyncs == 1


def test_bye_range_maps_into_the_current_line():
    st = SeqState(65530, 65530, 0.0)
    for k, s in enumerate([65531, 65532, 0, 1]):
        st.update(s, (k + 1) * F)
    assert st.range_ext(65528, 3) == (65528, 65539)  # lost at both ends
    assert st.range_ext(40000, 3) == (65530, 65539)  # a first from another life: ignored
    assert st.range_ext(65528, 20000) is None  # not this line's end


def test_takeover_needs_silence_and_probation():
    tr = SeqTracker(F, takeover_s=1.0)
    tr.packet(1, A, 10, 0.0)
    tr.packet(1, A, 11, 0.02)
    assert tr.packet(2, B, 500, 0.03) == [] and tr.packet(1, A, 12, 0.04) == [(12, None)]
    assert tr.packet(2, B, 501, 0.05) == []  # began while the stream was live: refused
    assert tr.foreign_ssrc == 2 and tr.ssrc == 1
    assert tr.packet(2, B, 502, 1.1) == []  # silent long enough: probation starts
    assert tr.packet(2, B, 503, 1.12) == [(13, None), (14, None)]  # continues the numbering
    assert tr.ssrc == 2 and tr.packet(1, A, 13, 1.14) == [] and tr.foreign_ssrc == 3


def test_a_sender_that_began_after_the_silence_takes_over_at_once():
    tr = SeqTracker(F, takeover_s=1.0, quiet_s=0.1)
    tr.packet(1, A, 10, 0.0)
    tr.packet(1, A, 11, 0.02)
    assert tr.packet(2, B, 500, 0.2) == []  # on probation; not foreign
    assert tr.packet(2, B, 501, 0.22) == [(12, None), (13, None)]
    assert tr.foreign_ssrc == 0 and tr.ssrc == 2
    tr2 = SeqTracker(F, takeover_s=1.0, quiet_s=0.1)
    tr2.packet(1, A, 10, 0.0)
    tr2.packet(1, A, 11, 0.02)
    assert tr2.packet(2, B, 500, 0.08) == [] and tr2.packet(2, B, 501, 0.1) == []  # too soon
    assert tr2.foreign_ssrc == 2 and tr2.ssrc == 1


def test_relock_follows_the_stream_to_a_new_transport():
    tr = SeqTracker(F)
    tr.packet(1, A, 10, 0.0)
    tr.packet(1, A, 11, 0.02)
    tr.relock()  # UDP -> TCP: the connection has no address
    assert tr.packet(1, None, 12, 0.04) == [(12, None)]
    assert tr.packet(1, A, 13, 0.06) == [] and tr.foreign_source == 1
