"""Link statistics (pure): loss from extended numbers, RFC 3550 jitter, SNR estimate,
alignment."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.transport import stats


@given(start=st.integers(0, 3 * 0xFFFF), n=st.integers(1, 400),
       drop=st.sets(st.integers(1, 398), max_size=50))
def test_loss_counter_counts_drops(start, n, drop):
    c = stats.LossCounter()
    drop = {d for d in drop if d < n - 1}
    for i in range(n):
        if i not in drop:
            assert c.add(start + i)
            if i % 7 == 0:
                assert not c.add(start + i)  # duplicates are not counted twice
    assert c.expected == n
    assert c.lost == len(drop)
    assert c.loss_pct() == pytest.approx(100 * len(drop) / n)


def test_close_range_counts_losses_at_both_ends():
    c = stats.LossCounter()
    for s in (65534, 65535, 65536, 65537):
        c.add(s)
    c.close_range(65530, 65540)  # the sender's BYE: it sent 65530..65540
    assert (c.expected, c.lost) == (11, 7)


def test_close_range_uncounts_a_stray_beyond_the_end():
    c = stats.LossCounter()
    for s in [*range(100, 200), 215]:  # 215: a stray copy the sequence check let through
        c.add(s)
    assert c.lost == 15
    c.close_range(100, 199)
    assert (c.expected, c.received, c.lost) == (100, 100, 0)


def test_rfc3550_jitter_converges_to_mean_abs_transit_difference():
    rng = np.random.default_rng(1)
    transit = 0.040 + rng.uniform(-0.01, 0.01, 5000)  # uniform +-10 ms
    j, prev = 0.0, None
    for t in transit:
        j, prev = stats.jitter_update(j, prev, t), t
    assert 1000 * j == pytest.approx(20 / 3, rel=0.15)  # E|U1-U2| over width 20 ms


def test_jitter_of_constant_transit_is_zero():
    j, prev = 0.0, None
    for t in [0.05] * 100:
        j, prev = stats.jitter_update(j, prev, t), t
    assert j == 0.0


def test_rates_and_latency():
    assert stats.bitrate_kbps(8000, 1.0) == 64.0
    assert stats.utilisation(48.0, 64.0) == 0.75
    assert stats.utilisation(1.0, 0.0) == 0.0
    assert stats.latency_ms(1_000_000_000, 1_040_500_000) == 40.5
    assert stats.interval_loss_pct(50, 45) == 10.0
    assert stats.interval_loss_pct(50, 51) == 0.0  # duplicates never make loss negative


@pytest.mark.parametrize("snr", [5.0, 15.0, 25.0])
def test_snr_estimate_tracks_true_snr(snr):
    rng = np.random.default_rng(0)
    fs = 16_000
    t = np.arange(6 * fs) / fs
    gate = (np.sin(2 * np.pi * 0.5 * t) > 0).astype(float)  # speech on half the time
    speech = gate * np.sin(2 * np.pi * 300 * t) * 0.3
    p_s = np.mean(speech[gate > 0] ** 2)
    noise = rng.normal(0, np.sqrt(p_s / 10 ** (snr / 10)), len(t))
    est = stats.snr_estimate_db((speech + noise).astype(np.float32))
    assert est == pytest.approx(snr, abs=2.0)


def test_align_finds_a_delay():
    rng = np.random.default_rng(2)
    x = rng.normal(size=4000).astype(np.float32)
    y = np.concatenate([np.zeros(104, np.float32), x])
    assert np.allclose(stats.align(x, y), x)
    y = stats.align(x, x[50:])  # started 50 samples late: zeros first
    assert np.allclose(y[50:], x[50:]) and not np.any(y[:50])


def test_loss_counter_memory_stays_bounded_on_a_long_stream():
    """A day of packets keeps the duplicate set within its window (it grew for 87 minutes
    before: 0.27 MB a minute of RSS in the soak), and counting stays exact."""
    from edge.transport.stats import DUP_WINDOW, LossCounter

    c = LossCounter()
    for ext in range(200_000):
        if ext % 100 != 7:  # 1 % lost
            assert c.add(ext)
    assert not c.add(199_999)  # a recent duplicate is still recognised
    assert len(c._seen) <= 2 * DUP_WINDOW
    assert c.received == 198_000 and (c.first, c.last) == (0, 199_999)
