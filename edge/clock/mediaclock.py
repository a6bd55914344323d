"""Audio media clock: keep a sound card's sample stream locked to PTP time (SPEC §5).

A sound card runs on its own crystal, typically tens of ppm off. Each captured block is
stamped with PTP-disciplined time; ``RateEstimator`` measures the card's rate error against
those stamps (robust Theil–Sen fit over a window); ``MediaClock`` turns it into a resampling
ratio, with a phase term so the output never wanders; ``AdaptiveResampler`` applies that
ratio (windowed-sinc interpolation, ratio changeable every block). The output then carries
exactly ``nominal_rate`` samples per PTP second, so two devices stay sample aligned over hours,
and its RTP timestamps are PTP time in media-clock ticks (AES67: RTP = PTP time × rate, offset
0, i.e. SDP ``a=mediaclk:direct=0``).

How the live loop and the network sender use it::

    stream = PtpLockedStream(nominal_rate=48_000)
    # capture callback (cheap: one clock read and a deque append):
    stream.stamp(len(indata))            # PTP time of the block's first sample ≈ now
    q.put(indata.copy())
    # worker thread:
    out = stream.process(q.get())        # resampled block, locked to PTP time
    k0 = stream.produced - len(out)      # output index of out[0]
    rtp_ts = stream.rtp_timestamp(k0)    # 32-bit RTP timestamp of out[0]
    t_ns = stream.ptp_ns_of_output(k0)   # its PTP time (ns)

Sample indices count from the first stamped sample; times are ns of the PTP-disciplined
clock (CLOCK_REALTIME, which phc2sys steers to PTP on a hardware-timestamping slave, ptp4l
itself with software timestamping). A stamp taken in the callback includes the card's
buffering latency; a constant latency only moves the stream's epoch, never its rate.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge.clock.ptpmath import theil_sen


def ptp_time_ns() -> int:
    """The PTP-disciplined system clock, ns since the epoch."""
    return time.clock_gettime_ns(time.CLOCK_REALTIME)


# --- rate estimation ---------------------------------------------------------------------

@dataclass(frozen=True)
class RateEstimate:
    """ppm: card rate error, positive = the card delivers more samples per PTP second than
    nominal. slope: d(PTP − card time)/d(card time). intercept_ns: PTP time − card time at
    card time 0, from the most recent bins (follows phase quickly). bins: points fitted."""

    ppm: float
    slope: float
    intercept_ns: float
    bins: int


class RateEstimator:
    """Robust estimate of a card's rate error from block stamps.

    Stamps are binned per ``bin_s`` of card time and reduced to the median (callback
    scheduling jitter and late callbacks do not move a median); the bins of the last
    ``window_s`` seconds are fitted with Theil–Sen. A longer window gives a finer estimate
    and a slower reaction to a change of rate (see benchmarks/clock.py).
    """

    def __init__(self, nominal_rate: int, *, window_s: float = 40.0, bin_s: float = 1.0,
                 phase_bins: int = 10, min_bins: int = 5):
        self.rate = nominal_rate
        self.bin_frames = int(round(bin_s * nominal_rate))
        self.max_bins = max(int(window_s / bin_s), 2)
        self.phase_bins = phase_bins
        self.min_bins = min_bins
        self.bins: deque[tuple[float, float]] = deque(maxlen=self.max_bins)  # (x_s, y_ns)
        self._cur = -1
        self._xs: list[np.ndarray] = []
        self._ys: list[np.ndarray] = []
        self.estimate: RateEstimate | None = None

    def add(self, first_sample: np.ndarray, ptp_ns: np.ndarray) -> bool:
        """Add stamps (first sample index, PTP ns) in time order, shape (n,) each. True when
        a bin closed and the estimate was refitted."""
        idx = np.asarray(first_sample, np.int64)
        x = idx / self.rate  # card time, s (exact)
        y = np.asarray(ptp_ns, np.float64) - x * 1e9  # PTP − card time, ns (carries jitter)
        b = idx // self.bin_frames
        refit = False
        for k in np.unique(b):
            sel = b == k
            if k != self._cur:
                refit |= self._close()
                self._cur = int(k)
            self._xs.append(x[sel])
            self._ys.append(y[sel])
        return refit

    def flush(self) -> bool:
        """Close the current bin now (end of a simulation or a test)."""
        return self._close()

    def _close(self) -> bool:
        if not self._xs:
            return False
        x, y = np.concatenate(self._xs), np.concatenate(self._ys)
        self._xs, self._ys = [], []
        self.bins.append((float(np.median(x)), float(np.median(y))))
        if len(self.bins) < self.min_bins:
            return False
        bx = np.array([p[0] for p in self.bins])
        by = np.array([p[1] for p in self.bins])
        slope, _ = theil_sen(bx, by / 1e9)
        recent = slice(-self.phase_bins, None)
        intercept = float(np.median(by[recent] - slope * 1e9 * bx[recent]))
        self.estimate = RateEstimate(ppm=(1.0 / (1.0 + slope) - 1.0) * 1e6, slope=slope,
                                     intercept_ns=intercept, bins=len(bx))
        return True

    def ptp_ns_of(self, sample: float) -> float | None:
        """PTP time (ns) of input sample ``sample`` by the current fit; None before one."""
        e = self.estimate
        if e is None:
            return None
        x = sample / self.rate
        return x * 1e9 * (1.0 + e.slope) + e.intercept_ns


# --- adaptive resampler ------------------------------------------------------------------

class AdaptiveResampler:
    """Windowed-sinc interpolator whose ratio (output/input samples) may change every block.

    ``taps`` input samples per output sample (Kaiser β=8 window, polyphase table with
    ``phases`` entries, linear between them): for ratios within ±0.1% of 1 this keeps
    images and interpolation error below about −70 dB. Latency: taps/2 input samples.
    ``advance`` runs the exact position bookkeeping of ``process`` without touching audio,
    for long simulations.
    """

    def __init__(self, taps: int = 16, phases: int = 512):
        if taps % 2:
            raise ValueError("taps must be even")
        self.taps, self.phases = taps, phases
        half = taps // 2
        # table[p, j]: weight of input sample floor(pos) - half + 1 + j at fraction p/phases
        frac = np.arange(phases + 1) / phases
        j = np.arange(taps) - half + 1
        d = j[None, :] - frac[:, None]
        w = np.kaiser(2 * half * 64 + 1, 8.0)
        win = np.interp(d, np.linspace(-half, half, len(w)), w, left=0.0, right=0.0)
        self.table = (np.sinc(d) * win).astype(np.float64)
        self.table /= self.table.sum(axis=1, keepdims=True)
        self.next_pos = 0.0  # input index (absolute, fractional) of the next output sample
        self.consumed = 0  # input samples received
        self.produced = 0  # output samples emitted
        self._hist = np.zeros(taps, np.float32)  # input samples before the current block
        self._hist_start = -taps  # absolute index of _hist[0]

    def _step(self, n_in: int, ratio: float) -> tuple[float, float, int]:
        """Account ``n_in`` more input samples: (first position, step, outputs now due)."""
        self.consumed += n_in
        limit = self.consumed - self.taps // 2  # last position whose taps are all present
        step = 1.0 / ratio
        start = self.next_pos
        n_out = int(np.floor((limit - start) / step)) + 1 if limit >= start else 0
        self.next_pos = start + n_out * step
        self.produced += n_out
        return start, step, n_out

    def advance(self, n_in: int, ratio: float) -> int:
        """Bookkeeping only: the number of outputs ``process`` would give for ``n_in``."""
        return self._step(n_in, ratio)[2]

    def process(self, block: np.ndarray, ratio: float) -> np.ndarray:
        """Resample one mono block, shape (n,), float32; returns shape (m,), m ≈ n·ratio."""
        block = np.asarray(block, np.float32).reshape(-1)
        buf = np.concatenate([self._hist, block])
        buf_start = self._hist_start
        start, step, n_out = self._step(len(block), ratio)
        pos = start + np.arange(n_out) * step
        half = self.taps // 2
        if len(pos):
            base = np.floor(pos).astype(np.int64)
            fr = (pos - base) * self.phases
            p0 = fr.astype(np.int64)
            a = (fr - p0)[:, None]
            w = self.table[p0] * (1 - a) + self.table[np.minimum(p0 + 1, self.phases)] * a
            idx = (base - half + 1 - buf_start)[:, None] + np.arange(self.taps)[None, :]
            out = np.einsum("ij,ij->i", buf[np.clip(idx, 0, len(buf) - 1)], w)
            out = out.astype(np.float32)
        else:
            out = np.empty(0, np.float32)
        keep = len(buf) - (int(np.floor(self.next_pos)) - half + 1 - buf_start)
        keep = max(min(keep, len(buf)), self.taps)
        self._hist = buf[-keep:]
        self._hist_start = buf_start + len(buf) - keep
        return out


# --- the media clock ---------------------------------------------------------------------

class MediaClock:
    """Block stamps in, resampling ratio out.

    ``ratio = 1/(1 + ε̂) − e/(τ·rate)``: the estimated rate error ε̂ fed forward, plus a
    proportional phase term that pulls the output's phase error ``e`` (samples: outputs
    produced − rate × PTP time elapsed) to zero with time constant ``tau_s``, so estimation
    bias cannot accumulate into drift. Ratio clamped to 1 ± ``max_ppm``.
    """

    def __init__(self, nominal_rate: int = 48_000, *, window_s: float = 40.0,
                 tau_s: float = 20.0, max_ppm: float = 1000.0,
                 clock: Callable[[], int] = ptp_time_ns):
        self.rate = nominal_rate
        self.tau_s = tau_s
        self.max_ppm = max_ppm
        self.clock = clock
        self.estimator = RateEstimator(nominal_rate, window_s=window_s)
        self.captured = 0  # input samples stamped so far
        self.ratio = 1.0
        self.phase_error = 0.0  # samples, last computed
        self.epoch_ns: float | None = None  # PTP time of output sample 0
        self._pending: deque[tuple[int, int]] = deque()
        self._lock = threading.Lock()

    def stamp(self, frames: int, t_ns: int | None = None) -> int:
        """Record that a block of ``frames`` starts now (or at ``t_ns``); returns the index
        of its first sample. Cheap enough for an audio callback."""
        t = self.clock() if t_ns is None else t_ns
        with self._lock:
            first = self.captured
            self.captured += frames
        self._pending.append((first, t))
        return first

    def stamp_many(self, first_sample: np.ndarray, ptp_ns: np.ndarray, frames_total: int
                   ) -> None:
        """Vectorised stamps (simulations, replay): first indices and PTP ns, shape (n,);
        ``frames_total`` samples are then accounted as captured."""
        self.estimator.add(first_sample, ptp_ns)
        self.captured = max(self.captured, frames_total)

    def update(self, in_pos: float, produced: int) -> float:
        """Fold in pending stamps and return the ratio for the next block.

        in_pos: input position of the next output sample; produced: outputs so far (both
        from the resampler).
        """
        if self._pending:
            items = [self._pending.popleft() for _ in range(len(self._pending))]
            arr = np.array(items, np.int64)
            self.estimator.add(arr[:, 0], arr[:, 1])
        e = self.estimator.estimate
        if e is None:
            return self.ratio
        if self.epoch_ns is None:
            self.epoch_ns = self.estimator.ptp_ns_of(0.0)
        t = self.estimator.ptp_ns_of(in_pos)
        self.phase_error = produced - self.rate * (t - self.epoch_ns) / 1e9
        r = 1.0 / (1.0 + e.ppm * 1e-6) - self.phase_error / (self.tau_s * self.rate)
        lim = self.max_ppm * 1e-6
        self.ratio = float(np.clip(r, 1 - lim, 1 + lim))
        return self.ratio

    @property
    def ppm(self) -> float | None:
        """The card's estimated rate error, ppm (None until enough stamps)."""
        e = self.estimator.estimate
        return e.ppm if e else None

    def ptp_ns_of_output(self, k: int) -> int | None:
        """PTP time (ns) of output sample k: epoch + k / rate (the stream is locked)."""
        if self.epoch_ns is None:
            return None
        return int(round(self.epoch_ns + k * 1e9 / self.rate))

    def rtp_timestamp(self, k: int) -> int | None:
        """AES67 RTP timestamp of output sample k: PTP time in media-clock ticks, mod 2^32."""
        if self.epoch_ns is None:
            return None
        return (int(round(self.epoch_ns * self.rate / 1e9)) + k) & 0xFFFFFFFF


