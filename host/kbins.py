"""K uniform bins (SPEC §7 step 2): width = (max − min)/K, K equal intervals.

Convention: functions here return **0-based** bin indices (as scikit-learn's
``KBinsDiscretizer(strategy="uniform", encode="ordinal")`` does, which this rule matches);
SPEC §7 numbers bins from 1, so SPEC bin = index + 1. Example: 20–200 ms, K = 4 → width 45 ms,
edges 20, 65, 110, 155, 200; 75 ms → index 1 = SPEC "bin 2". A value on an inner edge goes to
the upper bin; values outside [min, max] go to the first or last bin. Pure numpy.
"""

from __future__ import annotations

import numpy as np


def uniform_edges(lo: float, hi: float, k: int) -> np.ndarray:
    """The K+1 bin edges from ``lo`` to ``hi`` (shape ``(k + 1,)``)."""
    if k < 1:
        raise ValueError("K must be >= 1")
    if not hi >= lo:
        raise ValueError("max must be >= min")
    return np.linspace(lo, hi, k + 1)


def bin_width(lo: float, hi: float, k: int) -> float:
    return (hi - lo) / k


def bin_index(x, edges: np.ndarray) -> np.ndarray:
    """0-based bin of each value of ``x`` for ``edges`` from ``uniform_edges``."""
    idx = np.searchsorted(edges[1:-1], np.asarray(x, dtype=float), side="right")
    return idx.astype(int)


def discretize(X: np.ndarray, k: int, lo=None, hi=None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per column of ``X`` (shape ``(n, d)``): edges over the column's [min, max] (or the given
    ``lo``/``hi`` arrays) and the 0-based bin of every value. Returns ``(indices (n, d),
    [edges (k+1,)] * d)``."""
    X = np.atleast_2d(np.asarray(X, dtype=float))
    lo = X.min(axis=0) if lo is None else np.asarray(lo, dtype=float)
    hi = X.max(axis=0) if hi is None else np.asarray(hi, dtype=float)
    edges = [uniform_edges(lo[j], hi[j], k) for j in range(X.shape[1])]
    idx = np.stack([bin_index(X[:, j], edges[j]) for j in range(X.shape[1])], axis=1)
    return idx, edges
