"""Where the live loop's denoised audio goes: a small interface and its implementations.

A sink takes mono float32 blocks at its own ``rate`` (the loop resamples 16 kHz output to
it with a streaming soxr resampler) and is closed once. ``write`` is called from the worker
thread only, so implementations need no locking of their own beyond what they hand off.

* ``RecordSink``: a WAV/FLAC file written progressively; its header is rewritten on every
  write (libsndfile's auto header update) so even an abrupt end leaves a playable file.
* ``PlaybackSink``: an output device (sounddevice); its callback only pops a queue.
* ``CallbackSink``: hands blocks to any function (the network sender plugs in here).
* ``ProcessSink``: raw float32 into a child's stdin (``pacat`` into a sound-server sink).
"""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from edge.errors import AudioError

SFC_SET_UPDATE_HEADER_AUTO = 0x1061  # libsndfile command: rewrite the header on every write


class Sink(Protocol):
    rate: int  # samples per second this sink wants

    def write(self, block: np.ndarray) -> None:
        """(n,) float32 in [-1, 1] at ``rate``."""

    def close(self) -> None: ...


class RecordSink:
    """Progressively written sound file (format from the suffix: .wav or .flac)."""

    def __init__(self, path: str | Path, rate: int, subtype: str | None = None):
        import soundfile as sf

        self.path = Path(path)
        self.rate = int(rate)
        fmt = {".wav": "WAV", ".flac": "FLAC"}.get(self.path.suffix.lower())
        if fmt is None:
            raise AudioError(f"{self.path}: record to .wav or .flac")
        if not self.path.parent.is_dir():
            raise AudioError(f"{self.path.parent}: output directory does not exist")
        self.frames = 0
        self._f = sf.SoundFile(str(self.path), "w", samplerate=self.rate, channels=1,
                               format=fmt, subtype=subtype or ("PCM_16" if fmt == "FLAC"
                                                               else "FLOAT"))
        if fmt == "WAV":  # keep the RIFF sizes valid after every write
            sf._snd.sf_command(self._f._file, SFC_SET_UPDATE_HEADER_AUTO, sf._ffi.NULL, 1)

    def write(self, block: np.ndarray) -> None:
        self._f.write(np.clip(block, -1.0, 1.0))
        self.frames += len(block)

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


class CallbackSink:
    """Calls ``fn(block)`` for every block; the hook for the RTP/Opus sender."""

    def __init__(self, fn: Callable[[np.ndarray], None], rate: int = 16_000,
                 on_close: Callable[[], None] | None = None):
        self.rate = int(rate)
        self._fn = fn
        self._on_close = on_close

    def write(self, block: np.ndarray) -> None:
        self._fn(block)

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()


class NullSink:
    """Discards audio (benchmarks, --no-play without --record)."""

    def __init__(self, rate: int = 16_000):
        self.rate = rate
        self.frames = 0

    def write(self, block: np.ndarray) -> None:
        self.frames += len(block)

    def close(self) -> None:
        pass


class PlaybackSink:
    """An output device. The worker queues blocks as they come; the device callback pops them.

    The callback never blocks: an empty queue plays silence and counts an underrun. Blocks
    are queued whole (no re-chunking to periods, which would hold back a partial period).
    Audio that waits here is latency, and a burst (start-up, a capture hiccup) leaves a
    standing backlog that never drains by itself, since input and output run at the same
    rate. So the callback watches the smallest backlog left after it over each
    ``trim_window_s``; whatever of that minimum exceeds one period is cut out with a short
    crossfade (counted in ``trimmed_ms``). A full queue (``max_periods`` blocks) drops its
    oldest block as a last resort (counted in ``dropped_periods``).
    """

    XFADE = 48  # samples of crossfade over a trim: 1 ms at 48 kHz, no click

    def __init__(self, device: str | int | None, rate: int, period: int,
                 max_periods: int = 6, prefill: int = 2, trim_window_s: float = 0.5):
        import sounddevice as sd

        self.rate, self.period = int(rate), int(period)
        self.underruns = 0
        self.dropped_periods = 0
        self.trimmed_ms = 0.0
        self.margin = self.period  # backlog kept against callback/worker jitter
        self._trim_window = max(1, round(trim_window_s * self.rate / self.period))
        self._calls, self._min_backlog = 0, None
        # a last-resort bound in written blocks (a hop each: 6 = 60 ms); the trim does the rest
        self._q: queue.Queue[np.ndarray] = queue.Queue(maxsize=max_periods)
        self._block = self.period  # the writer's block length, to size the queued backlog
        self._buf = np.zeros(0, dtype=np.float32)
        self._prefill = prefill
        try:
            self._stream = sd.OutputStream(device=device, samplerate=self.rate, channels=1,
                                           dtype="float32", blocksize=self.period,
                                           latency="low", callback=self._callback)
        except (sd.PortAudioError, ValueError) as e:
            raise AudioError(f"cannot open output device {device!r} at {rate} Hz: {e}") from None
        self._started = False

    @property
    def latency_s(self) -> float:
        return float(self._stream.latency)

    def _callback(self, outdata, frames, time_info, status) -> None:
        if status.output_underflow:
            self.underruns += 1
        out = outdata[:, 0]
        filled = 0
        while filled < frames:
            if not len(self._buf):
                try:
                    self._buf = self._q.get_nowait()
                except queue.Empty:
                    if self._started:
                        self.underruns += 1
                    out[filled:] = 0.0
                    return
            n = min(frames - filled, len(self._buf))
            out[filled:filled + n] = self._buf[:n]
            self._buf = self._buf[n:]
            filled += n
        self._watch_backlog()

    def _watch_backlog(self) -> None:
        """Called after each callback: trim what of the backlog never got used."""
        backlog = len(self._buf) + self._q.qsize() * self._block
        self._min_backlog = backlog if self._min_backlog is None else min(self._min_backlog,
                                                                          backlog)
        self._calls += 1
        if self._calls < self._trim_window:
            return
        excess = self._min_backlog - self.margin
        self._calls, self._min_backlog = 0, None
        if excess > 0:
            self._trim(excess)

    def _trim(self, excess: int) -> None:
        parts = [self._buf]
        while True:
            try:
                parts.append(self._q.get_nowait())
            except queue.Empty:
                break
        self._buf = drop_with_crossfade(np.concatenate(parts), excess, self.XFADE)
        self.trimmed_ms += 1e3 * excess / self.rate

    def write(self, block: np.ndarray) -> None:
        if not len(block):
            return
        self._block = len(block)
        block = np.asarray(block, dtype=np.float32).copy()
        while True:
            try:
                self._q.put_nowait(block)
                break
            except queue.Full:
                try:
                    self._q.get_nowait()  # drop the oldest block: bound the latency
                    self.dropped_periods += 1
                except queue.Empty:
                    pass
        if not self._started and self._q.qsize() * self._block >= self._prefill * self.period:
            self._stream.start()
            self._started = True

    def close(self) -> None:
        try:
            self._stream.abort()
            self._stream.close()
        except Exception:  # a vanished device must not turn a clean stop into a traceback
            pass