class PtpLockedStream:
    """Capture stream → PTP-locked stream: ``stamp`` in the callback, ``process`` in the
    worker. Before the first estimate (about 5 s) blocks pass at ratio 1."""

    def __init__(self, nominal_rate: int = 48_000, *, window_s: float = 40.0,
                 tau_s: float = 20.0, clock: Callable[[], int] = ptp_time_ns, taps: int = 16):
        self.clock = MediaClock(nominal_rate, window_s=window_s, tau_s=tau_s, clock=clock)
        self.resampler = AdaptiveResampler(taps=taps)

    def stamp(self, frames: int, t_ns: int | None = None) -> int:
        return self.clock.stamp(frames, t_ns)

    def process(self, block: np.ndarray) -> np.ndarray:
        r = self.clock.update(self.resampler.next_pos, self.resampler.produced)
        return self.resampler.process(block, r)

    @property
    def produced(self) -> int:
        return self.resampler.produced

    @property
    def ppm(self) -> float | None:
        return self.clock.ppm

    def rtp_timestamp(self, k: int) -> int | None:
        return self.clock.rtp_timestamp(k)

    def ptp_ns_of_output(self, k: int) -> int | None:
        return self.clock.ptp_ns_of_output(k)


# --- simulation (tests, benchmarks) ------------------------------------------------------

