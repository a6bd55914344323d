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
HOWL_BAND_HZ = (150.0, 7000.0)  # howl_frequency's search band
MAINS_TOLERANCE = 0.015  # mains is 50 or 60 Hz within ±1.5 % (grids hold ±0.4 %)


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


def tone_prominence_db(seg: np.ndarray, freqs: list[float], sr: int = SR,
                       side_hz: tuple[float, float] = (5.0, 15.0)) -> float:
    """Largest height (dB) of a tone at ``freqs`` over the median spectrum ``side_hz`` away
    on both sides: a steady tone stands out, speech harmonics (gliding pitch) hardly do."""
    f, mag = _spectrum(seg, sr)
    db = 20 * np.log10(mag + 1e-12)
    best = -np.inf
    off = np.linspace(side_hz[0], side_hz[1], 12)
    for fk in freqs:
        side = np.r_[np.interp(fk + off, f, db), np.interp(fk - off, f, db)]
        best = max(best, float(np.interp(fk, f, db) - np.median(side)))
    return best


def low_frequency_excess_db(seg: np.ndarray, sr: int = SR, split_hz: float = 150.0) -> float:
    """Power below ``split_hz`` over power from there to 1 kHz (dB); speech is well below 0."""
    f, p = welch(np.asarray(seg, dtype=np.float64), fs=sr, nperseg=min(len(seg), 2048))
    lo, hi = p[(f > 0) & (f < split_hz)].sum(), p[(f >= split_hz) & (f < 1000)].sum()
    return float(10 * np.log10((lo + 1e-20) / (hi + 1e-20)))


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


