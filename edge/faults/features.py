"""Log-mel features for the fault classifier, built on the one STFT front end (edge.dsp).

The classifier sees ``N_MELS`` log-mel bands of the shared 20 ms / 10 ms STFT plus one extra
band holding bin 0 (DC), which no mel band resolves but which the DC-offset class needs.
Frame ``t`` is centred on sample ``t * hop`` (edge.dsp's framing), so a label at sample ``n``
belongs to frame ``round(n / hop)``.
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


def n_features(n_mels: int = N_MELS) -> int:
    return n_mels + 1


def logmel_from_spec(spec: np.ndarray, n_mels: int = N_MELS,
                     fe: FrontEnd = DEFAULT_FRONT_END) -> np.ndarray:
    """(frames, bins) complex STFT -> (frames, n_mels + 1) float32 natural-log features."""
    p = spec.real.astype(np.float32) ** 2 + spec.imag.astype(np.float32) ** 2
    mel = p @ mel_filterbank(n_mels, fe).T
    dc = p[:, :1]
    return np.log(np.concatenate([mel, dc], axis=1) + LOG_FLOOR).astype(np.float32)


def logmel(x: np.ndarray, n_mels: int = N_MELS, fe: FrontEnd = DEFAULT_FRONT_END) -> np.ndarray:
    """(n,) float samples at fe.sample_rate -> (n // hop + 1, n_mels + 1) float32 features.

    edge.dsp's frame ``t`` covers samples ``[t*hop - (win - hop), t*hop + hop)``; with the
    default 2:1 window/hop it is centred on sample ``t * hop``.
    """
    x = np.asarray(x, dtype=np.float32)
    n = len(x) // fe.hop + 1
    padded = np.concatenate([x, np.zeros(fe.win, dtype=np.float32)])
    return logmel_from_spec(stft(padded, fe)[:n], n_mels, fe)
