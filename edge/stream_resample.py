"""Streaming resamplers for the live loop: the device's native rate <-> the model's 16 kHz.

soxr's streaming API keeps its filters linear-phase and so holds back half of each filter:
6.25 ms each way at LQ, 21 ms at HQ, paid twice per loop. For the integer ratios devices
actually use with a 16 kHz model (48 k, 32 k), ``MinPhaseResampler`` uses one
minimum-phase FIR instead: the same magnitude response (Kaiser-windowed, -84 dB from
8.5 kHz at 48 kHz in, -43 dB at 8 kHz), with its energy at the start of the response, so the
passband group delay is about 0.2 ms. The price is phase distortion near the band edge
(7-8 kHz), which a mask-based denoiser working on magnitudes does not mind and listeners do
not hear. Other ratios (44.1 kHz) fall back to soxr.

``LinearPhaseResampler`` is the same structure with the linear-phase filter: a pure delay of
(taps - 1) / 2 samples each way, which the live loop's full band needs so that
``x - up(down(x))`` is exactly the band the model does not see (edge/fullband.py).

Both take (n,) float32 blocks of any length and return what is ready: the output count
follows the input count (n * rate_out / rate_in on average).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

MIN_PHASE = "MP"
SOXR_QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")


@lru_cache(maxsize=8)
def min_phase_lowpass(rate_hi: int, rate_lo: int, taps: int = 193) -> np.ndarray:
    """(taps,) float32 minimum-phase anti-alias / anti-image low-pass at ``rate_hi``,
    passband to 0.47 of ``rate_lo`` (7.5 kHz for 16 kHz), unit gain at DC."""
    from scipy import signal

    h = signal.firwin(taps, 0.46875 * rate_lo, fs=rate_hi, window=("kaiser", 8.0))
    h = signal.minimum_phase(h, method="homomorphic", half=False)
    h = (h / h.sum()).astype(np.float32)
    h.setflags(write=False)
    return h


@lru_cache(maxsize=8)
def linear_phase_lowpass(rate_hi: int, rate_lo: int, taps: int = 193) -> np.ndarray:
    """``min_phase_lowpass``'s magnitude response, linear phase: (taps - 1) / 2 samples of
    delay at ``rate_hi``."""
    from scipy import signal

    h = signal.firwin(taps, 0.46875 * rate_lo, fs=rate_hi, window=("kaiser", 8.0))
    h = (h / h.sum()).astype(np.float32)
    h.setflags(write=False)
    return h


class MinPhaseResampler:
    """Integer-ratio streaming resampler (decimate or interpolate by an integer) with a
    minimum-phase FIR; state is the last few input samples and the decimation phase."""

    design = staticmethod(min_phase_lowpass)

    def __init__(self, rate_in: int, rate_out: int, taps: int = 193):
        if rate_in % rate_out == 0:
            self.down, self.up = rate_in // rate_out, 1
        elif rate_out % rate_in == 0:
            self.down, self.up = 1, rate_out // rate_in
        else:
            raise ValueError(f"{rate_in} -> {rate_out} Hz is not an integer ratio")
        h = self.design(max(rate_in, rate_out), min(rate_in, rate_out), taps)
        self.taps = len(h)
        if self.up == 1:
            self._taps = [h]
        else:  # polyphase: output k*up + p uses every up-th tap from p, gain up
            k = -(-len(h) // self.up)
            self._taps = [np.pad(h[p::self.up], (0, k - len(h[p::self.up]))) * self.up
                          for p in range(self.up)]
        self._hist = np.zeros(len(self._taps[0]) - 1, dtype=np.float32)
        self._phase = 0  # index in the next block of the next sample kept when decimating

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        if not len(x):
            return x
        xe = np.concatenate([self._hist, x])
        self._hist = xe[len(xe) - len(self._hist):]
        if self.up == 1:
            y = np.convolve(xe, self._taps[0], "valid")[self._phase::self.down]
            self._phase = (self._phase - len(x)) % self.down
            return y.astype(np.float32)
        y = np.empty(len(x) * self.up, dtype=np.float32)
        for p, hp in enumerate(self._taps):
            y[p::self.up] = np.convolve(xe, hp, "valid")
        return y


class LinearPhaseResampler(MinPhaseResampler):
    """``MinPhaseResampler`` with the linear-phase filter: delay (taps - 1) / 2 at the high
    rate, the same for every frequency."""

    design = staticmethod(linear_phase_lowpass)


class StreamResampler:
    """(n,) float32 -> (m,) float32 at ``rate_out``; identity when the rates match.

    ``quality``: ``"MP"`` (minimum phase, integer ratios; soxr LQ for the others) or a soxr
    quality (``"LQ"`` ... ``"VHQ"``), whose streaming delay grows with the quality.
    """

    def __init__(self, rate_in: int, rate_out: int, quality: str = MIN_PHASE):
        self.rate_in, self.rate_out = int(rate_in), int(rate_out)
        integer = self.rate_in % self.rate_out == 0 or self.rate_out % self.rate_in == 0
        if self.rate_in == self.rate_out:
            self._fn, self.kind = (lambda x: x), "identity"
        elif quality == MIN_PHASE and integer:
            self._fn, self.kind = MinPhaseResampler(self.rate_in, self.rate_out), "min-phase"
        else:
            import soxr

            q = "LQ" if quality == MIN_PHASE else quality
            self._fn = soxr.ResampleStream(self.rate_in, self.rate_out, 1, dtype="float32",
                                           quality=q).resample_chunk
            self.kind = f"soxr-{q}"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._fn(x)