class ProcessSink:
    """Raw float32 mono written to a child process's stdin (``pacat`` playing into a sound
    server, ``edge-denoise virtual-mic``). The kernel pipe, sized to ``buffer_s``, is the
    cushion against a worker held off the CPU; the write never blocks: a full pipe (the
    child consumes slower than we produce, e.g. two clocks drifting) drops the block and
    counts it in ``dropped_periods``, which bounds the latency to the pipe plus the child's."""

    F_SETPIPE_SZ = 1031  # fcntl: resize a pipe (Linux)

    def __init__(self, argv: list[str], rate: int, buffer_s: float = 0.04,
                 what: str = "playback"):
        import fcntl
        import os
        import subprocess

        self.rate, self.what = int(rate), what
        self.dropped_periods = 0
        self.underruns = 0
        try:
            # its own session: a Ctrl-C in the terminal must not end it before the loop stops
            self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, start_new_session=True)
        except OSError as e:
            raise AudioError(f"cannot start {argv[0]}: {e}") from None
        fd = self._proc.stdin.fileno()
        with contextlib.suppress(OSError):  # rounded up to a page (4 KiB: 64 ms at 16 kHz)
            fcntl.fcntl(fd, self.F_SETPIPE_SZ, max(4096, int(4 * self.rate * buffer_s)))
        os.set_blocking(fd, False)
        self._fd = fd
        self.error: str | None = None

    def write(self, block: np.ndarray) -> None:
        import os

        data = np.clip(np.asarray(block, dtype="<f4"), -1.0, 1.0).tobytes()
        try:
            n = os.write(self._fd, data)
        except BlockingIOError:
            self.dropped_periods += 1
            return
        except BrokenPipeError:
            raise AudioError(f"the {self.what} stopped: {self._stderr()}") from None
        if n < len(data):  # keep whole samples: finish the block, blocking briefly
            os.set_blocking(self._fd, True)
            try:
                os.write(self._fd, data[n:])
            finally:
                os.set_blocking(self._fd, False)

    def _stderr(self) -> str:
        if self._proc.poll() is None:
            return "broken pipe"
        lines = self._proc.stderr.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit status {self._proc.returncode}"

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._proc.stdin.close()
        try:
            self._proc.wait(2)
        except Exception:
            self._proc.kill()
            self._proc.wait()


def drop_with_crossfade(x: np.ndarray, n: int, xfade: int) -> np.ndarray:
    """``x`` with ``n`` samples cut from its start, the cut hidden by a ``xfade``-sample
    linear crossfade from the audio that would have played into the audio that now plays.
    Too short a buffer for the fade: a plain cut."""
    n = min(int(n), len(x))
    if xfade <= 0 or n + xfade > len(x):
        return x[n:].copy()
    w = np.linspace(0.0, 1.0, xfade, endpoint=False, dtype=np.float32)
    head = (1 - w) * x[:xfade] + w * x[n:n + xfade]
    return np.concatenate([head, x[n + xfade:]]).astype(np.float32)
