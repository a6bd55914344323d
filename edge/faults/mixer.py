"""The digital mixer: a channel strip of real DSP whose settings change without clicks.

Two ways in:

* ``fix(x, events, strategies)`` (offline): each event's strategy is rendered over the
  event's region (with filter pre-roll, so filters have settled) and crossfaded into the
  programme with raised-cosine ramps outside the event; sample-exact repairs (DC step,
  dropout fill) replace exactly the measured span, which itself removes the step.
* ``Mixer.process(block)`` (streaming): the strip (DC blocker, high-pass, notch bank, gain,
  limiter) keeps its filter state across blocks; ``Mixer.set(...)`` builds a new strip warmed
  on the last 50 ms of input and crossfades old → new over ``ramp_ms``.

Every DSP op is a pure function of (samples, parameters) built on scipy.signal.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.linalg import solve_toeplitz
from scipy.signal import (
    butter,
    iirnotch,
    lfilter,
    lfiltic,
    sosfilt,
    sosfilt_zi,
    sosfiltfilt,
    tf2sos,
)

from edge.dsp import istft, stft
from edge.faults.events import Event

SR = 16_000


# ------------------------------------------------------------------------------- DSP ops
def highpass_sos(fc: float, order: int = 8, sr: int = SR) -> np.ndarray:
    return butter(order, fc, "highpass", fs=sr, output="sos")


def notch_sos(freqs: list[float], bw_hz: float = 4.0, sr: int = SR) -> np.ndarray:
    """Cascade of second-order notches, each ``bw_hz`` wide (-3 dB) at its frequency."""
    secs = [tf2sos(*iirnotch(f, f / bw_hz, fs=sr)) for f in freqs if 0 < f < sr / 2 - 10]
    return np.concatenate(secs) if secs else np.zeros((0, 6))


def peaking_sos(f: float, gain_db: float, q: float = 1.0, sr: int = SR) -> np.ndarray:
    """RBJ peaking EQ biquad."""
    a = 10 ** (gain_db / 40)
    w = 2 * np.pi * f / sr
    al = np.sin(w) / (2 * q)
    b = [1 + al * a, -2 * np.cos(w), 1 - al * a]
    den = [1 + al / a, -2 * np.cos(w), 1 - al / a]
    return tf2sos(b, den)


def filt(x: np.ndarray, sos: np.ndarray) -> np.ndarray:
    """Causal filtering with the state primed on the first sample (no start-up step)."""
    if len(sos) == 0 or len(x) == 0:
        return np.asarray(x, dtype=np.float64)
    return sosfilt(sos, x, zi=sosfilt_zi(sos) * x[0])[0]


def cancel_tones(x: np.ndarray, freqs: list[float], sr: int = SR) -> np.ndarray:
    """Subtract the least-squares fit of sinusoids at ``freqs`` (amplitude with a linear
    trend per tone) from x: removes a stationary hum without a filter's onset transient."""
    n = len(x)
    t = np.arange(n) / sr
    u = np.linspace(-1, 1, n)
    cols = []
    for f in freqs:
        c, s = np.cos(2 * np.pi * f * t), np.sin(2 * np.pi * f * t)
        cols += [c, s, c * u, s * u]
    if not cols:
        return np.asarray(x, dtype=np.float64)
    a = np.stack(cols, axis=1)
    coef, *_ = np.linalg.lstsq(a, x, rcond=None)
    return x - a @ coef


