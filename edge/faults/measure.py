"""Measure a detected fault's parameters from the audio (pure numpy/scipy, no I/O).

The classifier says *what* and roughly *when* (±10-50 ms); the mixer needs numbers: the
hum fundamental to 0.02 Hz and sample-exact hum/DC/dropout edges (so cancellation does not
leave a burst at the edges), the rumble corner, the howl frequency, the clipping threshold.
All functions take (n,) float32 audio at ``sr`` and sample indices.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, sosfiltfilt, welch

SR = 16_000


def _spectrum(seg: np.ndarray, sr: int, nfft: int = 1 << 18) -> tuple[np.ndarray, np.ndarray]:
    seg = np.asarray(seg, dtype=np.float64)
    mag = np.abs(np.fft.rfft((seg - seg.mean()) * np.hanning(len(seg)), n=nfft))
    return np.fft.rfftfreq(nfft, 1 / sr), mag


def hum_fundamental(seg: np.ndarray, sr: int = SR, n_harm: int = 5) -> float:
    """Mains fundamental (Hz) near 50 or 60: the comb over ``n_harm`` harmonics that collects
    the most log magnitude, searched on a 0.01 Hz grid of a zero-padded spectrum."""
    f, mag = _spectrum(seg, sr)
    logm = np.log(mag + 1e-12)
    best, best_f = -np.inf, 50.0
    for f0s in (np.arange(48.0, 52.0, 0.01), np.arange(58.0, 62.0, 0.01)):
        score = sum(np.interp(k * f0s, f, logm) for k in range(1, n_harm + 1))
        i = int(np.argmax(score))
        if score[i] > best:
            best, best_f = score[i], float(f0s[i])
    return best_f


def hum_harmonics(seg: np.ndarray, f0: float, sr: int = SR, max_harm: int = 12,
                  above_db: float = 10.0) -> int:
    """Highest harmonic k whose peak stands ``above_db`` over the spectrum 5-15 Hz beside it."""
    f, mag = _spectrum(seg, sr)
    db = 20 * np.log10(mag + 1e-12)
    top = 1
    for k in range(1, max_harm + 1):
        fk = k * f0
        if fk > sr / 2 - 50:
            break
        peak = np.interp(fk, f, db)
        side = np.r_[np.interp(fk + np.arange(5, 15), f, db), np.interp(fk - np.arange(5, 15),
                                                                        f, db)]
        if peak - np.median(side) >= above_db:
            top = k
    return top


def tone_envelope(x: np.ndarray, freqs: list[float], sr: int = SR, lp_hz: float = 40.0
                  ) -> np.ndarray:
    """(n,) summed magnitude of the complex baseband at each frequency, low-passed (zero
    phase): how strongly the tones are present at every sample."""
    t = np.arange(len(x)) / sr
    sos = butter(2, lp_hz, fs=sr, output="sos")
    env = np.zeros(len(x))
    for fk in freqs:
        bb = x * np.exp(-2j * np.pi * fk * t)
        env += np.abs(sosfiltfilt(sos, bb.real) + 1j * sosfiltfilt(sos, bb.imag))
    return env


def refine_span(env: np.ndarray, start: int, end: int, sr: int = SR, search_s: float = 0.08
                ) -> tuple[int, int]:
    """Edges where ``env`` crosses half its plateau (median inside the rough span), searched
    within ``search_s`` of the rough edges."""
    s, e = max(0, start), min(len(env), end)
    if e - s < 8:
        return start, end
    inner = env[s + (e - s) // 4: e - (e - s) // 4 or e]
    half = 0.5 * float(np.median(inner if inner.size else env[s:e]))
    w = int(search_s * sr)
    a0, a1 = max(0, s - w), min(len(env), s + w)
    above = env[a0:a1] >= half
    i = np.flatnonzero(above)
    s2 = a0 + int(i[0]) if i.size else s
    b0, b1 = max(0, e - w), min(len(env), e + w)
    j = np.flatnonzero(env[b0:b1] >= half)
    e2 = b0 + int(j[-1]) + 1 if j.size else e
    return (s2, e2) if e2 > s2 else (s, e)


def rumble_corner(seg: np.ndarray, sr: int = SR, drop_db: float = 25.0,
                  lo: float = 40.0, hi: float = 300.0) -> float:
    """High-pass corner (Hz) for wind/rumble: the first frequency above the low-frequency peak
    (below 150 Hz) where the spectrum has fallen ``drop_db`` below that peak."""
    f, p = welch(np.asarray(seg, dtype=np.float64), fs=sr, nperseg=min(len(seg), 4096))
    db = 10 * np.log10(p + 1e-20)
    band = (f >= 5) & (f <= 150)
    if not band.any():
        return lo
    ipk = int(np.flatnonzero(band)[np.argmax(db[band])])
    below = np.flatnonzero(db[ipk:] <= db[ipk] - drop_db)
    fc = float(f[ipk + below[0]]) if below.size else hi
    return float(np.clip(fc, lo, hi))


def howl_frequency(seg: np.ndarray, sr: int = SR, lo: float = 150.0, hi: float = 7000.0
                   ) -> float:
    """Frequency (Hz) of the strongest narrowband peak, measured on the loudest half of the
    segment (feedback grows, so its end is where it is clearest)."""
    seg = np.asarray(seg, dtype=np.float64)
    half = seg[len(seg) // 2:] if len(seg) >= 2048 else seg
    f, mag = _spectrum(half, sr, nfft=1 << 17)
    band = (f >= lo) & (f <= hi)
    return float(f[np.flatnonzero(band)[np.argmax(mag[band])]])


def dc_step_edges(x: np.ndarray, start: int, end: int, sr: int = SR, search_s: float = 0.08,
                  win: int = 320) -> tuple[int, int, float]:
    """(start, end, offset): sample-exact edges of a DC step and its size (FS), from the
    change of the running mean around each rough edge."""
    x = np.asarray(x, dtype=np.float64)
    c = np.concatenate([[0.0], np.cumsum(x)])

    def step_at(rough: int, sign: float) -> int:
        w = int(search_s * sr)
        lo, hi = max(win, rough - w), min(len(x) - win, rough + w)
        if hi <= lo:
            return int(np.clip(rough, 0, len(x)))
        i = np.arange(lo, hi)
        d = (c[i + win] - c[i]) / win - (c[i] - c[i - win]) / win
        return int(i[np.argmax(sign * d)])

    s, e = max(0, start), min(len(x), end)
    offset = float(np.mean(x[s:e]) - np.mean(np.r_[x[max(0, s - sr // 2):s],
                                                   x[e:e + sr // 2]] if s or e < len(x)
                                              else 0.0))
    sign = 1.0 if offset >= 0 else -1.0
    s2 = step_at(s, sign) if s > 0 else 0
    e2 = step_at(e, -sign) if e < len(x) else len(x)
    if e2 <= s2:
        s2, e2 = s, e
    outside = np.r_[x[max(0, s2 - sr // 2):s2], x[e2:e2 + sr // 2]]
    offset = float(np.mean(x[s2:e2]) - (np.mean(outside) if outside.size else 0.0))
    return s2, e2, offset


def zero_runs(x: np.ndarray, start: int, end: int, sr: int = SR, margin_s: float = 0.06,
              min_len: int = 24, eps: float = 1e-6) -> list[tuple[int, int]]:
    """Sample-exact [start, end) runs of digital silence (|x| <= eps) near a rough span."""
    m = int(margin_s * sr)
    a, b = max(0, start - m), min(len(x), end + m)
    z = np.abs(np.asarray(x[a:b])) <= eps
    if not z.any():
        return []
    d = np.diff(np.r_[0, z.astype(np.int8), 0])
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    return [(a + int(s), a + int(e)) for s, e in zip(starts, ends, strict=True)
            if e - s >= min_len]


def clip_level(seg: np.ndarray) -> tuple[float, float]:
    """(threshold, fraction of samples at it): the flat-top level of a clipped segment."""
    a = np.abs(np.asarray(seg, dtype=np.float64))
    thr = float(a.max()) if a.size else 0.0
    frac = float(np.mean(a >= 0.995 * thr)) if thr > 0 else 0.0
    return thr, frac


def noise_floor_db(seg: np.ndarray, frame: int = 320) -> float:
    """Level (dBFS) of the quietest 10 % of 20 ms frames: the hiss/noise floor."""
    seg = np.asarray(seg, dtype=np.float64)
    n = len(seg) // frame
    if n == 0:
        return float(10 * np.log10(np.mean(seg ** 2) + 1e-20))
    e = np.mean(seg[: n * frame].reshape(n, frame) ** 2, axis=1)
    return float(10 * np.log10(np.percentile(e, 10) + 1e-20))


def measure(kind: str, x: np.ndarray, start: int, end: int, sr: int = SR) -> dict:
    """Everything the strategy for ``kind`` needs, measured on x around [start, end)."""
    start, end = max(0, int(start)), min(len(x), int(end))
    seg = np.asarray(x[start:end], dtype=np.float64)
    if kind == "hum":
        f0 = hum_fundamental(seg, sr)
        n = hum_harmonics(seg, f0, sr)
        s, e = refine_span(tone_envelope(x, [f0 * k for k in range(1, min(n, 3) + 1)], sr),
                           start, end, sr)
        return {"f0_hz": round(f0, 3), "harmonics": n, "start": s, "end": e}
    if kind == "rumble":
        return {"corner_hz": round(rumble_corner(seg, sr), 1), "start": start, "end": end}
    if kind == "howl":
        return {"freq_hz": round(howl_frequency(seg, sr), 2), "start": start, "end": end}
    if kind == "dc":
        s, e, off = dc_step_edges(x, start, end, sr)
        return {"offset": round(off, 5), "start": s, "end": e}
    if kind == "dropout":
        runs = zero_runs(x, start, end, sr)
        s, e = (runs[0][0], runs[-1][1]) if runs else (start, end)
        return {"runs": [list(r) for r in runs], "start": s, "end": e}
    if kind == "clipping":
        thr, frac = clip_level(seg)
        return {"threshold": round(thr, 5), "clipped_fraction": round(frac, 4),
                "start": start, "end": end}
    if kind == "hiss":
        return {"floor_dbfs": round(noise_floor_db(seg), 1), "start": start, "end": end}
    return {"start": start, "end": end}
