"""Audio files in and out (SPEC §1): anything soundfile reads, at any rate and channel count,
becomes float32 mono at 16 kHz; results go back out at the input's own rate.

Writes are atomic (temporary file + rename) so a failure never leaves a half-written output.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from edge.errors import AudioError
from edge.outpaths import atomic_temp

PROCESSING_RATE = 16_000
MAX_SECONDS = 4 * 3600  # longer than any plausible recording; guards against corrupt headers
MIN_SAMPLES = 1


@dataclass(frozen=True)
class AudioClip:
    """Mono float32 samples at ``rate`` plus what is needed to write results back."""

    samples: np.ndarray  # (n,) float32 in [-1, 1]
    rate: int
    source_rate: int
    source_channels: int
    source_subtype: str | None = None

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate


def to_mono(x: np.ndarray, channel: int | None = None) -> np.ndarray:
    """(frames, channels) -> (frames,): the mean of the channels, or one chosen channel."""
    if x.ndim == 1:
        return x
    if channel is None:
        return x.mean(axis=1)
    if not 0 <= channel < x.shape[1]:
        raise AudioError(f"channel {channel} does not exist: the file has {x.shape[1]} channel(s)"
                         f" (use 0..{x.shape[1] - 1})")
    return x[:, channel]


def resample(x: np.ndarray, rate_in: int, rate_out: int, quality: str = "HQ") -> np.ndarray:
    """Band-limited resampling with soxr (offline, whole buffer)."""
    if rate_in == rate_out:
        return x.astype(np.float32, copy=False)
    return soxr.resample(x, rate_in, rate_out, quality=quality).astype(np.float32, copy=False)


def check_samples(x: np.ndarray, what: str, allow_silence: bool = False) -> None:
    """Reject buffers the rest of the pipeline cannot use, with a message naming the problem."""
    if x.size < MIN_SAMPLES:
        raise AudioError(f"{what}: contains no audio samples (empty file)")
    if not np.all(np.isfinite(x)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise AudioError(f"{what}: contains {bad} NaN/inf sample(s); re-export the file "
                         "from its source")
    if not allow_silence and not np.any(x):
        raise AudioError(f"{what}: is digital silence (all samples are zero)")


def probe_audio(path: str | os.PathLike, max_seconds: float = MAX_SECONDS) -> sf._SoundFileInfo:
    """The header of an audio file, checked: exists, is a file libsndfile reads, has samples,
    is not absurdly long. Cheap (no decoding), so commands can check their input before
    loading a model. Raises AudioError naming the problem."""
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, expected an audio file")
    try:
        info = sf.info(str(p))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{p}: not a readable audio file ({_short(e)}); "
                         "use WAV, FLAC, OGG or another format libsndfile supports") from None
    if info.frames <= 0:
        raise AudioError(f"{p}: contains no audio samples (empty file)")
    if info.samplerate <= 0 or info.frames / info.samplerate > max_seconds:
        raise AudioError(f"{p}: {info.frames} frames at {info.samplerate} Hz is longer than the "
                         f"{max_seconds / 3600:.1f} h limit (or the header is corrupt)")
    return info


def load_audio(path: str | os.PathLike, rate: int = PROCESSING_RATE, channel: int | None = None,
               allow_silence: bool = False, max_seconds: float = MAX_SECONDS) -> AudioClip:
    """Read any soundfile-supported file as float32 mono at ``rate``.

    Raises AudioError for a missing file, an unsupported or corrupt format, an empty,
    silent-only or absurdly long file, and NaN/inf samples.
    """
    p = Path(path)
    data, sr, subtype = _read(p, max_seconds)
    mono = to_mono(data, channel)
    check_samples(mono, str(p), allow_silence=allow_silence)
    return AudioClip(samples=resample(mono, sr, rate), rate=rate, source_rate=sr,
                     source_channels=data.shape[1], source_subtype=subtype)


def read_channels(path: str | os.PathLike, max_seconds: float = MAX_SECONDS
                  ) -> tuple[np.ndarray, int, str | None]:
    """(frames, channels) float32 at the file's own rate, the rate and the subtype: what the
    full-band path needs (no downmix, no resampling). Checked like ``load_audio``."""
    p = Path(path)
    data, sr, subtype = _read(p, max_seconds)
    check_samples(data, str(p))
    return data, sr, subtype


def _read(p: Path, max_seconds: float) -> tuple[np.ndarray, int, str | None]:
    """(frames, channels) float32, rate, subtype of a probed file; AudioError if undecodable."""
    info = probe_audio(p, max_seconds)
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{p}: could not decode audio ({_short(e)})") from None
    return data, sr, info.subtype


def save_audio(path: str | os.PathLike, samples: np.ndarray, rate: int = PROCESSING_RATE,
               out_rate: int | None = None, subtype: str | None = None) -> Path:
    """Write mono ``samples`` (at ``rate``) to ``path`` at ``out_rate``, atomically.

    The format comes from the suffix (.wav, .flac, .ogg). Samples are clipped to [-1, 1].
    """
    p = Path(path)
    fmt = _format_for(p)
    out_rate = out_rate or rate
    y = np.clip(resample(np.asarray(samples, dtype=np.float32), rate, out_rate), -1.0, 1.0)
    if subtype is None or not sf.check_format(fmt, subtype):
        subtype = sf.default_subtype(fmt)
    if not p.parent.exists():
        raise AudioError(f"{p.parent}: output directory does not exist")
    try:
        fd, tmp = atomic_temp(p)  # the umask's mode, not mkstemp's 0600
    except OSError as e:
        raise AudioError(f"{p}: cannot write ({e.strerror or e})") from None
    os.close(fd)
    try:
        sf.write(tmp, y, out_rate, format=fmt, subtype=subtype)
        os.replace(tmp, p)
    except (OSError, sf.LibsndfileError, RuntimeError) as e:  # full disk, read-only, quota
        Path(tmp).unlink(missing_ok=True)
        reason = getattr(e, "strerror", None) or _short(e)
        if isinstance(e, sf.LibsndfileError) and "System error" in str(e):
            reason = "system error: the disk may be full"
        raise AudioError(f"{p}: cannot write ({reason}); no output written") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def check_writable(path: str | os.PathLike) -> None:
    """Refuse an output whose directory cannot take a new file (missing, read-only, no
    permission), before any work is done. A real probe: permission bits do not tell about
    read-only mounts, and root passes them all."""
    p = Path(path)
    if not p.parent.is_dir():
        raise AudioError(f"{p.parent}: output directory does not exist")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory; give an output file name")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".probe", dir=p.parent)
    except OSError as e:
        raise AudioError(f"{p}: cannot write ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(tmp)


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when two paths name the same file (so an output would overwrite its input)."""
    pa, pb = Path(a), Path(b)
    if pa.exists() and pb.exists():
        return os.path.samefile(pa, pb)
    return pa.resolve() == pb.resolve()


_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}


def _format_for(p: Path) -> str:
    try:
        return _FORMATS[p.suffix.lower()]
    except KeyError:
        raise AudioError(f"{p}: unsupported output format {p.suffix!r}; "
                         f"use one of {', '.join(_FORMATS)}") from None


def _short(e: Exception) -> str:
    return str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