def spectral_gate(x: np.ndarray, over: float = 1.5, floor_db: float = -18.0,
                  pct: float = 10.0, span: tuple[int, int] | None = None) -> np.ndarray:
    """Stationary-noise reduction: noise power per bin = ``pct``-th percentile over frames,
    Wiener-like gain ``max(1 - over * N / P, floor)`` smoothed over time (edge.dsp STFT)."""
    spec = stft(x)
    p = np.abs(spec) ** 2
    a, b = ((span[0] // 160 + 2, span[1] // 160) if span else (0, len(p)))
    ref = p[a:b] if b - a >= 10 else p  # the noise estimate comes from the faulty span only
    noise = np.percentile(ref, pct, axis=0, keepdims=True) * 1.8  # percentile → mean (chi²)
    g = np.maximum(1 - over * noise / (p + 1e-20), 10 ** (floor_db / 20))
    g = lfilter([0.5], [1, -0.5], g, axis=0)  # one-pole smoothing: less musical noise
    return istft(spec * g, len(x)).astype(np.float64)


def expander(x: np.ndarray, threshold_db: float, ratio: float = 2.0, sr: int = SR,
             attack_ms: float = 5.0, release_ms: float = 80.0) -> np.ndarray:
    """Downward expander: below ``threshold_db`` the level falls ``ratio`` times faster."""
    env = np.sqrt(lfilter([1 - np.exp(-1 / (sr * release_ms / 1000))],
                          [1, -np.exp(-1 / (sr * release_ms / 1000))], x ** 2) + 1e-20)
    lvl = 20 * np.log10(env)
    gain_db = np.where(lvl < threshold_db, (lvl - threshold_db) * (ratio - 1), 0.0)
    a = np.exp(-1 / (sr * attack_ms / 1000))
    g = lfilter([1 - a], [1, -a], 10 ** (np.maximum(gain_db, -30) / 20))
    return x * g


def limiter(x: np.ndarray, ceiling: float = 0.98, sr: int = SR, release_ms: float = 50.0
            ) -> np.ndarray:
    """Peak limiter: gain = ceiling / peak where the peak exceeds it, instant attack
    (2 ms look-ahead by a zero-phase max filter) and exponential release."""
    a = np.abs(x)
    if a.max(initial=0.0) <= ceiling:
        return x
    la = int(0.002 * sr)
    from scipy.ndimage import maximum_filter1d
    peak = maximum_filter1d(a, 2 * la + 1)
    g = np.minimum(1.0, ceiling / np.maximum(peak, 1e-9))
    r = np.exp(-1 / (sr * release_ms / 1000))
    out = np.empty_like(g)
    cur = 1.0
    for i, gi in enumerate(g):  # min-hold with release: never above the needed gain
        cur = gi if gi < cur else gi + (cur - gi) * r
        out[i] = cur
    return x * out


def declip(x: np.ndarray, threshold: float, ctx: int = 24, max_gain: float = 2.0,
           bad: np.ndarray | None = None) -> np.ndarray:
    """Replace runs of samples at the clipping level by a cubic spline through the unclipped
    neighbours (``ctx`` samples either side), kept between the clip level and ``max_gain``
    times it. ``bad``: which samples to replace (default: all at >= 99.5 % of the level)."""
    y = np.asarray(x, dtype=np.float64).copy()
    bad = np.abs(y) >= 0.995 * threshold if bad is None else np.asarray(bad, dtype=bool)
    if not bad.any() or bad.all():
        return y
    d = np.diff(np.r_[0, bad.astype(np.int8), 0])
    for s, e in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1), strict=True):
        if e - s < 2:
            continue
        idx = np.r_[np.arange(max(0, s - ctx), s), np.arange(e, min(len(y), e + ctx))]
        idx = idx[~bad[idx]]
        if len(idx) < 4:
            continue
        sign = np.sign(y[s:e])  # per sample: a run may flip from +clip to -clip
        est = CubicSpline(idx, y[idx])(np.arange(s, e)) * sign
        # consistent with the clipping: at least the clip level, and no wild overshoot
        y[s:e] = sign * np.clip(est, threshold, max_gain * threshold)
    return y


def lpc_extrapolate(past: np.ndarray, n: int, order: int = 16) -> np.ndarray:
    """Continue ``past`` by ``n`` samples with its linear-prediction (autocorrelation
    method, always stable) filter run on zero input from the last ``order`` samples."""
    past = np.asarray(past, dtype=np.float64)
    if len(past) <= 2 * order or not np.any(past):
        return np.zeros(n)
    w = past * np.hanning(len(past))
    r = np.correlate(w, w, "full")[len(w) - 1:len(w) + order]
    r[0] *= 1 + 1e-6
    if r[0] <= 0:
        return np.zeros(n)
    a = np.r_[1.0, solve_toeplitz(r[:order], -r[1:order + 1])]
    zi = lfiltic([1.0], a, past[::-1][:order])
    return lfilter([1.0], a, np.zeros(n), zi=zi)[0]


