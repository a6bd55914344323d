"""Where the live loop's audio comes from: a capture device, or a file standing in for one.

A source calls ``push(block)`` with (n,) float32 mono blocks at its ``rate``, from its own
thread (the PortAudio callback, or a pacing thread). ``push`` must never block; the loop's
``push`` only does a ``put_nowait`` into a bounded queue and counts an overrun when it is full.
``failed`` is set (with ``error``) when the device goes away, so the loop can stop cleanly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from edge.errors import AudioError

Push = Callable[[np.ndarray], None]


def list_devices() -> str:
    """PortAudio's device table as text (``edge-denoise live --list-devices``)."""
    import sounddevice as sd

    return str(sd.query_devices())


def negotiate_rate(device: str | int | None, wanted: int, kind: str = "input") -> int:
    """``wanted`` when the device accepts it, else the device's own default rate (Hz)."""
    import sounddevice as sd

    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    try:
        check(device=device, samplerate=wanted, channels=1, dtype="float32")
        return int(wanted)
    except (sd.PortAudioError, ValueError):
        pass
    try:
        info = sd.query_devices(device, kind)
    except (sd.PortAudioError, ValueError) as e:
        raise AudioError(f"no usable {kind} device {device!r} ({e}); see "
                         "`edge-denoise live --list-devices`") from None
    return int(info["default_samplerate"])


def parse_device(device: str | None) -> str | int | None:
    """'3' -> 3 (PortAudio index), 'default'/None -> None (system default), else a name."""
    if device is None or device == "default":
        return None
    return int(device) if device.isdigit() else device


class SoundDeviceSource:
    """Capture from a PortAudio input. The callback copies one channel and pushes it."""

    def __init__(self, device: str | int | None, rate: int, period: int, channels: int = 1,
                 input_channel: int = 0):
        self.device, self.rate, self.period = device, int(rate), int(period)
        self.channels, self.input_channel = channels, input_channel
        self.input_overflows = 0
        self.failed = threading.Event()
        self.error: str | None = None
        self._stream = None
        self._stopping = False

    def start(self, push: Push) -> None:
        import sounddevice as sd

        ch = self.input_channel

        def callback(indata, frames, time_info, status):
            if status.input_overflow:
                self.input_overflows += 1
            push(indata[:, ch].copy())

        def finished():
            if not self._stopping:
                self.error = "the input stream stopped (device removed or sound server gone)"
                self.failed.set()

        try:
            self._stream = sd.InputStream(device=self.device, samplerate=self.rate,
                                          blocksize=self.period, channels=self.channels,
                                          dtype="float32", latency="low", callback=callback,
                                          finished_callback=finished)
            self._stream.start()
        except (sd.PortAudioError, ValueError) as e:
            raise AudioError(f"cannot open input device {self.device!r} at {self.rate} Hz: "
                             f"{e}; see `edge-denoise live --list-devices`") from None

    @property
    def latency_s(self) -> float:
        return float(self._stream.latency) if self._stream is not None else 0.0

    def stop(self, timeout: float = 2.0) -> None:
        """Stop and close; a vanished sound server can hang PortAudio, so never wait forever."""
        self._stopping = True
        stream = self._stream
        if stream is None:
            return

        def close():
            try:
                stream.abort()
                stream.close()
            except Exception:
                pass

        t = threading.Thread(target=close, daemon=True, name="close-input")
        t.start()
        t.join(timeout)


class FileSource:
    """Plays samples into the loop in ``period``-sized blocks, paced at ``speed`` x real time
    (``speed=0``: as fast as the queue accepts). Stands in for a sound card in tests and
    benchmarks; ``done`` is set after the last block unless ``announce_end`` is False (then it
    behaves like a device that just stops delivering)."""

    def __init__(self, samples: np.ndarray, rate: int, period: int, speed: float = 1.0,
                 loop: bool = False, announce_end: bool = True):
        self.announce_end = announce_end
        self.samples = np.asarray(samples, dtype=np.float32)
        self.rate, self.period, self.speed, self.loop = int(rate), int(period), speed, loop
        self.input_overflows = 0
        self.failed = threading.Event()
        self.done = threading.Event()
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, push: Push) -> None:
        def run():
            t0 = time.perf_counter()
            i = 0
            n = len(self.samples)
            k = 0
            while not self._stop.is_set():
                if i + self.period > n:
                    if not self.loop:
                        break
                    i = 0
                push(self.samples[i:i + self.period].copy())
                i += self.period
                k += 1
                if self.speed > 0:
                    delay = t0 + k * self.period / self.rate / self.speed - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
            if self.announce_end:
                self.done.set()

        self._thread = threading.Thread(target=run, daemon=True, name="file-source")
        self._thread.start()

    latency_s = 0.0

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


class ProcessSource:
    """Raw float32 mono audio read from a child process's stdout (``parec`` for a sound-server
    source, ``edge-denoise virtual-mic``). A reader thread pushes ``period``-sized blocks; the
    kernel pipe, not a real-time callback, absorbs a reader held off the CPU for a while, and
    the child exiting sets ``failed``."""

    def __init__(self, argv: list[str], rate: int, period: int, what: str = "capture"):
        self.argv, self.rate, self.period, self.what = list(argv), int(rate), int(period), what
        self.input_overflows = 0
        self.failed = threading.Event()
        self.error: str | None = None
        self._proc = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self, push: Push) -> None:
        import subprocess

        try:
            # its own session: a Ctrl-C in the terminal stops the loop, which stops the child
            self._proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          start_new_session=True)
        except OSError as e:
            raise AudioError(f"cannot start {self.argv[0]}: {e}") from None
        nbytes = 4 * self.period

        def run():
            out = self._proc.stdout
            while True:
                data = out.read(nbytes)
                if len(data) < nbytes:  # EOF: the child (or the server behind it) is gone
                    break
                push(np.frombuffer(data, dtype="<f4").copy())
            if not self._stopping:
                why = self._proc.stderr.read().decode(errors="replace").strip().splitlines()
                self.error = (f"the {self.what} ({self.argv[0]}) stopped"
                              + (f": {why[-1]}" if why else "") + " (sound server gone?)")
                self.failed.set()

        self._thread = threading.Thread(target=run, daemon=True, name="process-source")
        self._thread.start()

    latency_s = 0.0

    def stop(self, timeout: float = 2.0) -> None:
        self._stopping = True
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
        try:
            self._proc.wait(timeout)
        except Exception:
            self._proc.kill()
        if self._thread is not None:
            self._thread.join(timeout)
