"""The streaming denoiser: one 10 ms hop in, one hop out, all state explicit.

``Denoiser.process_hop`` is the only code path: the live loop calls it once per hop and
``Denoiser.process`` (files) calls it over a whole signal, so a file run tells you what the
device does live. Per hop: ``FrameDft.analyse`` -> ``log_power`` -> ``model.step`` -> mask ->
``FrameDft.synthesise`` (the STFT as float32 matrix products, equal to ``stft_step`` /
``istft_step`` to rounding). The output lags the input by ``win - hop`` samples (plus the hop being
buffered); ``process`` removes that lag so a file's output lines up with its input.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from edge.dsp import (
    FrameDft,
    FrontEnd,
    apply_mask,
    istft,
    log_power,
    stft,
)


class MaskModel(Protocol):
    """What the denoiser needs from a model (``edge.model.StepModel`` or a test double)."""

    front_end: FrontEnd

    def init_state(self) -> list[np.ndarray]: ...

    def step(self, features: np.ndarray, state: list[np.ndarray]
             ) -> tuple[np.ndarray, list[np.ndarray]]: ...


class Denoiser:
    """Streaming mask denoiser around a step model. Not thread-safe: one per stream.

    ``bypass`` passes the noisy frame through unmasked (same latency, model state kept warm)
    so A/B switching while listening neither clicks nor shifts in time.
    """

    def __init__(self, model: MaskModel, bypass: bool = False, tap_residual: bool = False):
        """``tap_residual``: also resynthesise what the mask removes, X·(1−m), into
        ``residual`` every hop (the separated background, for the fault monitor)."""
        self.model = model
        self.fe: FrontEnd = model.front_end
        self.bypass = bypass
        self.tap_residual = tap_residual
        self._dft = FrameDft(self.fe)
        self.reset()

    def reset(self) -> None:
        self._dft.reset()
        self._residual_tail = np.zeros(self.fe.overlap, dtype=np.float32)
        self._state = self.model.init_state()
        self.residual = np.zeros(self.fe.hop, dtype=np.float32)

    def swap_model(self, model: MaskModel) -> None:
        """Run ``model`` from the next hop on (a flashed bundle going live). The STFT overlap
        state is kept, so the output stays continuous; only the recurrent state restarts."""
        if model.front_end != self.fe:
            raise ValueError(f"the new model's front end {model.front_end.as_dict()} differs "
                             f"from the running one's {self.fe.as_dict()}")
        self.model = model
        self._state = model.init_state()

    @property
    def hop(self) -> int:
        return self.fe.hop

    @property
    def delay_samples(self) -> int:
        """Output lag behind the input of ``process_hop`` beyond the hop itself (samples)."""
        return self.fe.overlap

    @property
    def algorithmic_latency_s(self) -> float:
        return self.fe.latency_s

    def process_hop(self, x_hop: np.ndarray) -> np.ndarray:
        """(hop,) float32 input -> (hop,) float32 output, ``delay_samples`` behind."""
        dft, b = self._dft, self.fe.n_bins
        spec = dft.analyse(x_hop)  # stacked [Re; Im] (2 * bins,)
        mask, self._state = self.model.step(dft.log_power(spec), self._state)
        self.last_mask = mask  # (bins,) the full-band path extends it above 8 kHz
        if self.bypass:
            if self.tap_residual:
                self.residual = np.zeros(self.fe.hop, dtype=np.float32)
            return dft.synthesise(spec)
        if self.tap_residual:  # the background X·(1−m), same delay as y; zero in bypass
            keep = 1.0 - mask
            self.residual = dft.synthesise(np.concatenate([spec[:b] * keep, spec[b:] * keep]),
                                           self._residual_tail)
        spec[:b] *= mask
        spec[b:] *= mask
        return dft.synthesise(spec)

    def process(self, x: np.ndarray, progress: Callable[[int], None] | None = None,
                on_mask: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
        """(n,) float32 -> (n,) float32, latency compensated, from a fresh state.

        Runs ``process_hop`` over the signal followed by ``delay_samples`` of zeros and drops
        the first ``delay_samples`` outputs. ``progress(samples_done)`` is called now and then.
        ``on_mask(mask)`` sees each hop's (bins,) mask, hop ``i``'s frame centred on input
        sample ``i * hop + hop - win / 2`` (the full-band path reduces it at once: an hour of
        masks would be 230 MB).
        """
        self.reset()
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        n, hop, d = len(x), self.hop, self.delay_samples
        n_hops = -(-(n + d) // hop)
        padded = np.zeros(n_hops * hop, dtype=np.float32)
        padded[:n] = x
        out = np.empty_like(padded)
        every = max(1, 100 * 1600 // hop)  # report about every 10 s of audio at 16 kHz
        for i in range(n_hops):
            out[i * hop:(i + 1) * hop] = self.process_hop(padded[i * hop:(i + 1) * hop])
            if on_mask is not None:
                on_mask(self.last_mask)
            if progress is not None and (i + 1) % every == 0:
                progress(min(n, (i + 1) * hop))
        if progress is not None:
            progress(n)
        return out[d:d + n]


def denoise_offline(model: MaskModel, x: np.ndarray, bypass: bool = False) -> np.ndarray:
    """Whole-signal reference: ``stft`` -> masks (model stepped frame by frame) -> ``istft``.

    Used to check that the streaming path gives the same result; (n,) -> (n,) float32.
    """
    fe = model.front_end
    spec = stft(np.asarray(x, dtype=np.float32), fe)
    feats = log_power(spec, fe)
    state = model.init_state()
    masks = np.empty(spec.shape, dtype=np.float32)
    for t in range(len(spec)):
        masks[t], state = model.step(feats[t], state)
    if not bypass:
        spec = apply_mask(spec, masks)
    return istft(spec, len(x), fe)


def check_file_job(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Refuse a job before any work (or model loading): unreadable input, output that would
    overwrite the input, an output format we cannot write."""
    from edge.audio import check_writable, probe_audio, same_file
    from edge.errors import AudioError

    probe_audio(src)
    if same_file(src, dst):
        raise AudioError(f"{dst}: refusing to overwrite the input file; choose another output")
    if Path(dst).suffix.lower() not in (".wav", ".flac", ".ogg"):
        raise AudioError(f"{dst}: unsupported output format {Path(dst).suffix!r}; "
                         "use .wav, .flac or .ogg")
    check_writable(dst)