def fill_gap(x: np.ndarray, s: int, e: int, ctx: int = 480) -> np.ndarray:
    """Conceal a dropout [s, e): linear prediction forward from the audio before it and
    backward from the audio after it, crossfaded; each prediction fades to silence over
    20 ms (longer guesses are wrong more often than right). Continuous at both edges."""
    y = np.asarray(x, dtype=np.float64).copy()
    n = e - s
    if n <= 0:
        return y
    fwd = lpc_extrapolate(y[max(0, s - ctx):s], n)
    bwd = lpc_extrapolate(y[e:e + ctx][::-1], n)[::-1]
    f = min(n, 320)
    fade = np.zeros(n)
    fade[:f] = 0.5 + 0.5 * np.cos(np.pi * np.arange(f) / f)
    fwd *= fade
    bwd *= fade[::-1]
    w = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)
    if s == 0:
        w[:] = 1.0
    if e >= len(y):
        w[:] = 0.0
    y[s:e] = (1 - w) * fwd + w * bwd
    return y


def crossfade_weight(n: int, s: int, e: int, ramp: int) -> np.ndarray:
    """(n,) 0 → 1 over [s - ramp, s), 1 on [s, e), 1 → 0 over [e, e + ramp)."""
    w = np.zeros(n)
    w[max(0, s):min(n, e)] = 1.0
    r = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)
    for i, v in enumerate(r):
        if 0 <= s - ramp + i < n:
            w[s - ramp + i] = max(w[s - ramp + i], v)
        if 0 <= e + ramp - 1 - i < n:
            w[e + ramp - 1 - i] = max(w[e + ramp - 1 - i], v)
    return w


# ------------------------------------------------------------------------------ offline
def render(op: str, p: dict, x: np.ndarray, s: int, e: int, sr: int = SR, offset: int = 0
           ) -> np.ndarray:
    """One strategy step over region x (event at [s, e) of x; the region starts at sample
    ``offset`` of the programme, which absolute spans such as dropout runs refer to)."""
    if op == "highpass":
        return filt(x, highpass_sos(p["corner_hz"], int(p.get("order", 8)), sr))
    if op == "notch":
        return sosfiltfilt(notch_sos(p["freqs"], p.get("bw_hz", 4.0), sr), x) \
            if len(x) > 60 else x
    if op == "cancel_tones":
        y = x.copy()
        y[s:e] = cancel_tones(x[s:e], p["freqs"], sr)
        return y
    if op == "gain":
        return x * 10 ** (p["db"] / 20)
    if op == "gate":
        return spectral_gate(x, p.get("over", 1.5), p.get("floor_db", -18.0), span=(s, e))
    if op == "expander":
        return expander(x, p["threshold_db"], p.get("ratio", 2.0), sr)
    if op == "limiter":
        return limiter(x, p.get("ceiling", 0.98), sr)
    if op == "eq":
        return filt(x, peaking_sos(p["freq_hz"], p["gain_db"], p.get("q", 1.0), sr))
    if op == "dc_subtract":
        y = x.copy()
        y[s:e] -= p["offset"]
        return y
    if op == "declip":
        return declip(x, p["threshold"])
    if op == "conceal":
        y = x.copy()
        for a, b in p["runs"]:
            y = fill_gap(y, a - offset, b - offset)
        return y
    raise ValueError(f"unknown mixer op {op!r}")


EXACT_OPS = {"dc_subtract", "conceal", "cancel_tones"}  # sample-exact: no crossfade


