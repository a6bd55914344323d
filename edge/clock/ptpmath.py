"""The pure math of SPEC §5: delay request-response and robust drift. No I/O, no clocks.

Times are integers or floats in nanoseconds unless the name says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Theil–Sen uses every pair up to this many points; above it a fixed-seed sample of pairs
# (the estimate stays within noise of the full one and the cost stays bounded).
_MAX_FULL_POINTS = 400
_SAMPLED_PAIRS = 80_000


@dataclass(frozen=True)
class Exchange:
    """One Sync / Delay_Req exchange, ns: t1 Sync sent (master clock), t2 Sync received
    (slave clock), t3 Delay_Req sent (slave clock), t4 Delay_Req received (master clock)."""

    t1: float
    t2: float
    t3: float
    t4: float


def path_delay_ns(t1, t2, t3, t4):
    """Mean path delay ((t2 − t1) + (t4 − t3)) / 2, ns; scalars or arrays of equal shape.

    Exact when the path is symmetric; an asymmetry a shows up as a/2 in the offset instead.
    """
    return ((np.asarray(t2, float) - t1) + (np.asarray(t4, float) - t3)) / 2


def offset_ns(t1, t2, t3, t4):
    """Offset of the slave from the master ((t2 − t1) − (t4 − t3)) / 2, ns (positive: the
    slave is ahead); scalars or arrays of equal shape."""
    return ((np.asarray(t2, float) - t1) - (np.asarray(t4, float) - t3)) / 2


def theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Robust line fit y ≈ slope·x + intercept: the median of pairwise slopes (breakdown point
    29%: outliers up to that share do not move it) and the median intercept.

    x, y: 1-D arrays of equal length ≥ 2 with at least two distinct x. Returns (slope,
    intercept) in y-units per x-unit and y-units.
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("x and y must be 1-D arrays of equal length")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    if n < 2:
        raise ValueError("need at least two finite points for a line fit")
    if n <= _MAX_FULL_POINTS:
        i, j = np.triu_indices(n, k=1)
    else:
        rng = np.random.default_rng(0)
        i = rng.integers(0, n, _SAMPLED_PAIRS)
        j = rng.integers(0, n, _SAMPLED_PAIRS)
    dx = x[j] - x[i]
    keep = dx != 0
    if not keep.any():
        raise ValueError("need at least two distinct x values for a line fit")
    slope = float(np.median((y[j] - y[i])[keep] / dx[keep]))
    intercept = float(np.median(y - slope * x))
    return slope, intercept


def drift_ppm(t_s: np.ndarray, offset_ns: np.ndarray) -> float:
    """Drift of a clock against its reference, ppm: the robust (Theil–Sen) slope of offset
    (ns) against time (s), divided by 1000 (1 ns/s = 0.001 ppm). Positive: the clock gains.

    t_s, offset_ns: 1-D arrays, shape (n,), n ≥ 2; NaNs are ignored.
    """
    slope_ns_per_s, _ = theil_sen(t_s, offset_ns)
    return slope_ns_per_s / 1e3


def rms(values: np.ndarray) -> float:
    """Root mean square of a 1-D array (NaNs ignored); nan when empty."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return float(np.sqrt(np.mean(v * v))) if len(v) else float("nan")


def simulate_exchanges(n: int, *, offset0_ns: float, delay_ns: float, drift_ppm: float,
                       interval_s: float = 1.0, noise_ns: float = 0.0,
                       outlier_share: float = 0.0, outlier_ns: float = 0.0,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic exchanges with known truth, for tests and benchmarks.

    The slave clock reads master + offset0 + drift·t; each one-way trip takes ``delay_ns``
    (symmetric) plus Gaussian timestamp noise; a share of trips is delayed by ``outlier_ns``
    more (queueing). Returns (t_s (n,), stamps (n, 4) = t1, t2, t3, t4 in ns).
    """
    rng = np.random.default_rng(seed)
    t_s = np.arange(n) * interval_s
    t1 = t_s * 1e9
    offset = offset0_ns + drift_ppm * 1e3 * t_s  # ns
    extra = np.where(rng.random((2, n)) < outlier_share, outlier_ns, 0.0)
    noise = rng.normal(0.0, noise_ns, (4, n)) if noise_ns else np.zeros((4, n))
    t2 = t1 + delay_ns + extra[0] + offset + noise[0]
    t3 = t2 + 1e6  # the slave answers 1 ms later (its own clock)
    t4 = t3 - offset + delay_ns + extra[1] + noise[1]
    return t_s, np.stack([t1 + noise[2], t2, t3 + noise[3], t4], axis=1)