def denoise_file(src: str | os.PathLike, dst: str | os.PathLike, model: MaskModel,
                 progress: Callable[[int, int], None] | None = None,
                 bypass: bool = False) -> dict:
    """Denoise an audio file with the streaming path; writes ``dst`` atomically.

    The output has the input's sample rate, channels and exactly its number of frames. Above
    the model's rate the band the model cannot see is kept, attenuated by the gain extended
    from its mask (edge/fullband.py); each channel is denoised on its own. ``bypass`` gives
    the input back bit-exactly. ``progress(done, total)`` counts samples at the model rate
    over all channels. Returns a summary dict (seconds, wall time, real-time factor).
    """
    from edge.audio import read_channels, save_audio
    from edge.fullband import denoise_channels

    check_file_job(src, dst)
    data, rate, subtype = read_channels(src)
    frames, channels = data.shape
    den = Denoiser(model, bypass=bypass)
    t0 = time.perf_counter()
    y = denoise_channels(data, rate, den, progress)
    wall = time.perf_counter() - t0
    save_audio(dst, y[:, 0] if channels == 1 else y, rate=rate, subtype=subtype)
    seconds = frames / rate
    per = -(-frames * den.fe.sample_rate // rate)
    return {"input": str(src), "output": str(dst), "seconds": round(seconds, 3),
            "sample_rate": rate, "channels": channels, "frames": frames,
            "full_band": rate > den.fe.sample_rate, "wall_s": round(wall, 3),
            "rtf": round(wall / seconds, 5), "bypass": bypass,
            "hops": channels * -(-(per + den.delay_samples) // den.hop)}