@dataclass(frozen=True)
class SimulatedCard:
    """A sound card whose rate error steps: ``segments`` = ((from_ptp_s, ppm), ...) sorted,
    first from 0. Gives true PTP times of samples and jittered block stamps, vectorised."""

    rate: int = 48_000
    segments: tuple[tuple[float, float], ...] = ((0.0, 37.0),)
    block: int = 480
    jitter_ns: float = 100_000.0  # scheduling jitter of the stamp (Gaussian σ)
    late_share: float = 0.01  # callbacks that run late ...
    late_ns: float = 3_000_000.0  # ... by up to this much (uniform)
    latency_ns: float = 10_000_000.0  # constant capture latency
    seed: int = 0

    def _table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = np.array([s[0] for s in self.segments], float)
        r = self.rate * (1 + np.array([s[1] for s in self.segments], float) * 1e-6)
        n = np.concatenate([[0.0], np.cumsum(np.diff(t) * r[:-1])])  # sample at each start
        return t, r, n

    def ptp_s_of_sample(self, p: np.ndarray) -> np.ndarray:
        """True PTP time (s) of input sample(s) p."""
        t, r, n = self._table()
        p = np.asarray(p, float)
        k = np.searchsorted(n, p, side="right") - 1
        return t[k] + (p - n[k]) / r[k]

    def true_ppm(self, ptp_s: float) -> float:
        k = max(i for i, s in enumerate(self.segments) if s[0] <= ptp_s)
        return self.segments[k][1]

    def stamps(self, first_block: int, n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
        """(first sample index (n,), stamp PTP ns (n,)) of blocks first_block..+n_blocks."""
        rng = np.random.default_rng((self.seed, first_block))
        idx = (first_block + np.arange(n_blocks, dtype=np.int64)) * self.block
        t = self.ptp_s_of_sample(idx) * 1e9 + self.latency_ns
        t += rng.normal(0, self.jitter_ns, n_blocks)
        late = rng.random(n_blocks) < self.late_share
        t += late * rng.uniform(0, self.late_ns, n_blocks)
        return idx, np.round(t)


def simulate_lock(card: SimulatedCard, seconds: int, *, window_s: float = 40.0,
                  tau_s: float = 20.0) -> dict[str, np.ndarray]:
    """Run MediaClock + resampler bookkeeping against ``card`` for ``seconds`` of card time,
    updating once a second (fast: no audio is interpolated). Returns per-second arrays:
    t_s (PTP), ppm_est, ppm_true, ratio, phase_true (samples: outputs − rate × true PTP time
    elapsed since input sample 0; a constant part is the epoch's estimation error)."""
    mc = MediaClock(card.rate, window_s=window_s, tau_s=tau_s, clock=lambda: 0)
    rs = AdaptiveResampler()
    blocks_per_s = card.rate // card.block
    out = {k: np.full(seconds, np.nan) for k in ("t_s", "ppm_est", "ppm_true", "ratio",
                                                  "phase_true")}
    for s in range(seconds):
        idx, t = card.stamps(s * blocks_per_s, blocks_per_s)
        mc.stamp_many(idx, t, (s + 1) * blocks_per_s * card.block)
        if s == 0:
            continue  # the first bin closes when the next second's stamps arrive
        ratio = mc.update(rs.next_pos, rs.produced)
        rs.advance(blocks_per_s * card.block, ratio)
        t_true = card.ptp_s_of_sample(rs.next_pos)
        out["t_s"][s] = t_true
        out["ppm_est"][s] = mc.ppm if mc.ppm is not None else np.nan
        out["ppm_true"][s] = card.true_ppm(float(t_true))
        out["ratio"][s] = ratio
        if mc.epoch_ns is not None:
            # Output k should sit at PTP time epoch + k/rate; the epoch is input sample 0's
            # stamp, i.e. its true time (0) plus the capture latency that every stamp carries.
            out["phase_true"][s] = rs.produced - card.rate * t_true
    return out
