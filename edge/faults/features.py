"""Log-mel features for the fault classifier, built on the one STFT front end (edge.dsp).

The classifier sees ``N_MELS`` log-mel bands of the shared 20 ms / 10 ms STFT plus one extra
band holding bin 0 (DC), which no mel band resolves but which the DC-offset class needs, plus
``N_TIME`` time-domain features of the same 20 ms frame (``time_features``): clipping and
dropouts are properties of the waveform (flat tops, samples piling up at the frame's peak,
exact zeros) that a power spectrum hardly shows.
Frame ``t`` covers samples ``[t*hop - (win - hop), t*hop + hop)`` and is centred on sample
``t * hop`` (edge.dsp's framing), so a label at sample ``n`` belongs to frame ``round(n / hop)``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from edge.dsp import DEFAULT_FRONT_END, FrontEnd, stft

N_MELS = 40
FMIN_HZ = 0.0
FMAX_HZ = 8000.0
LOG_FLOOR = 1e-7  # power floor (-70 dB): digital silence and a quiet room look alike below it


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def mel_filterbank(n_mels: int = N_MELS, fe: FrontEnd = DEFAULT_FRONT_END,
                   fmin: float = FMIN_HZ, fmax: float = FMAX_HZ) -> np.ndarray:
    """(n_mels, n_bins) triangular filters, each at least one STFT bin wide.

    Low bands narrower than the 50 Hz bin spacing would be empty; their edges are widened to
    the neighbouring bins so every band sees energy (they then overlap, which is harmless).
    """
    freqs = np.arange(fe.n_bins) * fe.sample_rate / fe.n_fft
    df = freqs[1]
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fb = np.zeros((n_mels, fe.n_bins))
    for i in range(n_mels):
        lo, c, hi = edges[i], edges[i + 1], edges[i + 2]
        lo, hi = min(lo, c - df), max(hi, c + df)
        up = (freqs - lo) / (c - lo)
        down = (hi - freqs) / (hi - c)
        fb[i] = np.clip(np.minimum(up, down), 0.0, None)
    fb /= fb.sum(axis=1, keepdims=True)
    fb.setflags(write=False)
    return fb.astype(np.float32)


TIME_FEATURES = ("near_peak_99", "near_peak_90", "near_peak_70", "crest", "flat_pairs",
                 "peak", "zeros")
N_TIME = len(TIME_FEATURES)
SILENT = 1e-6  # |x| at or below this is digital silence (float32 of a 16-bit zero is 0.0)
_NEAR = np.array([[0.99], [0.9], [0.7]], dtype=np.float32)  # near-peak levels, x max|x|


def n_features(n_mels: int = N_MELS, n_time: int = N_TIME) -> int:
    return n_mels + 1 + n_time


def frame_windows(buf: np.ndarray, n: int, fe: FrontEnd = DEFAULT_FRONT_END) -> np.ndarray:
    """(n, win) contiguous float32 frames, row k = ``buf[k*hop : k*hop + win]``."""
    buf = np.asarray(buf, dtype=np.float32)
    idx = np.arange(n)[:, None] * fe.hop + np.arange(fe.win)[None, :]
    return buf[idx]


def time_features(frames: np.ndarray) -> np.ndarray:
    """(T, win) float32 frames -> (T, N_TIME) float32, natural logs of level-free ratios.

    Per frame, with a = |x| and m = max(a): the fractions of samples at >= 99 %, 90 % and 70 %
    of m (a clipper piles samples up at its ceiling; tanh saturation fills the top of the
    amplitude range), the crest factor m / rms (flattened peaks lower it), the fraction of
    adjacent pairs that are within 1 % of m of each other while at >= 90 % of m (flat tops),
    the peak itself (so the network can see a ceiling that stays put from frame to frame),
    and the fraction of exactly-silent samples (a dropout's edges inside a frame). A frame
    that is silent throughout counts none of them (the shipped model was trained so; the
    log-mel floor already marks it). Fractions are (count + 1) / (win + 1), so logs stay
    finite and comparable in size to the log-mel bands (one int8 input scale serves all).
    """
    x = np.asarray(frames, dtype=np.float32)
    n = x.shape[1]
    a = np.abs(x)
    m = a.max(axis=1, keepdims=True)
    rms = np.sqrt(np.mean(np.square(x), axis=1, keepdims=True))
    # one comparison for the three near-peak levels; few numpy calls, as the stream pushes
    # one or two frames at a time
    counts = np.empty((len(x), 5))
    counts[:, :3] = np.count_nonzero(a[:, None, :] >= m[:, :, None] * _NEAR, axis=2)
    counts[:, 3] = np.count_nonzero((np.abs(np.diff(x, axis=1)) <= 0.01 * m)
                                    & (a[:, 1:] >= 0.9 * m), axis=1)
    counts[:, 4] = np.count_nonzero(a <= SILENT, axis=1)
    counts *= m > SILENT  # all-silent frames count none (the log-mel floor says silence)
    frac = np.log((counts + 1.0) / (n + 1.0))
    out = np.empty((len(x), N_TIME))
    out[:, [0, 1, 2, 4, 6]] = frac
    out[:, 3] = np.log(np.maximum(m[:, 0], 1e-7) / np.maximum(rms[:, 0], 1e-7))
    out[:, 5] = np.log(m[:, 0] + 1e-4)
    return out.astype(np.float32)


def logmel_from_spec(spec: np.ndarray, n_mels: int = N_MELS,
                     fe: FrontEnd = DEFAULT_FRONT_END) -> np.ndarray:
    """(frames, bins) complex STFT -> (frames, n_mels + 1) float32 natural-log features."""
    p = spec.real.astype(np.float32) ** 2 + spec.imag.astype(np.float32) ** 2
    mel = p @ mel_filterbank(n_mels, fe).T
    dc = p[:, :1]
    return np.log(np.concatenate([mel, dc], axis=1) + LOG_FLOOR).astype(np.float32)


def features(x: np.ndarray, n_mels: int = N_MELS, n_time: int = N_TIME,
             fe: FrontEnd = DEFAULT_FRONT_END) -> np.ndarray:
    """(n,) float samples -> (n // hop + 1, n_features) float32: log-mel + DC [+ time]."""
    lm = logmel(x, n_mels, fe)
    if not n_time:
        return lm
    buf = np.concatenate([np.zeros(fe.overlap, np.float32), np.asarray(x, np.float32),
                          np.zeros(fe.win, np.float32)])
    return np.concatenate([lm, time_features(frame_windows(buf, len(lm), fe))[:, :n_time]],
                          axis=1)


def logmel(x: np.ndarray, n_mels: int = N_MELS, fe: FrontEnd = DEFAULT_FRONT_END) -> np.ndarray:
    """(n,) float samples at fe.sample_rate -> (n // hop + 1, n_mels + 1) float32 features.

    edge.dsp's frame ``t`` covers samples ``[t*hop - (win - hop), t*hop + hop)``; with the
    default 2:1 window/hop it is centred on sample ``t * hop``.
    """
    x = np.asarray(x, dtype=np.float32)
    n = len(x) // fe.hop + 1
    padded = np.concatenate([x, np.zeros(fe.win, dtype=np.float32)])
    return logmel_from_spec(stft(padded, fe)[:n], n_mels, fe)
