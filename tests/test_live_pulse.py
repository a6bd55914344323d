"""`edge-denoise live` through a real sound server: a private PulseAudio with null sinks.

Noisy speech from ../shared/data (the denoiser benchmark's held-out test mixtures) is played
into a null sink with paplay; the live loop captures the sink's monitor through PortAudio ->
ALSA -> pulse and records what it denoised. The server is then killed under a running loop.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sandbox import need_tools, pulse_server

from edge.audio import load_audio, save_audio
from edge.model import default_model_path

pytestmark = [pytest.mark.slow, pytest.mark.train]

IN_CI = os.environ.get("CI") == "true"
EDGE = [sys.executable, "-m", "edge"]
# Mean SI-SDR gain per mixture over the denoiser benchmark's 20 test-split mixtures at 5 dB
# (20 unseen speakers, unseen noises), played back to back as one 85 s stream: the model's
# state runs on from one mixture into the next, as on a device. Measured: v1.3.0 +4.1 dB
# offline on that stream (+5.7 dB started fresh on every mixture: it had only ever been
# trained from a zero state); v1.4.0, trained to start from another mixture's state, +5.17 dB
# offline and +5.15..5.19 dB live (three runs). v2.0.0, trained on 3x more speech of other
# corpora and judged on the cross-corpus split (where it doubles v1.4.0's gain), gains less on
# this split, which shares corpora with v1.4.0's training: +4.62 dB offline (benchmarks/
# results/denoise.md, the +5 dB column of student_int8_continuous) and +4.30 dB live (one run,
# beside a benchmark): the issue-5 target of 5 dB is no longer met on this split. The tiny
# test model of tests/stepmodels.py (2 min of speech, two noises) does not generalise to these
# noises (-0.3 dB offline): with it the test only bounds the damage.
MIN_GAIN_TEST_MODEL_DB = -1.0
MIN_GAIN_SHIPPED_DB = 3.8


@dataclass
class Pulse:
    env: dict
    proc: subprocess.Popen
    sink: str
    log: Path

    def client_env(self, **extra) -> dict:
        return {**self.env, "PULSE_SOURCE": f"{self.sink}.monitor", **extra}


@pytest.fixture
def pulse(tmp_path) -> Pulse:
    """A private PulseAudio server with an input and an output null sink (tests/sandbox.py)."""
    need_tools("paplay", hint="(apt-get install pulseaudio-utils)")
    sink = f"hl_in_{os.getpid()}"
    with pulse_server(tmp_path, [sink, f"{sink}_out"]) as (env, log, proc):
        yield Pulse(env=env, proc=proc, sink=sink, log=log)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> tuple[Path, float]:
    """The shipped model when there is one, else the tiny test model; with its SI-SDR bound."""
    if default_model_path().is_file():
        return default_model_path(), MIN_GAIN_SHIPPED_DB
    from stepmodels import build_test_model

    return build_test_model(tmp_path_factory.getbasetemp() / "stepmodel"), MIN_GAIN_TEST_MODEL_DB


@dataclass
class Stream:
    """Test mixtures back to back: ``noisy`` is what is played; mixture ``i`` is
    ``noisy[starts[i]:starts[i] + len(clean[i])]``."""

    noisy: np.ndarray
    clean: list[np.ndarray]
    starts: list[int]


@pytest.fixture(scope="module")
def stream(shared_data) -> Stream:
    """The denoiser benchmark's test mixtures at 5 dB SNR (speakers and noises held out of
    training), from the same seeded split as ``benchmarks/denoise.py``."""
    from training.config import load_config
    from training.data import eval_mixtures, make_manifest

    cfg = load_config("default")
    mixtures = eval_mixtures(make_manifest(cfg.data, shared_data, cfg.seed), 20, (5.0,))
    starts = np.cumsum([0] + [len(m["noisy"]) for m in mixtures])[:-1]
    return Stream(noisy=np.concatenate([m["noisy"] for m in mixtures]),
                  clean=[m["clean"] for m in mixtures], starts=[int(o) for o in starts])


def mean_gain(stream: Stream, y: np.ndarray, x: np.ndarray) -> float:
    """Mean over mixtures of SI-SDR(output) - SI-SDR(input), both aligned to the stream."""
    g = [si_sdr(c, y[o:o + len(c)]) - si_sdr(c, x[o:o + len(c)])
         for c, o in zip(stream.clean, stream.starts, strict=True)]
    return float(np.mean(g))


def si_sdr(ref: np.ndarray, est: np.ndarray) -> float:
    a = np.dot(est, ref) / np.dot(ref, ref)
    return float(10 * np.log10(np.sum((a * ref) ** 2) / np.sum((a * ref - est) ** 2)))


def align(ref: np.ndarray, y: np.ndarray) -> tuple[int, float]:
    """Lag of ``ref`` inside ``y`` by FFT cross-correlation, and the normalised peak."""
    n = len(ref) + len(y)
    xc = np.fft.irfft(np.fft.rfft(y, n) * np.conj(np.fft.rfft(ref, n)), n)[:len(y)]
    lag = int(np.argmax(xc))
    seg = y[lag:lag + len(ref)]
    norm = np.linalg.norm(ref[:len(seg)]) * np.linalg.norm(seg) + 1e-12
    return lag, float(xc[lag] / norm)


def start_live(pulse: Pulse, model: Path, out: Path, duration: float, *extra: str,
               rate: int = 48_000) -> subprocess.Popen:
    cmd = [*EDGE, "live", "--duration", str(duration), "--record", str(out), "--rate", str(rate),
           "--model", str(model), "--summary", str(out.with_suffix(".json")), "--quiet", *extra]
    return subprocess.Popen(cmd, env=pulse.client_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_recording(proc: subprocess.Popen, out: Path, timeout: float = 30) -> None:
    """Until the loop has written audio (the model loaded and the device delivers)."""
    deadline = time.monotonic() + timeout
    while not (out.exists() and out.stat().st_size > 48_000):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "live loop did not start recording"
        time.sleep(0.05)


def test_live_denoises_played_speech_without_overruns(pulse, model_path, stream, tmp_path):
    model, min_gain = model_path
    noisy = stream.noisy
    played = tmp_path / "noisy.wav"
    save_audio(played, noisy, subtype="FLOAT")
    out, captured = tmp_path / "out.wav", tmp_path / "in.wav"
    seconds = len(noisy) / 16_000 + 3.0
    # 16 kHz like the sink: PulseAudio's own resampler (speex) would blur the input by itself
    # (~20 dB SI-SDR); the loop's soxr resampling at 48 kHz is covered by the other tests.
    proc = start_live(pulse, model, out, seconds, "--record-input", str(captured), rate=16_000)
    wait_recording(proc, out)
    subprocess.run(["paplay", f"--device={pulse.sink}", str(played)], env=pulse.env, check=True,
                   timeout=seconds + 60)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary == json.loads(out.with_suffix(".json").read_text())
    assert summary["overruns"] == 0 and summary["input_overflows"] == 0
    assert summary["error"] is None and summary["reason"] == "duration"
    assert summary["audio_s"] == pytest.approx(seconds, abs=0.01)
    assert summary["capture_rate"] == 16_000 and summary["hops"] > 0

    info = sf.info(out)
    assert info.samplerate == 16_000 and info.frames == round(seconds * 16_000)
    y, x = load_audio(out).samples, load_audio(captured).samples
    lag, peak = align(noisy, y)
    assert peak > 0.5, f"output does not line up with the played speech (peak {peak:.2f})"
    live = y[lag:lag + len(noisy)]
    assert len(live) == len(noisy), "recording cut the speech short"
    lag_in, peak_in = align(noisy, x)
    assert peak_in > 0.9
    heard = x[lag_in:lag_in + len(noisy)]  # what the loop captured, through the same path

    gain = mean_gain(stream, live, heard)
    added_ms = (lag - lag_in) / 16
    print(f"live SI-SDR gain {gain:.2f} dB (bound {min_gain} dB), loop delay {added_ms:.1f} ms")
    assert gain >= min_gain
    # the loop's signal delay is win - hop = 10 ms (the hop itself is buffered on top)
    assert added_ms == pytest.approx(10.0, abs=0.1)


def test_sound_server_killed_mid_run_gives_error_and_valid_partial_file(
        pulse, model_path, stream, tmp_path):
    model, _ = model_path
    played = tmp_path / "noisy.wav"
    save_audio(played, stream.noisy[:10 * 16_000])
    out = tmp_path / "part.wav"
    proc = start_live(pulse, model, out, 60.0)
    wait_recording(proc, out)
    player = subprocess.Popen(["paplay", f"--device={pulse.sink}", str(played)], env=pulse.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    pulse.proc.kill()  # the device disappears, abruptly
    try:
        stdout, stderr = proc.communicate(timeout=20)  # no hang
    finally:
        player.kill()
        player.wait()
    assert proc.returncode == 1
    assert "Error: " in stderr and "Traceback" not in stderr
    assert "sound server gone" in stderr or "device" in stderr
    summary = json.loads(stdout)
    assert summary["reason"] == "error" and summary["error"]
    data, rate = sf.read(out, dtype="float32")  # a valid, readable partial recording
    assert rate == 48_000 and len(data) > 48_000
    assert abs(len(data) / rate - summary["audio_s"]) < 0.1
    assert np.max(np.abs(data)) > 0.01  # it holds the speech played before the server died


def test_sigusr1_toggles_bypass_and_sigterm_stops_cleanly(pulse, model_path, tmp_path):
    model, _ = model_path
    out = tmp_path / "sig.wav"
    proc = start_live(pulse, model, out, 60.0, "--play")  # also plays to the default sink
    wait_recording(proc, out)
    proc.send_signal(signal.SIGUSR1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["reason"] == "stopped" and summary["error"] is None
    assert summary["bypass"] is True and summary["bypass_toggles"] == 1
    assert sf.info(out).frames > 0


def test_live_streams_denoised_audio_over_rtp(pulse, model_path, stream, tmp_path):
    """`live --stream udp://...` sends what it records, and the receiver's telemetry flows back."""
    from edge.transport.receiver import Receiver

    model, _ = model_path
    noisy = stream.noisy[: 3 * 16_000]
    played, out, tele = tmp_path / "noisy.wav", tmp_path / "out.wav", tmp_path / "tele.jsonl"
    save_audio(played, noisy, subtype="FLOAT")
    with Receiver("127.0.0.1:0") as rx:
        proc = start_live(pulse, model, out, 5.0, "--stream", f"udp://127.0.0.1:{rx.port}",
                          "--telemetry", str(tele), rate=16_000)
        wait_recording(proc, out)
        subprocess.run(["paplay", f"--device={pulse.sink}", str(played)], env=pulse.env,
                       check=True, timeout=60)
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr
        rx.wait(5)
        got = rx.audio()
    recorded = load_audio(out, allow_silence=True).samples
    assert abs(len(got) - len(recorded)) < 0.5 * 16_000  # one buffer plus start-up
    _, peak = align(recorded[16_000:3 * 16_000], got)  # what was sent is what was recorded
    assert peak > 0.8
    lines = [json.loads(line) for line in tele.read_text().splitlines() if line.strip()]
    assert lines and all(rec["loss_pct"] == 0 for rec in lines)
