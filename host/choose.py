"""Choose the k-means cluster count and the K of the uniform bins from the telemetry itself.

SPEC §7 determines K from the features instead of taking it as given. Both choices use the
silhouette (scikit-learn's ``silhouette_score``: for each point, how much closer it is to its
own group than to the nearest other group, −1…1) over a small range, on standardised columns:

* clusters: k-means for k in ``range``; the best mean silhouette wins. Below
  ``NO_STRUCTURE`` (0.25, Kaufman & Rousseeuw's "no substantial structure") one cluster is
  kept: the link was in one condition and splitting it would invent conditions.
* K bins: per monitoring column, the K uniform intervals (host.kbins) are a partition of the
  values; the K whose partitions have the best mean silhouette over the columns wins (ties go
  to the smaller K). Intervals that cut through a group of values score low, intervals that
  fall between groups score high.

Pure functions of the data (and a seed); the CLI flags override them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from host import kbins

NO_STRUCTURE = 0.25
CLUSTER_RANGE = (2, 6)  # inclusive
BIN_RANGE = (2, 8)  # inclusive
MAX_POINTS = 2000  # silhouette is O(n²): a seeded subsample beyond this


@dataclass(frozen=True)
class Choice:
    """The chosen value, the silhouette of every candidate, and a one-line reason."""

    value: int
    scores: dict[int, float]
    reason: str

    def to_dict(self) -> dict:
        return {"value": self.value, "scores": {str(k): v for k, v in self.scores.items()},
                "reason": self.reason}


def _standardise(X: np.ndarray) -> np.ndarray:
    X = np.atleast_2d(np.asarray(X, dtype=float))
    sd = X.std(axis=0)
    sd[sd == 0] = 1.0
    return (X - X.mean(axis=0)) / sd


def _subsample(X: np.ndarray, seed: int) -> np.ndarray:
    if len(X) <= MAX_POINTS:
        return X
    return X[np.random.default_rng(seed).choice(len(X), MAX_POINTS, replace=False)]


def choose_clusters(X: np.ndarray, seed: int = 0, lo: int = CLUSTER_RANGE[0],
                    hi: int = CLUSTER_RANGE[1]) -> Choice:
    """k-means cluster count for the (n, d) monitoring vectors ``X`` (original units)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    Z = _subsample(_standardise(X), seed)
    distinct = len(np.unique(Z, axis=0))
    scores: dict[int, float] = {}
    for k in range(lo, min(hi, distinct - 1) + 1):
        labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(Z)
        scores[k] = round(float(silhouette_score(Z, labels)), 4)
    if not scores:
        return Choice(1, {}, f"{distinct} distinct record(s): one cluster")
    best = max(scores, key=lambda k: (scores[k], -k))
    if scores[best] < NO_STRUCTURE:
        return Choice(1, scores, f"best silhouette {scores[best]:.2f} at k={best} is below "
                      f"{NO_STRUCTURE}: no cluster structure, one cluster")
    return Choice(best, scores, f"silhouette {scores[best]:.2f} at k={best} is the best of "
                  f"k={lo}..{max(scores)}")


def choose_bins(X: np.ndarray, seed: int = 0, lo: int = BIN_RANGE[0],
                hi: int = BIN_RANGE[1]) -> Choice:
    """K for the uniform bins of every monitoring column of ``X`` (n, d)."""
    from sklearn.metrics import silhouette_score

    X = _subsample(np.atleast_2d(np.asarray(X, dtype=float)), seed)
    scores: dict[int, float] = {}
    for k in range(lo, hi + 1):
        idx, _ = kbins.discretize(X, k)
        per_col = []
        for j in range(X.shape[1]):
            col = X[:, j]
            if np.ptp(col) == 0:
                continue  # a constant column has no structure to bin
            used = len(np.unique(idx[:, j]))
            if 2 <= used <= len(col) - 1:
                per_col.append(silhouette_score(col[:, None], idx[:, j]))
        if per_col:
            scores[k] = round(float(np.mean(per_col)), 4)
    if not scores:
        return Choice(lo, {}, f"no column varies: K={lo}")
    best = max(scores, key=lambda k: (scores[k], -k))
    return Choice(best, scores, f"mean silhouette of the K-bin partitions {scores[best]:.2f} "
                  f"at K={best} is the best of K={lo}..{hi}")
