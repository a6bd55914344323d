"""The live loop without a sound card: FileSource stands in for the capture device.

The model here is a small numpy mask model (the MaskModel protocol) so these tests run in
seconds; the TFLite model through a real sound server is tests/test_live_pulse.py.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from edge.denoise import Denoiser
from edge.dsp import FrontEnd
from edge.live import LiveLoop, LoopConfig
from edge.sinks import CallbackSink, NullSink, RecordSink, drop_with_crossfade
from edge.sources import FileSource


class HalfMask:
    """Halves every bin (``gain``); ``delay_s`` per step makes a deliberately slow model."""

    front_end = FrontEnd()

    def __init__(self, delay_s: float = 0.0, gain: float = 0.5):
        self.delay_s, self.gain = delay_s, gain

    def init_state(self):
        return [np.zeros((1, 4), dtype=np.float32)]

    def step(self, features, state):
        if self.delay_s:
            time.sleep(self.delay_s)
        return np.full(161, self.gain, dtype=np.float32), state


def signal_48k(seconds: float) -> np.ndarray:
    t = np.arange(int(48_000 * seconds)) / 48_000
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_file_source_through_the_loop_resamples_and_applies_the_model(tmp_path):
    x = signal_48k(2.0)
    got = []
    sinks = [RecordSink(tmp_path / "out.wav", 48_000), CallbackSink(got.append, rate=16_000)]
    loop = LiveLoop(FileSource(x, 48_000, 480, speed=4.0), Denoiser(HalfMask()), sinks,
                    LoopConfig(queue_blocks=256))
    s = loop.run()
    assert s["reason"] == "end of input" and s["error"] is None and s["overruns"] == 0
    assert len(x) // 3 // 160 - 3 <= s["hops"] <= len(x) // 3 // 160  # soxr keeps a few ms
    y16 = np.concatenate(got)
    assert len(y16) == s["hops"] * 160
    y48, rate = sf.read(tmp_path / "out.wav", dtype="float32")
    assert rate == 48_000 and 0 <= len(x) - len(y48) < 48_000 * 0.04  # held in resamplers
    mid = y48[24_000:72_000]  # away from the edges: the tone at half amplitude
    assert np.sqrt(np.mean(mid ** 2)) == pytest.approx(0.3 * 0.5 / np.sqrt(2), rel=0.02)
    assert s["hop_ms"]["n"] == s["hops"] and s["hop_ms"]["p99"] >= s["hop_ms"]["p50"]


def test_duration_stops_after_exactly_that_much_audio():
    sink = NullSink(16_000)
    loop = LiveLoop(FileSource(signal_48k(1.0), 48_000, 480, speed=0.0, loop=True),
                    Denoiser(HalfMask()), [sink], LoopConfig(duration_s=0.75, queue_blocks=4096))
    s = loop.run()
    assert s["reason"] == "duration" and s["audio_s"] == 0.75
    assert sink.frames == 12_000  # 16 kHz sink: no resampler delay


def test_a_slow_worker_counts_overruns_and_never_blocks_the_callback():
    """Model 4x slower than real time: the bounded queue fills and blocks are dropped and
    counted, while the pushing (callback) thread keeps its pace."""
    src = FileSource(signal_48k(1.0), 48_000, 480, speed=1.0)
    loop = LiveLoop(src, Denoiser(HalfMask(delay_s=0.04)), [NullSink()],
                    LoopConfig(queue_blocks=4))
    t0 = time.monotonic()
    s = loop.run()
    assert s["overruns"] > 20
    assert s["blocks"] + s["overruns"] == 100  # every captured block is accounted for
    assert s["queue_max"] >= 3
    assert time.monotonic() - t0 < 8  # the source was never held up by the worker


def test_stop_and_bypass_toggle_from_another_thread():
    loop = LiveLoop(FileSource(signal_48k(1.0), 48_000, 480, loop=True),
                    Denoiser(HalfMask()), [NullSink()], LoopConfig())

    def control():
        time.sleep(0.3)
        loop.toggle_bypass()
        time.sleep(0.3)
        loop.stop()

    threading.Thread(target=control).start()
    s = loop.run()
    assert s["reason"] == "stopped" and s["bypass"] is True and s["bypass_toggles"] == 1


def test_a_source_that_stops_delivering_is_a_device_loss_not_a_hang():
    src = FileSource(signal_48k(0.3), 48_000, 480, loop=True, announce_end=False)
    loop = LiveLoop(src, Denoiser(HalfMask()), [NullSink()], LoopConfig(stall_timeout_s=0.5))
    threading.Timer(0.3, src.stop).start()  # the "device" goes silent, no end-of-input
    s = loop.run()
    assert s["reason"] == "error" and "no audio from the input device" in s["error"]


def test_recording_header_is_valid_even_after_an_abrupt_exit(tmp_path):
    """RecordSink rewrites the WAV header on every write: kill -9 still leaves a file."""
    path = tmp_path / "abrupt.wav"
    code = (
        "import os, numpy as np\n"
        "from edge.sinks import RecordSink\n"
        f"s = RecordSink({str(path)!r}, 16000)\n"
        "for _ in range(10): s.write(np.full(1600, 0.25, dtype=np.float32))\n"
        "os._exit(0)\n"  # no close(): like SIGKILL
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    data, rate = sf.read(path, dtype="float32")
    assert rate == 16_000 and len(data) == 16_000
    assert np.allclose(data, 0.25)


def test_ptp_lock_measures_and_corrects_the_card_rate():
    """With a media clock, the loop follows PTP time: a card 1000 ppm slow against the
    (simulated) PTP clock is measured and the stream is resampled by that much."""
    from edge.clock.mediaclock import PtpLockedStream

    speed, true_ppm = 4.0, -1000.0
    t0 = time.monotonic_ns()

    def ptp_ns() -> int:  # PTP time runs (1 - true_ppm) faster than the card's samples
        return int((time.monotonic_ns() - t0) * speed * (1 - true_ppm * 1e-6))

    x = signal_48k(14.0)
    got = []
    media = PtpLockedStream(48_000, window_s=8.0, tau_s=2.0, clock=ptp_ns)
    loop = LiveLoop(FileSource(x, 48_000, 480, speed=speed), Denoiser(HalfMask()),
                    [CallbackSink(got.append, rate=48_000)], LoopConfig(queue_blocks=256),
                    media_clock=media)
    s = loop.run()
    assert s["error"] is None and s["overruns"] == 0
    assert s["media_clock_ppm"] == pytest.approx(true_ppm, abs=250)
    assert media.produced > len(x) * (1 + 0.5 * abs(true_ppm) * 1e-6)  # stretched toward PTP


def test_playback_trim_crossfades_out_the_excess():
    """The backlog trim cuts exactly n samples and hides the cut: a sine with a phase jump
    at the cut steps no further than the sine itself does."""
    t = np.arange(4800) / 48_000
    x = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    y = drop_with_crossfade(x, 517, 48)
    assert len(y) == len(x) - 517
    assert y[0] == x[0] and np.array_equal(y[48:], x[517 + 48:])
    assert np.max(np.abs(np.diff(y))) <= 1.05 * np.max(np.abs(np.diff(x)))
    plain = x[517:]  # what a cut without the fade plays after x[0]
    assert abs(plain[0] - x[0]) > 5 * np.max(np.abs(np.diff(x)))
    assert len(drop_with_crossfade(x[:100], 80, 48)) == 20  # too short to fade: a plain cut


def test_a_requested_model_is_swapped_in_between_blocks_without_a_gap():
    """request_model (a flashed bundle going live) mid-stream: from one block to the next the
    output is the new model's (half -> quarter amplitude), every sample is still there, and
    the block that carried the swap took well under one period."""
    x = signal_48k(3.0)
    got = []

    def collect(block):  # after 1 s of output ask for the new model (the request comes from
        got.append(block)  # SlotFollower's loader thread in the service; here deterministic)
        if sum(map(len, got)) >= 16_000 and not loop.switches and loop._next_model is None:
            loop.request_model(HalfMask(gain=0.25), {"bundle_version": "2.0.0", "sha256": "ab"})

    # a deep queue: a start-up stall on a loaded CI box must not count as an overrun here
    loop = LiveLoop(FileSource(x, 48_000, 480, speed=2.0), Denoiser(HalfMask()),
                    [CallbackSink(collect, rate=16_000)], LoopConfig(queue_blocks=2048))
    s = loop.run()
    assert s["error"] is None and s["overruns"] == 0
    (sw,) = s["model_switches"]
    assert sw["bundle_version"] == "2.0.0" and loop.model_info["sha256"] == "ab"
    assert sw["swap_ms"] < 1.0 and sw["block_ms"] < sw["period_ms"] == 10.0
    y = np.concatenate(got)
    assert len(y) == s["hops"] * 160  # nothing dropped
    rms = np.sqrt(np.mean(y[: len(y) // 160 * 160].reshape(-1, 160) ** 2, axis=1))
    half, quarter = 0.3 * 0.5 / np.sqrt(2), 0.3 * 0.25 / np.sqrt(2)
    on_half = np.flatnonzero(np.abs(rms - half) < 0.02 * half)
    on_quarter = np.flatnonzero(np.abs(rms - quarter) < 0.02 * quarter)
    assert len(on_half) > 50 and len(on_quarter) > 50
    assert on_half.max() < on_quarter.min()  # the switch happened once, at one place
    between = rms[on_half.max() + 1:on_quarter.min()]
    assert len(between) <= 3 and np.all(between > 0.9 * quarter)  # a 20 ms fade, no hole
    assert 0 < loop.stats.window()["hops"] < s["hops"]  # the live check's window restarted


def _run_48k(x: np.ndarray, model, bypass: bool = False) -> np.ndarray:
    got: list[np.ndarray] = []
    loop = LiveLoop(FileSource(x, 48_000, 480, speed=4.0), Denoiser(model, bypass=bypass),
                    [CallbackSink(got.append, rate=48_000)], LoopConfig(queue_blocks=512))
    s = loop.run()
    assert s["error"] is None and s["overruns"] == 0
    assert s["resampler"] == "linear-phase (full band)"
    assert s["full_band_delay_ms"] == pytest.approx(FULL_BAND_DELAY / 48)
    return np.concatenate(got)


FULL_BAND_DELAY = 192 + 3 * 160  # the linear-phase resamplers + the denoiser's 160 at 16 kHz


def test_live_full_band_bypass_is_the_input_delayed_bit_exactly():
    """Issue 22: a 48 kHz capture with a 48 kHz sink keeps its whole band; bypass gives the
    input back sample for sample, only delayed."""
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 48_000).astype(np.float32)
    y = _run_48k(x, HalfMask(), bypass=True)
    d = FULL_BAND_DELAY
    assert len(y) > 40_000
    np.testing.assert_array_equal(y[d:], x[:len(y) - d])
    assert not np.any(y[:d])


@pytest.mark.parametrize("gain", [1.0, 0.5])
def test_live_full_band_keeps_the_upper_band_at_the_masks_gain(gain):
    """A 440 Hz and a 12 kHz tone: the low one at the model's gain as before, the high one
    (which the 16 kHz path removed) kept, attenuated by the mask's top-band mean; with the
    mask at 1 the output is the input delayed (the band split is complementary)."""
    t = np.arange(96_000) / 48_000
    low, high = 0.3 * np.sin(2 * np.pi * 440 * t), 0.1 * np.sin(2 * np.pi * 12_000 * t)
    x = (low + high).astype(np.float32)
    y = _run_48k(x, HalfMask(gain=gain))
    d = FULL_BAND_DELAY
    seg = slice(24_000, 72_000)  # away from the edges and the first hop's gain ramp
    yy = y[d:][seg]
    spec = np.abs(np.fft.rfft(yy)) / (len(yy) / 2)
    freqs = np.fft.rfftfreq(len(yy), 1 / 48_000)
    at = {f: spec[np.argmin(np.abs(freqs - f))] for f in (440, 12_000)}
    assert at[440] == pytest.approx(0.3 * gain, rel=0.02)
    assert at[12_000] == pytest.approx(0.1 * gain, rel=0.02)
    if gain == 1.0:
        err = yy - x[seg]
        assert 10 * np.log10(np.sum(x[seg] ** 2) / np.sum(err ** 2)) > 40
