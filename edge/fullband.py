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


class FullBandStream:
    """The live loop's full band: native-rate blocks around the 16 kHz denoiser, the same
    split as the file path, streaming (``LiveLoop`` with a sink at the capture rate).

    Linear-phase integer-ratio resamplers make ``up(down(x))`` the low band of ``x`` delayed
    by exactly ``chain`` samples, so with the denoiser's own delay (``delay_16k`` model
    samples) the output is::

        y = up(denoised) + gain * (x[n - delay] - up(down(x) delayed by delay_16k))

    a pure delay of ``delay`` samples when the mask is 1, and ``x`` delayed bit-exactly in
    bypass. The gain of each 10 ms hop (the mean mask of the model's top band) ramps over the
    hop's samples from the previous one. Costs the linear-phase filters' delay (4 ms at
    48 kHz) over the loop's minimum-phase path; integer ratios only (48 and 32 kHz)."""

    def __init__(self, rate: int, fe, delay_16k: int):
        from edge.stream_resample import LinearPhaseResampler

        if rate <= fe.sample_rate or rate % fe.sample_rate:
            raise ValueError(f"full band needs an integer multiple of {fe.sample_rate} Hz "
                             f"above it, not {rate} Hz")
        self.rate, self.k, self.fe = rate, rate // fe.sample_rate, fe
        self.down = LinearPhaseResampler(rate, fe.sample_rate)
        self.up = LinearPhaseResampler(fe.sample_rate, rate)
        self._ref_up = LinearPhaseResampler(fe.sample_rate, rate)
        self.chain = (self.down.taps - 1) // 2 + (self.up.taps - 1) // 2
        self.delay = self.chain + self.k * delay_16k  # native samples, input to output
        self._x = np.zeros(self.delay, dtype=np.float32)  # the native delay line
        self._ref = np.zeros(delay_16k, dtype=np.float32)  # the model-rate one
        self._gain = 1.0
        self.bins = band_bins(fe)

    def to_model(self, block: np.ndarray) -> np.ndarray:
        """A captured native block -> its model-rate samples (and keep it for the band)."""
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        self._x = np.concatenate([self._x, block])
        return self.down(block)

    def output(self, consumed: np.ndarray, denoised: np.ndarray, gains: list[float],
               bypass: bool = False) -> np.ndarray:
        """The native-rate output for the model-rate samples the denoiser ``consumed`` this
        block (its output ``denoised``, same length; ``gains`` one per hop)."""
        n, hop = len(consumed), self.fe.hop
        xd, self._x = self._x[:n * self.k], self._x[n * self.k:]
        ref16 = np.concatenate([self._ref, consumed])
        self._ref = ref16[n:]
        ref = self._ref_up(ref16[:n])
        low = self.up(denoised)
        if bypass:
            return xd.copy()
        per = hop * self.k
        g = np.full(max(n * self.k, len(gains) * per), self._gain, dtype=np.float32)
        for i, gi in enumerate(gains):  # ramp from the previous hop's gain
            g[i * per:(i + 1) * per] = np.linspace(self._gain, gi, per + 1,
                                                  dtype=np.float32)[1:]
            self._gain = gi
        return low + g[:n * self.k] * (xd - ref)

    def hop_gain(self, mask: np.ndarray) -> float:
        """One hop's gain for the band above the model's: its top band's mean mask."""
        return float(np.mean(mask[self.bins]))
