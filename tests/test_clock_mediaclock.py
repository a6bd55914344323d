"""Media clock against a simulated PTP time base: a sound card at +37 ppm, then −12 ppm.

The card, its callback jitter (100 us σ, 1% of callbacks up to 3 ms late) and the PTP time
base are simulated (no sound card runs 37 ppm off on demand); the estimator, controller and
resampler are the real ones.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge.clock.mediaclock import (
    AdaptiveResampler,
    MediaClock,
    PtpLockedStream,
    RateEstimator,
    SimulatedCard,
    simulate_lock,
)

RATE = 48_000


@pytest.fixture(scope="module")
def hour():
    card = SimulatedCard(rate=RATE, segments=((0.0, 37.0), (1200.0, -12.0)), seed=7)
    return card, simulate_lock(card, 3600)


def test_estimator_finds_the_error_within_60_s(hour):
    card, r = hour
    err = np.abs(r["ppm_est"] - r["ppm_true"])
    t = r["t_s"]
    after_start = (t >= 60) & (t < 1200)
    after_step = t >= 1260
    assert np.all(err[after_start] < 1.0), np.nanmax(err[after_start])
    assert np.all(err[after_step] < 1.0), np.nanmax(err[after_step])
    assert abs(np.nanmedian(r["ppm_est"][after_start]) - 37) < 0.2
    assert abs(np.nanmedian(r["ppm_est"][after_step]) + 12) < 0.2


def test_corrected_stream_drifts_less_than_one_sample_per_hour(hour):
    card, r = hour
    t, ph = r["t_s"], r["phase_true"]
    settled = ((t >= 120) & (t < 1200)) | (t >= 1320)
    # phase_true: outputs − 48 kHz × true PTP time. Its settled mean is the epoch's estimate
    # error (a constant); drift is a trend, wander the callback jitter that gets through.
    mean = np.nanmean(ph[settled])
    first = np.nanmean(ph[(t >= 120) & (t < 420)])
    last = np.nanmean(ph[t >= 3300])
    assert abs(last - first) < 0.25, (first, last)  # drift over the hour
    assert np.nanmax(np.abs(ph[settled] - mean)) < 1.0  # never a sample off its mean
    assert abs(mean) < 1.0
    # without correction the same card would be 37 ppm × 3600 s × 48 kHz = 6394 samples off
    ratio = r["ratio"][settled]
    assert np.all(np.abs(ratio - 1) < 60e-6)


def test_estimator_window_and_outliers():
    card = SimulatedCard(rate=RATE, segments=((0.0, -250.0),), late_share=0.2, seed=2)
    est = RateEstimator(RATE, window_s=20)
    for s in range(40):
        est.add(*card.stamps(s * 100, 100))
    est.flush()
    assert est.estimate is not None and est.estimate.bins == 20
    assert est.estimate.ppm == pytest.approx(-250, abs=1.0)
    assert RateEstimator(RATE).ptp_ns_of(0) is None


def _tone(n0: int, n: int, f: float, rate: float) -> np.ndarray:
    return np.sin(2 * np.pi * f * (n0 + np.arange(n)) / rate).astype(np.float32)


@pytest.mark.parametrize("ratio", [1.0, 1 + 37e-6, 1 - 500e-6])
def test_resampler_interpolates_a_tone(ratio):
    """A 1 kHz tone through the resampler in uneven blocks equals the tone evaluated at the
    output positions (input index k/ratio) to better than −70 dB."""
    rs = AdaptiveResampler()
    f, outs, n0 = 1000.0, [], 0
    sizes = np.random.default_rng(0).integers(1, 900, 200)
    for n in sizes:
        outs.append(rs.process(_tone(n0, int(n), f, RATE), ratio))
        n0 += int(n)
    y = np.concatenate(outs)
    assert len(y) == rs.produced
    assert abs(len(y) - (n0 - rs.taps // 2) * ratio) < 2
    k = np.arange(len(y))
    want = np.sin(2 * np.pi * f * (k / ratio) / RATE)
    err = y[50:] - want[50:]
    assert 20 * np.log10(np.sqrt(np.mean(err ** 2)) / np.sqrt(0.5)) < -70
    bk = AdaptiveResampler()
    assert sum(bk.advance(int(n), ratio) for n in sizes) == len(y)  # same bookkeeping


def test_locked_stream_end_to_end_with_audio():
    """Real audio blocks through PtpLockedStream, stamped with a simulated PTP clock: the
    output has 48,000 samples per PTP second and AES67 RTP timestamps."""
    card = SimulatedCard(rate=RATE, segments=((0.0, 37.0),), seed=5)
    stream = PtpLockedStream(RATE)
    blocks = 90 * 100
    idx, t = card.stamps(0, blocks)
    outs = []
    for b in range(blocks):
        assert stream.stamp(card.block, int(t[b])) == idx[b]
        outs.append(stream.process(_tone(b * card.block, card.block, 440.0, RATE)))
    assert stream.ppm == pytest.approx(37, abs=1)
    y = np.concatenate(outs)
    last_in = stream.resampler.next_pos
    expect = RATE * card.ptp_s_of_sample(np.array([last_in]))[0]
    assert abs(stream.produced - expect) < 2  # locked to PTP time, not to the card
    assert len(y) == stream.produced
    k = stream.produced - 480
    epoch = stream.clock.epoch_ns
    assert stream.rtp_timestamp(k) == (round(epoch * RATE / 1e9) + k) % 2 ** 32
    assert (stream.rtp_timestamp(k + 1) - stream.rtp_timestamp(k)) % 2 ** 32 == 1
    assert stream.ptp_ns_of_output(RATE) - stream.ptp_ns_of_output(0) == 1_000_000_000
    assert abs(epoch - card.latency_ns) < 100_000  # input sample 0's stamp, to the jitter


def test_media_clock_before_an_estimate():
    mc = MediaClock(RATE, clock=lambda: 123)
    assert mc.stamp(480) == 0 and mc.stamp(480) == 480
    assert mc.update(0.0, 0) == 1.0 and mc.ppm is None
    assert mc.rtp_timestamp(0) is None and mc.ptp_ns_of_output(0) is None
    with pytest.raises(ValueError):
        AdaptiveResampler(taps=15)
