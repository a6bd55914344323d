"""PTP playout (issue #19): frames play at their RTP media-clock time + a link offset; two
receivers of one stream record it sample-aligned. The pure schedule here, the real processes
in network namespaces in test_transport_playout_netns.py."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import resample

from edge.transport.playout import PtpPlayout, TimedTrack, media_ticks, unwrap_ts
from edge.transport.stats import lag_samples

NS = 1_000_000_000
T0 = 1_780_000_000 * NS + 123_456_789  # a PTP time in 2026, ns


def _ts(t_ns: int) -> int:
    return media_ticks(t_ns) & 0xFFFFFFFF


def test_unwrap_recovers_the_full_tick_count_across_the_32_bit_wrap():
    full = media_ticks(T0)
    for d in (-5_000, 0, 7_000):
        assert unwrap_ts((full + d) & 0xFFFFFFFF, full + 480) == full + d
    wrapped = (full >> 32 << 32) + (1 << 32) + 10  # 10 ticks past a wrap of the low 32 bits
    assert unwrap_ts(wrapped & 0xFFFFFFFF, wrapped - 4_800) == wrapped  # seen before it
    assert unwrap_ts((wrapped - 20) & 0xFFFFFFFF, wrapped + 4_800) == wrapped - 20  # after


def test_frames_are_placed_at_capture_time_plus_offset_minus_codec_delay():
    pb = PtpPlayout(100, delay_samples=104, lead_ms=10)
    cap = T0 // 62_500 * 62_500  # capture time on the 16 kHz grid
    for k in range(3):
        t = cap + k * 20_000_000
        assert pb.push(k, b"p%d" % k, (t + 25_000_000) / NS, _ts(t)) == "ok"
    want = cap // 62_500 + 1600 - 104  # 100 ms = 1600 samples later, less the codec delay
    assert pb.next_due() == pytest.approx(want / 16_000 - 0.010, abs=1e-6)
    assert pb.pop(want / 16_000 - 0.011) == []  # not yet
    slots = pb.pop(want / 16_000 + 0.030)
    assert [(s.kind, s.seq, s.index) for s in slots] == [
        ("packet", 0, want), ("packet", 1, want + 320), ("packet", 2, want + 640)]


def test_off_grid_timestamps_round_to_the_nearest_sample():
    pb = PtpPlayout(50)
    t = T0 // 62_500 * 62_500 + 2 * 20_834  # two media ticks past a 16 kHz sample
    pb.push(0, b"x", t / NS, _ts(t))
    assert pb.index(0) == t // 62_500 + 1 + 800  # 2/3 of a sample rounds up


def test_missing_frame_is_fec_then_plc_and_a_late_packet_is_counted():
    pb = PtpPlayout(60, lead_ms=0)
    t = T0 // 62_500 * 62_500
    for k in (0, 2, 5):
        pb.push(k, b"p%d" % k, t / NS, _ts(t + k * 20_000_000))
    end = pb.play_s(5)
    kinds = [(s.seq, s.kind) for s in pb.pop(end)]
    assert kinds == [(0, "packet"), (1, "fec"), (2, "packet"), (3, "plc"), (4, "fec"),
                     (5, "packet")]
    assert pb.push(3, b"late", end, _ts(t + 3 * 20_000_000)) == "late" and pb.late == 1
    assert pb.push(5, b"p5", end, _ts(t + 5 * 20_000_000)) == "duplicate"


def test_a_jump_of_the_media_clock_reschedules_from_the_new_timestamp():
    pb = PtpPlayout(60, lead_ms=0)
    t = T0 // 62_500 * 62_500
    pb.push(0, b"a", t / NS, _ts(t))
    pb.push(1, b"b", t / NS, _ts(t + 20_000_000))
    later = t + 3 * NS  # the sender restarted: numbering continues, capture time jumped
    pb.push(2, b"c", later / NS, _ts(later))
    assert pb.resyncs == 1
    assert pb.index(2) == later // 62_500 + 960
    assert pb.index(1) == pb.index(2) - 320  # frames before it are scheduled from it too


def test_timed_track_starts_on_a_whole_second_with_gaps_silent():
    tr = TimedTrack(align=16_000)
    base = 1_780_000_000 * 16_000
    tr.put(base - 100, np.ones(320, np.float32))  # partly before the start: cut
    tr.put(base + 220, np.full(320, 2.0, np.float32))
    tr.put(base + 960, np.full(320, 3.0, np.float32))  # a missing frame before it
    y = tr.array()
    assert tr.start == base and len(y) == 1280
    assert np.all(y[:220] == 1.0) and np.all(y[220:540] == 2.0)
    assert np.all(y[540:960] == 0.0) and np.all(y[960:] == 3.0)


@pytest.mark.parametrize("shift", [0.0, 0.25, -0.4, 7.3])
def test_lag_is_resolved_to_a_small_fraction_of_a_sample(shift):
    rng = np.random.default_rng(1)
    # band-limited noise, like speech at 16 kHz: a fractional delay by FFT resampling
    x = resample(rng.standard_normal(4000), 16_000)
    n = len(x)
    f = np.fft.rfftfreq(n)
    y = np.fft.irfft(np.fft.rfft(x) * np.exp(-2j * np.pi * f * shift), n)
    lag, peak = lag_samples(x[2000:-2000], y[2000:-2000], max_lag=50)
    assert lag == pytest.approx(shift, abs=0.05) and peak > 0.95


@pytest.mark.parametrize("args, why", [
    (["receive", "--listen", "127.0.0.1:0", "--link-offset", "100"], "needs --playout ptp"),
    (["receive", "--listen", "127.0.0.1:0", "--playout", "ptp", "--play"], "locked to PTP"),
    (["receive", "--listen", "127.0.0.1:0", "--playout", "ptp", "--link-offset", "0"], "0"),
])
def test_receive_refuses_playout_options_that_cannot_work(args, why):
    from click.testing import CliRunner

    from edge.cli import cli

    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2 and why in r.output and "Traceback" not in r.output, r.output


def test_send_fans_out_to_udp_only(tmp_path, tone):
    import soundfile as sf
    from click.testing import CliRunner

    from edge.cli import cli

    sf.write(tmp_path / "t.wav", tone, 16_000)
    r = CliRunner().invoke(cli, ["send", str(tmp_path / "t.wav"), "--to", "udp://127.0.0.1:9",
                                 "--to", "tcp://127.0.0.1:9"])
    assert r.exit_code == 2 and "must be udp://" in r.output, r.output


def test_one_stream_reaches_two_receivers_with_the_same_timestamps(tone):
    """``Sender(also=...)``: every packet goes to each destination, so PTP playout places
    the same frame at the same sample on both receivers (loopback, real sockets)."""
    from edge.transport.receiver import Receiver
    from edge.transport.sender import Sender, send_file

    rxs = [Receiver("127.0.0.1:0", playout="ptp", link_offset_ms=80) for _ in range(2)]
    try:
        tx = Sender(f"udp://127.0.0.1:{rxs[0].port}", also=(f"udp://127.0.0.1:{rxs[1].port}",))
        start = send_file(np.tile(tone, 2), tx)
        tx.close()
        assert all(rx.wait(10) for rx in rxs)
        a, b = (rx.audio() for rx in rxs)
        assert rxs[0].record_start_ns == rxs[1].record_start_ns is not None
        assert start - tx.capture_start_ns == 2 * 10**9  # two seconds of capture times
        assert rxs[0].summary()["received"] == rxs[1].summary()["received"] == 100
        n = min(len(a), len(b))
        # the same decoded samples at the same places (a frame only a stalled CPU made one
        # receiver miss is silence there)
        assert n > 16_000 and np.mean(np.isclose(a[:n], b[:n], atol=1e-6)) > 0.9
    finally:
        for rx in rxs:
            rx.close()