def howl_frequency(seg: np.ndarray, sr: int = SR, lo: float = HOWL_BAND_HZ[0],
                   hi: float = HOWL_BAND_HZ[1]) -> float:
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
    """(threshold, fraction of samples at it): the level where samples pile up (a hard
    clipper's flat tops), found among the loudest 10 % so louder unclipped audio just
    outside a clipped span does not fool it; (peak, ~0) when there is no plateau."""
    a = np.abs(np.asarray(seg, dtype=np.float64))
    if not a.size or a.max() <= 0:
        return 0.0, 0.0
    top = a[a >= np.percentile(a, 90)]
    q = np.round(top / (a.max() * 2e-3))  # 0.2 % of the peak per bin
    vals, counts = np.unique(q, return_counts=True)
    thr = float(vals[np.argmax(counts)] * a.max() * 2e-3)
    near = np.abs(a - thr) <= 0.003 * a.max()
    frac = float(np.mean(near))
    if frac < 0.002:  # no plateau: not hard clipping
        return float(a.max()), frac
    vals, counts = np.unique(a[near], return_counts=True)
    return float(vals[np.argmax(counts)]), frac  # the exact flat-top value


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
        prom = tone_prominence_db(seg, [f0 * k for k in range(1, 4)], sr)
        return {"f0_hz": round(f0, 3), "harmonics": n, "prominence_db": round(prom, 1),
                "start": s, "end": e}
    if kind == "rumble":
        return {"corner_hz": round(rumble_corner(seg, sr), 1),
                "lf_excess_db": round(low_frequency_excess_db(seg, sr), 1),
                "start": start, "end": end}
    if kind == "howl":
        f = howl_frequency(seg, sr)
        env = tone_envelope(x, [f], sr)
        e = end
        tail = env[max(start, end - (end - start) // 4):end]
        if tail.size:  # feedback stops abruptly: the end is where its tone falls to half
            w0, w1 = int(0.25 * sr), int(0.08 * sr)
            a0 = max(start, end - w0)
            j = np.flatnonzero(env[a0:min(len(x), end + w1)] >= 0.5 * float(np.median(tail)))
            e = a0 + int(j[-1]) + 1 if j.size else end
        prom = tone_prominence_db(seg[len(seg) // 2:], [f], sr, side_hz=(20.0, 80.0))
        before = env[max(0, start - int(0.3 * sr)):start]
        late = env[max(start, end - (end - start) // 4):end]
        growth = 20 * np.log10((np.median(late) + 1e-9) / (np.median(before) + 1e-9)) \
            if before.size and late.size else 0.0
        return {"freq_hz": round(f, 2), "prominence_db": round(prom, 1),
                "growth_db": round(float(growth), 1), "start": start,
                "end": max(e, start + 1)}
    if kind == "dc":
        s, e, off = dc_step_edges(x, start, end, sr)
        return {"offset": round(off, 5), "start": s, "end": e}
    if kind == "dropout":  # silence at the very start/end of a file is not a dropout
        runs = [r for r in zero_runs(x, start, end, sr) if r[0] > 0 and r[1] < len(x)]
        s, e = (runs[0][0], runs[-1][1]) if runs else (start, end)
        return {"runs": [list(r) for r in runs], "start": s, "end": e}
    if kind == "clipping":
        m = int(0.08 * sr)
        a0 = max(0, start - m)
        wide = np.asarray(x[a0:min(len(x), end + m)], dtype=np.float64)
        thr, frac = clip_level(wide)
        s, e = start, end
        # flat tops sit exactly at the clip level; loud unclipped audio nearby only passes it
        flat = np.abs(np.abs(wide) - thr) <= 1e-4 * thr + 1e-7
        flat &= np.r_[flat[1:], False] | np.r_[False, flat[:-1]]  # runs of >= 2 samples
        at = np.flatnonzero(flat) if frac >= 0.002 else []
        if len(at) >= 8:  # hard clipping: the first and last flat-topped sample
            s, e = a0 + int(at[0]), a0 + int(at[-1]) + 1
        return {"threshold": round(thr, 5), "clipped_fraction": round(frac, 4),
                "flat_samples": len(at), "start": s, "end": e}
    if kind == "hiss":
        return {"floor_dbfs": round(noise_floor_db(seg), 1), "start": start, "end": end}
    return {"start": start, "end": end}


# What a measurement must show for a detection to stand (a physical second opinion that
# removes most false alarms on clean speech; the classifier alone is the first).
CONFIRM = {"hum": ("prominence_db", 10.0), "howl": ("prominence_db", 15.0),
           "rumble": ("lf_excess_db", -6.0), "dc": ("abs_offset", 0.01)}
HOWL_GROWTH_DB = 6.0  # feedback builds up; a steady tone in the room does not
CLIP_FLAT_SAMPLES = 16  # hard clipping leaves flat tops; soft clipping needs high confidence
CLIP_SOFT_CONFIDENCE = 0.99


def confirmed(kind: str, params: dict, confidence: float = 1.0) -> bool:
    """False when the measurement contradicts the classifier (no tone, no offset, ...).

    Besides the thresholds above: a hum whose best comb sits off the mains frequency, and a
    howl whose strongest peak is at the edge of the search band (so no peak at all, only the
    slope of something outside it), are not what the classifier thought.
    """
    if kind == "hum" and "f0_hz" in params and min(
            abs(params["f0_hz"] / m - 1.0) for m in (50.0, 60.0)) > MAINS_TOLERANCE:
        return False
    if kind == "howl" and "freq_hz" in params and not (
            HOWL_BAND_HZ[0] + 2.0 < params["freq_hz"] < HOWL_BAND_HZ[1] - 2.0):
        return False
    if kind == "dropout":
        return bool(params.get("runs"))
    if kind == "clipping":
        return (params.get("flat_samples", 0) >= CLIP_FLAT_SAMPLES
                or confidence >= CLIP_SOFT_CONFIDENCE)
    if kind == "howl" and params.get("growth_db", 0.0) < HOWL_GROWTH_DB:
        return False
    if kind not in CONFIRM:
        return True
    key, least = CONFIRM[kind]
    value = abs(params.get("offset", 0.0)) if key == "abs_offset" else params.get(key)
    return value is not None and value >= least
