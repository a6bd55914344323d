"""The one STFT front end (SPEC §1), shared by training and the runtime.

Two paths that agree to float rounding:

* offline: ``stft(x)`` / ``istft(spec, n)`` over a whole signal, vectorised;
* streaming: ``stft_step`` / ``istft_step`` take one hop and an explicit state and return
  the next frame (or hop of output) and the new state, so a model sees the same features live
  as it did in training;
* the runtime's hop loop: ``FrameDft``, the same transform of one frame as two real
  matrix-vector products in float32 (faster than an FFT call at these sizes).

Conventions: a periodic sqrt-Hann analysis window; the synthesis window is the analysis window
divided by the overlap sum of its square, so analysis + synthesis reconstructs perfectly for
any window that is a multiple of the hop. Frame ``t`` covers input samples
``[t*hop - (win - hop), t*hop + hop)`` (zeros before the start), exactly what a streaming
caller has seen after pushing ``t + 1`` hops. Algorithmic latency = ``win`` samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

EPS = 1e-8


@dataclass(frozen=True)
class FrontEnd:
    """STFT and feature definition. Defaults: 16 kHz, 20 ms window, 10 ms hop, 161 bins."""

    sample_rate: int = 16_000
    win: int = 320
    hop: int = 160
    n_fft: int = 320
    log_floor: float = 1e-10  # power floor of the log features (-100 dB)

    def __post_init__(self) -> None:
        if self.hop <= 0 or self.win < 2 * self.hop or self.win % self.hop:
            # sqrt-Hann is zero at n = 0: without overlap that sample could not be rebuilt
            raise ValueError(f"window ({self.win}) must be a multiple of hop ({self.hop}), "
                             "at least two hops long")
        if self.n_fft < self.win:
            raise ValueError(f"n_fft ({self.n_fft}) must be >= window ({self.win})")

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def overlap(self) -> int:
        return self.win - self.hop

    @property
    def latency_s(self) -> float:
        """Algorithmic latency: one window (buffering one hop + the overlap), no lookahead."""
        return self.win / self.sample_rate

    @cached_property
    def analysis_window(self) -> np.ndarray:
        n = np.arange(self.win)
        return np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * n / self.win))

    @cached_property
    def synthesis_window(self) -> np.ndarray:
        w = self.analysis_window
        norm = np.zeros(self.hop)
        for k in range(self.win // self.hop):
            norm += w[k * self.hop:(k + 1) * self.hop] ** 2
        return w / np.tile(norm, self.win // self.hop)

    def as_dict(self) -> dict:
        return {"sample_rate": self.sample_rate, "win": self.win, "hop": self.hop,
                "n_fft": self.n_fft, "window": "sqrt-hann", "feature": "log-power",
                "log_floor": self.log_floor, "n_bins": self.n_bins}


DEFAULT_FRONT_END = FrontEnd()


# ----------------------------------------------------------------------------- offline path
def n_frames(n_samples: int, fe: FrontEnd = DEFAULT_FRONT_END) -> int:
    """Frames needed so that every input sample is fully reconstructed by ``istft``."""
    return -(-(n_samples + fe.overlap) // fe.hop)


def stft(x: np.ndarray, fe: FrontEnd = DEFAULT_FRONT_END) -> np.ndarray:
    """(n,) float -> (frames, bins) complex64."""
    x = np.asarray(x, dtype=np.float32)
    t = n_frames(len(x), fe)
    padded = np.zeros(fe.overlap + t * fe.hop, dtype=np.float32)
    padded[fe.overlap:fe.overlap + len(x)] = x
    frames = np.lib.stride_tricks.sliding_window_view(padded, fe.win)[::fe.hop][:t]
    return np.fft.rfft(frames * fe.analysis_window, n=fe.n_fft, axis=-1).astype(np.complex64)


def istft(spec: np.ndarray, n_samples: int, fe: FrontEnd = DEFAULT_FRONT_END) -> np.ndarray:
    """(frames, bins) complex -> (n_samples,) float32, aligned with the input of ``stft``."""
    frames = np.fft.irfft(spec, n=fe.n_fft, axis=-1)[:, :fe.win] * fe.synthesis_window
    t = len(frames)
    out = np.zeros(fe.overlap + t * fe.hop)
    for k in range(fe.win // fe.hop):  # overlap-add, one hop-sized slice of every frame at once
        seg = frames[:, k * fe.hop:(k + 1) * fe.hop].reshape(-1)
        out[k * fe.hop:k * fe.hop + t * fe.hop] += seg
    return out[fe.overlap:fe.overlap + n_samples].astype(np.float32)


# --------------------------------------------------------------------------- streaming path
def init_analysis_state(fe: FrontEnd = DEFAULT_FRONT_END) -> np.ndarray:
    """The last ``win - hop`` input samples (zeros before the stream starts)."""
    return np.zeros(fe.overlap, dtype=np.float32)


def init_synthesis_state(fe: FrontEnd = DEFAULT_FRONT_END) -> np.ndarray:
    """Overlap-add tail still waiting for later frames."""
    return np.zeros(fe.overlap, dtype=np.float64)


def stft_step(x_hop: np.ndarray, state: np.ndarray, fe: FrontEnd = DEFAULT_FRONT_END
              ) -> tuple[np.ndarray, np.ndarray]:
    """One hop of input (hop,) -> one frame (bins,) complex64 and the new state."""
    frame = np.concatenate([state, np.asarray(x_hop, dtype=np.float32)])
    spec = np.fft.rfft(frame * fe.analysis_window, n=fe.n_fft).astype(np.complex64)
    return spec, frame[fe.hop:]


def istft_step(spec: np.ndarray, state: np.ndarray, fe: FrontEnd = DEFAULT_FRONT_END
               ) -> tuple[np.ndarray, np.ndarray]:
    """One frame (bins,) -> one finished hop (hop,) float32 and the new state.

    The output lags the input by ``win - hop`` samples (on top of the hop being buffered).
    """
    frame = np.fft.irfft(spec, n=fe.n_fft)[:fe.win] * fe.synthesis_window
    frame[:fe.overlap] += state
    return frame[:fe.hop].astype(np.float32), frame[fe.hop:]


class StreamingFrontEnd:
    """Convenience holder of both streaming states for callers that process one stream."""

    def __init__(self, fe: FrontEnd = DEFAULT_FRONT_END):
        self.fe = fe
        self.reset()

    def reset(self) -> None:
        self._a = init_analysis_state(self.fe)
        self._s = init_synthesis_state(self.fe)

    def analyse(self, x_hop: np.ndarray) -> np.ndarray:
        spec, self._a = stft_step(x_hop, self._a, self.fe)
        return spec

    def synthesise(self, spec: np.ndarray) -> np.ndarray:
        y, self._s = istft_step(spec, self._s, self.fe)
        return y


class FrameDft:
    """The STFT of one frame and its inverse as real matrix products, windows folded in.

    At 320 points a float32 matrix-vector product (BLAS) costs less than numpy's FFT call
    and its complex128 temporaries: this is the hop loop's transform (``edge.denoise``), equal
    to ``stft_step`` / ``istft_step`` to float32 rounding (tests/test_dsp.py). Spectra are
    stacked real vectors ``[Re X_0..X_{B-1}, Im X_0..X_{B-1}]`` (2B,), so a mask multiplies
    both halves."""

    def __init__(self, fe: FrontEnd = DEFAULT_FRONT_END):
        self.fe = fe
        n, b = np.arange(fe.win), np.arange(fe.n_bins)
        ang = 2 * np.pi * np.outer(b, n) / fe.n_fft  # (bins, win)
        fwd = np.concatenate([np.cos(ang), -np.sin(ang)]) * fe.analysis_window
        self.forward = np.ascontiguousarray(fwd, dtype=np.float32)  # (2B, win)
        # irfft: x[n] = (1/N) sum_k c_k (Re X_k cos - Im X_k sin), c = 1 at DC and Nyquist
        c = np.full(fe.n_bins, 2.0)
        c[0] = 1.0
        if fe.n_fft % 2 == 0:
            c[-1] = 1.0
        inv = np.concatenate([np.cos(ang) * c[:, None], -np.sin(ang) * c[:, None]]).T
        inv[:, fe.n_bins] = 0.0  # the imaginary part of DC (and of Nyquist) is dropped
        if fe.n_fft % 2 == 0:
            inv[:, -1] = 0.0
        inv = inv / fe.n_fft * fe.synthesis_window[:, None]
        self.inverse = np.ascontiguousarray(inv, dtype=np.float32)  # (win, 2B)

    def reset(self) -> None:
        """Zero input history and overlap-add tail (a new stream)."""
        self.frame = np.zeros(self.fe.win, dtype=np.float32)
        self.tail = np.zeros(self.fe.overlap, dtype=np.float32)

    def analyse(self, x_hop: np.ndarray) -> np.ndarray:
        """One hop in -> the newest frame's stacked spectrum (2B,) float32."""
        f, o = self.frame, self.fe.overlap
        f[:o] = f[self.fe.hop:]
        f[o:] = x_hop
        return self.forward @ f

    def synthesise(self, spec: np.ndarray, tail: np.ndarray | None = None) -> np.ndarray:
        """A stacked spectrum -> one finished hop (hop,) float32, ``fe.overlap`` behind;
        ``tail`` is the overlap-add state to use (default this stream's own)."""
        t = self.tail if tail is None else tail
        y = self.inverse @ spec
        y[:len(t)] += t
        t[:] = y[self.fe.hop:]
        return y[:self.fe.hop]

    def log_power(self, spec: np.ndarray) -> np.ndarray:
        """``log_power`` of a stacked spectrum."""
        b = self.fe.n_bins
        p = spec[:b] * spec[:b]
        p += spec[b:] * spec[b:]
        p += np.float32(self.fe.log_floor)
        return np.log(p, out=p)


# ----------------------------------------------------------------------- features and masks
def log_power(spec: np.ndarray, fe: FrontEnd = DEFAULT_FRONT_END) -> np.ndarray:
    """The model's input features: natural log of the power spectrum, floored. float32."""
    p = spec.real.astype(np.float32) ** 2 + spec.imag.astype(np.float32) ** 2
    return np.log(p + fe.log_floor).astype(np.float32)


def ideal_ratio_mask(clean: np.ndarray, noisy: np.ndarray, eps: float = EPS) -> np.ndarray:
    """SPEC §1: ``clip(|S| / (|X| + eps), 0, 1)`` per time-frequency bin."""
    return np.clip(np.abs(clean) / (np.abs(noisy) + eps), 0.0, 1.0).astype(np.float32)


def apply_mask(noisy: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Masks scale the noisy complex spectrum (noisy phase is kept)."""
    return (noisy * mask).astype(np.complex64)