def apply_steps(x: np.ndarray, steps: list[tuple[str, dict]], start: int, end: int,
                sr: int = SR, ramp_ms: float = 15.0, preroll_ms: float = 150.0) -> np.ndarray:
    """Apply one event's steps to (n,) x over [start, end), click-free; returns a new array."""
    y = np.asarray(x, dtype=np.float64).copy()
    ramp, pre = int(ramp_ms * sr / 1000), int(preroll_ms * sr / 1000)
    a, b = max(0, start - ramp - pre), min(len(y), end + ramp + pre)
    for op, p in steps:
        region = y[a:b]
        z = render(op, p, region, start - a, end - a, sr, a)
        if op in EXACT_OPS:
            y[a:b] = z
        else:
            w = crossfade_weight(b - a, start - a, end - a, ramp)
            y[a:b] = region + w * (z - region)
    return y


def fix(x: np.ndarray, events: list[Event], strategies, sr: int = SR) -> np.ndarray:
    """Apply each event's strategy (``strategies.plan(event)``) in the repair order."""
    y = np.asarray(x, dtype=np.float64)
    for ev in sorted(events, key=lambda e: strategies.order(e.kind)):
        steps = strategies.plan(ev)
        if not steps:
            continue
        s = int(ev.params.get("start", round(ev.start_s * sr)))
        e = int(ev.params.get("end", round(ev.end_s * sr)))
        y = apply_steps(y, steps, s, e, sr)
    return np.clip(limiter(y, 0.98, sr), -1, 1).astype(np.float32)


# ---------------------------------------------------------------------------- streaming
class StreamExpander:
    """``expander`` with its envelope and gain state kept across blocks: the live hiss gate
    (below ``threshold_db`` the level falls ``ratio`` times faster, at most 30 dB)."""

    def __init__(self, threshold_db: float, ratio: float = 2.0, sr: int = SR,
                 attack_ms: float = 5.0, release_ms: float = 80.0):
        self.threshold_db, self.ratio = threshold_db, ratio
        self.r = np.exp(-1 / (sr * release_ms / 1000))
        self.a = np.exp(-1 / (sr * attack_ms / 1000))
        self.zi_env, self.zi_g = np.zeros(1), np.ones(1) * (1 - self.a)

    def process(self, x: np.ndarray) -> np.ndarray:
        env, self.zi_env = lfilter([1 - self.r], [1, -self.r], x ** 2, zi=self.zi_env)
        lvl = 10 * np.log10(env + 1e-20)
        gain_db = np.where(lvl < self.threshold_db,
                           (lvl - self.threshold_db) * (self.ratio - 1), 0.0)
        g, self.zi_g = lfilter([1 - self.a], [1, -self.a], 10 ** (np.maximum(gain_db, -30) / 20),
                               zi=self.zi_g)
        return x * g


