"""Full band and multichannel around the 16 kHz model: 48 kHz in, 48 kHz out.

The model sees 0-8 kHz. Like RNNoise and PercepNet, which run their networks on a coarse
band layout and extend the gains over the whole spectrum, the band above 8 kHz is kept and
attenuated by a gain extended from the model's mask: the mean mask of the model's top
``EXTEND_HZ`` band, per 10 ms frame, interpolated in time and aligned to the frame's centre.
The band split is complementary by construction::

    x16  = down(x)                       # what the model hears
    high = x - up(x16)                   # everything down() removed (> ~8 kHz)
    out  = up(model(x16)) + gain * high

so with the mask at 1 the output is ``x`` again. ``bypass`` returns the input bit-exactly
(the model still runs, so the timing is that of the real path). Each channel runs its own
model state; nothing is downmixed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edge.audio import resample
from edge.denoise import Denoiser

EXTEND_HZ = (4_000.0, 8_000.0)  # model band whose mean mask drives the band above it


def band_bins(fe, band_hz: tuple[float, float] = EXTEND_HZ) -> slice:
    """The model's STFT bins inside ``band_hz``."""
    hz_per_bin = fe.sample_rate / fe.n_fft
    return slice(int(np.ceil(band_hz[0] / hz_per_bin)), int(band_hz[1] / hz_per_bin) + 1)


def gain_curve(frame_gains: np.ndarray, fe, n: int, rate: int) -> np.ndarray:
    """(frames,) gains -> (n,) per-sample gains at ``rate``: frame ``i`` at its centre
    ``i * hop + hop - win / 2`` (model samples), linear in between, held at the ends."""
    centres = (np.arange(len(frame_gains)) * fe.hop + fe.hop - fe.win / 2) * (
        rate / fe.sample_rate)
    return np.interp(np.arange(n), centres, frame_gains).astype(np.float64)


def denoise_channel(x: np.ndarray, rate: int, den: Denoiser,
                    progress: Callable[[int], None] | None = None) -> np.ndarray:
    """(n,) float32 at ``rate`` -> (n,) float32 at ``rate``, latency compensated.

    Above the model's rate the upper band is kept with the extended gain; at or below it
    this is the plain 16 kHz path resampled back."""
    fe = den.fe
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    x16 = resample(x, rate, fe.sample_rate)
    bins = band_bins(fe)
    gains: list[float] = []
    y16 = den.process(x16, progress, on_mask=lambda m: gains.append(float(np.mean(m[bins]))))
    if den.bypass:
        return x.copy()
    y = _fit(resample(y16, fe.sample_rate, rate), n)
    if rate <= fe.sample_rate:
        return y
    high = x.astype(np.float64) - _fit(resample(x16, fe.sample_rate, rate), n)
    g = gain_curve(np.clip(np.asarray(gains), 0.0, 1.0), fe, n, rate)
    return (y + g * high).astype(np.float32)


def denoise_channels(x: np.ndarray, rate: int, den: Denoiser,
                     progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """(n, channels) -> (n, channels), each channel from a fresh model state.
    ``progress(done, total)`` counts model-rate samples over all channels."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[:, None]
    per = -(-len(x) * den.fe.sample_rate // rate)
    total = per * x.shape[1]
    out = np.empty_like(x)
    for c in range(x.shape[1]):
        cb = None if progress is None else (lambda k, c=c: progress(c * per + k, total))
        out[:, c] = denoise_channel(x[:, c], rate, den, cb)
    return out


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    return np.pad(y, (0, max(0, n - len(y))))[:n]
