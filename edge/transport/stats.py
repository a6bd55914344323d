"""Link statistics (SPEC §6), pure: no sockets or clocks; times are passed in.

* RFC 3550 §6.4.1 / A.8 interarrival jitter,
* loss from extended RTP sequence numbers (validated and numbered by ``seqstate``),
* bandwidth: bits on the wire per second and their share of the link (or the allocation),
* one-way latency from the sender's send-time stamp,
* an SNR estimate of received audio from the spread of its frame energies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SEQ_MOD = 1 << 16
# duplicates are recognised within this many packets of the newest (82 s at 50 packets/s;
# the sequence tracker already drops what arrives more than MAX_MISORDER behind). It was
# 4 * SEQ_MOD: the set grew by 0.27 MB a minute for 87 minutes (make bench-soak)
DUP_WINDOW = 4096


def jitter_update(j: float, transit_prev: float | None, transit: float) -> float:
    """One step of J += (|D| - J) / 16 with D the change in transit time (any time unit)."""
    if transit_prev is None:
        return j
    return j + (abs(transit - transit_prev) - j) / 16.0


@dataclass
class LossCounter:
    """Expected vs received packets from extended sequence numbers (duplicates not double
    counted). The caller numbers the packets (``edge.transport.seqstate.SeqTracker``), so
    strays, resyncs and sender restarts never reach this count as a gap.

    ``first``/``last`` are extended sequence numbers; ``close_range(first, last)`` lets a
    sender's BYE fix the range so losses at either end of the stream are counted too.
    """

    first: int | None = None
    last: int | None = None
    received: int = 0
    _seen: set | None = None

    def add(self, ext: int) -> bool:
        """Count a packet by its extended number; False when it was a duplicate."""
        if self._seen is None:
            self._seen = set()
        if ext in self._seen:
            return False
        self._seen.add(ext)
        if len(self._seen) > 2 * DUP_WINDOW:  # memory stays flat however long the stream
            lo = max(self.last if self.last is not None else ext, ext) - DUP_WINDOW
            self._seen = {s for s in self._seen if s >= lo}
        self.received += 1
        self.first = ext if self.first is None else min(self.first, ext)
        self.last = ext if self.last is None else max(self.last, ext)
        return True

    def close_range(self, first: int, last: int) -> None:
        """The sender's BYE: it sent extended numbers ``first``..``last``, so packets lost
        before the first or after the last one received count as lost, and anything counted
        beyond ``last`` (a stray ahead of the end) was not part of the stream."""
        if last < first:
            return
        self.first = first if self.first is None else min(self.first, first)
        if self.last is not None and last < self.last and self._seen:
            beyond = {s for s in self._seen if s > last}
            self._seen -= beyond
            self.received -= len(beyond)
        self.last = last

    def is_duplicate(self, ext: int) -> bool:
        return self._seen is not None and ext in self._seen

    @property
    def expected(self) -> int:
        return 0 if self.first is None else self.last - self.first + 1

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.received)

    def loss_pct(self) -> float:
        return 100.0 * self.lost / self.expected if self.expected else 0.0


def interval_loss_pct(expected: int, received: int) -> float:
    """RFC 3550 A.3 fraction lost over one interval, in percent (never negative)."""
    if expected <= 0:
        return 0.0
    return max(0.0, 100.0 * (expected - received) / expected)


def bitrate_kbps(n_bytes: int, seconds: float) -> float:
    return 8.0 * n_bytes / seconds / 1000.0 if seconds > 0 else 0.0


def utilisation(measured_kbps: float, allocated_kbps: float) -> float:
    """Bits on the wire over the bits available: the link's measured capacity, or without
    one the bits allocated to this stream (1.0 = exactly the budget)."""
    return measured_kbps / allocated_kbps if allocated_kbps > 0 else 0.0


def latency_ms(send_ns: int, recv_ns: int) -> float:
    """One-way latency from a PTP-stamped send time and the receiver's PTP time."""
    return (recv_ns - send_ns) / 1e6


def snr_estimate_db(x: np.ndarray, frame: int = 320, lo_pct: float = 10.0,
                    hi_pct: float = 90.0) -> float:
    """Blind SNR of speech audio: loud frames (speech + noise) against quiet frames
    (noise floor), 10·log10((P_hi - P_lo) / P_lo) over frame energies. ``x`` (n,) float.

    Why this: no clean reference exists at the receiver; speech has pauses, so the quiet
    frames estimate the noise (including coding noise and concealment artefacts)."""
    n = len(x) // frame
    if n < 4:
        return 0.0
    e = np.mean(np.square(x[: n * frame].reshape(n, frame), dtype=np.float64), axis=1)
    lo = float(np.percentile(e, lo_pct)) + 1e-12
    hi = float(np.percentile(e, hi_pct))
    return float(np.clip(10.0 * np.log10(max(hi - lo, 1e-12) / lo), -10.0, 60.0))


def align(ref: np.ndarray, deg: np.ndarray, max_lag: int = 16_000) -> np.ndarray:
    """``deg`` shifted to line up with ``ref`` (codec delay, playout start), cut or zero padded
    to ``len(ref)``; the lag is the cross-correlation peak within ±``max_lag`` samples."""
    from scipy.signal import correlate

    n = min(len(ref), len(deg))
    if n == 0:
        return np.zeros(len(ref), np.float32)
    c = correlate(deg, ref, mode="full", method="fft")
    lags = np.arange(-len(ref) + 1, len(deg))
    ok = np.abs(lags) <= max_lag
    lag = int(lags[ok][np.argmax(c[ok])])
    y = deg[lag:] if lag >= 0 else np.concatenate([np.zeros(-lag, deg.dtype), deg])
    y = y[: len(ref)]
    return np.pad(y, (0, len(ref) - len(y))).astype(np.float32)


def lag_samples(ref: np.ndarray, deg: np.ndarray, max_lag: int = 16_000
                ) -> tuple[float, float]:
    """Where ``ref`` sits in ``deg`` (samples, positive: ``deg`` is later) and how alike they
    are there (normalised cross-correlation peak, 1 = identical). The integer peak within
    ±``max_lag`` is refined by a parabola through it and its two neighbours, so a lag is
    resolved to a small fraction of a sample (playout alignment is judged at 1/3 sample)."""
    from scipy.signal import correlate

    ref = np.asarray(ref, np.float64)
    deg = np.asarray(deg, np.float64)
    norm = float(np.sqrt(np.dot(ref, ref) * np.dot(deg, deg)))
    if not len(ref) or not len(deg) or norm == 0.0:
        return float("nan"), 0.0
    c = correlate(deg, ref, mode="full", method="fft")
    lags = np.arange(-len(ref) + 1, len(deg))
    ok = np.flatnonzero(np.abs(lags) <= max_lag)
    k = int(ok[np.argmax(c[ok])])
    frac = 0.0
    if 0 < k < len(c) - 1:
        a, b, d = c[k - 1], c[k], c[k + 1]
        den = a - 2 * b + d
        frac = float(0.5 * (a - d) / den) if den < 0 else 0.0
    return float(lags[k]) + frac, float(c[k] / norm)