class Strip:
    """Causal channel strip with state: DC blocker → high-pass → notches → gain → hiss
    gate (downward expander below ``expand_below_db``) → limiter."""

    def __init__(self, highpass_hz: float | None = None, notches: tuple[float, ...] = (),
                 gain_db: float = 0.0, dc_block: bool = True, ceiling: float = 0.98,
                 sr: int = SR, expand_below_db: float | None = None):
        secs = []
        if dc_block:  # 1st-order DC blocker, corner ≈ 5 Hz
            secs.append(tf2sos([1, -1], [1, -(1 - 2 * np.pi * 5 / sr)]))
        if highpass_hz:
            secs.append(highpass_sos(highpass_hz, 8, sr))
        if notches:
            secs.append(notch_sos(list(notches), 4.0, sr))
        self.sos = np.concatenate(secs) if secs else np.zeros((0, 6))
        self.zi = np.zeros((len(self.sos), 2))
        self.gain = 10 ** (gain_db / 20)
        self.expander = StreamExpander(expand_below_db, sr=sr) \
            if expand_below_db is not None else None
        self.ceiling, self.g_lim = ceiling, 1.0
        self.release = np.exp(-1 / (sr * 0.05))

        self._mats: dict[int, tuple] = {}

    def _matrices(self, n: int) -> tuple:
        """The cascade as block state space for n-sample blocks (exact, built by running
        sosfilt on unit inputs and states): y = D x + C z, z' = B x + A z. One matmul per
        block is ~10x cheaper than sosfilt's per-call overhead on 160 samples."""
        if n not in self._mats:
            ns = self.zi.size
            d, b = np.zeros((n, n)), np.zeros((ns, n))
            c, a = np.zeros((n, ns)), np.zeros((ns, ns))
            imp, zf = sosfilt(self.sos, np.r_[1.0, np.zeros(n - 1)],
                              zi=np.zeros_like(self.zi))
            for k in range(n):  # time invariance: column k is the impulse response shifted
                d[k:, k] = imp[:n - k]
            for k in range(n):
                e = np.zeros(n)
                e[k] = 1.0
                b[:, k] = sosfilt(self.sos, e, zi=np.zeros_like(self.zi))[1].ravel()
            for j in range(ns):
                z0 = np.zeros(ns)
                z0[j] = 1.0
                out, zf = sosfilt(self.sos, np.zeros(n), zi=z0.reshape(self.zi.shape))
                c[:, j], a[:, j] = out, zf.ravel()
            self._mats[n] = (d, c, b, a)
        return self._mats[n]

    def process(self, x: np.ndarray) -> np.ndarray:
        y = np.asarray(x, dtype=np.float64)
        if len(self.sos) and len(y) == 160:
            d, c, b, a = self._matrices(len(y))
            z = self.zi.ravel()
            y, z = d @ y + c @ z, b @ y + a @ z
            self.zi = z.reshape(self.zi.shape)
        elif len(self.sos):
            y, self.zi = sosfilt(self.sos, y, zi=self.zi)
        if self.gain != 1.0:
            y = y * self.gain
        if self.expander is not None:
            y = self.expander.process(y)
        peak = max(y.max(initial=0.0), -y.min(initial=0.0))
        if peak <= self.ceiling and self.g_lim == 1.0:
            return y  # the usual case: the limiter is idle
        need = min(1.0, self.ceiling / peak) if peak > 0 else 1.0
        target = min(need, 1 - (1 - self.g_lim) * self.release ** len(y))
        if target > 0.9999:
            target = 1.0
        ramp = np.arange(1, len(y) + 1) / len(y)
        g = self.g_lim + (target - self.g_lim) * ramp  # ramp per block, no step
        self.g_lim = target
        return y * g


class Mixer:
    """Streaming mixer for the live loop: ``process(block) -> block`` (same length, float32).

    ``set(highpass_hz=..., notches=..., gain_db=...)`` swaps in a new strip, warmed up on
    the last 50 ms of input, and crossfades to it over ``ramp_ms`` (parameter changes never
    click). The live loop maps events to settings with ``Strategies.live_settings``.
    """

    def __init__(self, sr: int = SR, ramp_ms: float = 30.0):
        self.sr = sr
        self.ramp = int(ramp_ms * sr / 1000)
        self.strip = Strip(sr=sr)
        self.settings: dict = {}
        self._next: Strip | None = None
        self._fade_pos = 0
        self._hist = np.zeros(int(0.05 * sr))

    def set(self, **settings) -> None:
        if settings == self.settings:
            return
        self.settings = settings
        new = Strip(sr=self.sr, **settings)
        new.process(self._hist)  # warm the filters on recent input: no start-up transient
        new.g_lim = self.strip.g_lim
        self._next, self._fade_pos = new, 0

    def process(self, block: np.ndarray) -> np.ndarray:
        x = np.asarray(block, dtype=np.float64)
        y = self.strip.process(x)
        if self._next is not None:
            y2 = self._next.process(x)
            i = self._fade_pos + np.arange(len(x))
            w = np.clip((i + 1) / self.ramp, 0, 1)
            w = 0.5 - 0.5 * np.cos(np.pi * w)
            y = (1 - w) * y + w * y2
            self._fade_pos += len(x)
            if self._fade_pos >= self.ramp:
                self.strip, self._next = self._next, None
        n = min(len(x), len(self._hist))
        self._hist[:-n] = self._hist[n:]
        self._hist[-n:] = x[-n:]
        return y.astype(np.float32)
