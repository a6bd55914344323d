"""`edge-denoise virtual-mic` in a private PulseAudio server (issue 22, item 3).

Noisy speech is played with paplay into a null sink whose monitor stands in for the
microphone; virtual-mic denoises it into its own virtual source, and a separate application
(parecord) records from that source. The recording must be the denoiser's output (it lines up
with `edge-denoise file` on the same input and carries much less noise than the input), and
after the command stops not one of its modules may be left in the server, even after kill -9.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sandbox import need_tools, pulse_server

from edge.audio import load_audio, save_audio

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EDGE = [sys.executable, "-m", "edge"]
RATE = 16_000  # the input sink's rate: no PulseAudio resampling between the two paths
# Measured (shipped model v2.0.0, traffic noise at 5 dB): the speech pauses come out ~20 dB
# quieter than in the input, live as offline; the recording matches the offline output
# with a correlation of 0.999 per 0.5 s window.
MIN_PAUSE_REDUCTION_DB = 12.0
MIN_CORRELATION = 0.95  # a 0.5 s window of the recording and of the offline output
MIN_MATCHING = 0.5  # share of the speech windows that match (14-19 of 19 seen)
# Output buffer for the test: the default 40 ms is enough on a quiet machine, not on a CI
# runner (or this 2-core machine at a load of 7-12) where the loop, pacat and the server
# wait hundreds of ms for a core, and each underrun leaves a gap in the recording.
BUFFER_MS = 300


@pytest.fixture
def pulse(tmp_path):
    need_tools("paplay", "parecord", hint="(apt-get install pulseaudio-utils)")
    with pulse_server(tmp_path, ["hl_mic"]) as (env, _log, _proc):
        yield env


@pytest.fixture(scope="module")
def speech(shared_data) -> tuple[np.ndarray, np.ndarray]:
    """(clean, noisy): four VCTK sentences (~7 s) with 0.5 s pauses, in traffic noise at 5 dB."""
    files = sorted((shared_data / "speech/vctk").glob("p23[02]/*.flac"))
    pause = np.zeros(RATE // 2, np.float32)
    clean = np.concatenate([part for p in files for part in (pause, load_audio(p).samples)]
                           + [pause])
    noise = np.resize(load_audio(shared_data / "noise/freesound_cc0/traffic.flac").samples,
                      len(clean))
    noise *= np.sqrt(np.mean(clean ** 2) / np.mean(noise ** 2) / 10 ** 0.5)
    return clean, (clean + noise).astype(np.float32)


def pactl(env: dict, *args: str) -> str:
    return subprocess.run(["pactl", *args], env=env, capture_output=True, text=True,
                          check=True, timeout=10).stdout


def realtime_profile(tmp_path) -> str:
    """generic-linux with the worker at SCHED_FIFO 50 (as the board profiles run it; we are
    root) and 2.5 s of capture queue: on a CI runner or this machine at a load of 15+ a
    nice'd worker waits seconds for a core, and the capture queue overflows."""
    text = (ROOT / "hardware/generic-linux.toml").read_text()
    text = text.replace("realtime_priority = 0", "realtime_priority = 50")
    text = text.replace("queue_frames = 64", "queue_frames = 256")
    path = tmp_path / "rt.toml"
    path.write_text(text.replace('name = "generic-linux"', 'name = "generic-linux-rt"'))
    return str(path)


def start_vmic(env: dict, *extra: str) -> subprocess.Popen:
    cmd = [*EDGE, "virtual-mic", "--source", "hl_mic.monitor", "--name", "hl_vmic",
           "--rate", str(RATE), "--quiet", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_source(env: dict, proc: subprocess.Popen, name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while name not in pactl(env, "list", "short", "sources").split():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"source {name} did not appear"
        time.sleep(0.1)


def wait_playing(env: dict, proc: subprocess.Popen, sink: str, timeout: float = 60) -> None:
    """Until the loop's playback stream is connected to ``sink`` (the model has loaded and
    the loop runs), then 2 s more: the ALSA plugin's stream takes that long to settle and
    the playback sink drops what piles up meanwhile (README, live loop)."""
    deadline = time.monotonic() + timeout
    while True:
        sinks = {row.split("\t")[1]: row.split("\t")[0]
                 for row in pactl(env, "list", "short", "sinks").splitlines()}
        inputs = [row.split("\t")[1] for row in
                  pactl(env, "list", "short", "sink-inputs").splitlines()]
        if sink in sinks and sinks[sink] in inputs:
            break
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"nothing plays into {sink}"
        time.sleep(0.1)
    time.sleep(2.0)


def align(ref: np.ndarray, y: np.ndarray) -> tuple[int, float]:
    """Lag of ``ref`` inside ``y`` (FFT cross-correlation) and the normalised peak there."""
    n = len(ref) + len(y)
    xc = np.fft.irfft(np.fft.rfft(y, n) * np.conj(np.fft.rfft(ref, n)), n)[:len(y)]
    lag = int(np.argmax(xc))
    seg = y[lag:lag + len(ref)]
    return lag, float(xc[lag] / (np.linalg.norm(ref[:len(seg)]) * np.linalg.norm(seg) + 1e-12))


def stitch(ref: np.ndarray, y: np.ndarray, win: int = RATE // 2, reach: int = RATE // 2
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``y`` aligned to ``ref`` window by window (0.5 s); each window's correlation; and
    whether its placement is sure.

    A stream that underruns under CPU load plays a gap and carries on later, so one lag
    for the whole recording does not hold: each window looks for its lag within ``reach``
    of the last window that matched (a quiet window would find a louder stretch anywhere
    else more alike). A window that matches nothing (a pause: after the mask little is
    left to match) takes that lag, and is sure of it when the next window that matches
    has the same lag: no gap fell in between."""
    lag0, _ = align(ref, y)
    lags, corrs = [], []
    for i in range(0, len(ref) - win + 1, win):
        lo = max(0, lag0 + i - reach)
        lag, peak = align(ref[i:i + win], y[lo:lo + win + 2 * reach])
        corrs.append(peak)
        if peak > MIN_CORRELATION:
            lag0 = lo + lag - i
        lags.append(lag0)
    corrs, lags = np.array(corrs), np.array(lags)
    matched = corrs > MIN_CORRELATION
    sure = matched.copy()
    for k in np.flatnonzero(~matched):
        before, after = np.flatnonzero(matched[:k]), k + 1 + np.flatnonzero(matched[k + 1:])
        sure[k] = (len(before) and len(after) and lags[before[-1]] == lags[after[0]])
    parts = [np.pad(y[lag + k * win:lag + (k + 1) * win],
                    (0, max(0, lag + (k + 1) * win - len(y)))) for k, lag in enumerate(lags)]
    return np.concatenate(parts), corrs, sure


def pause_energy_db(x: np.ndarray, clean: np.ndarray, keep: np.ndarray,
                    win: int = RATE // 2, frame: int = 320) -> float:
    """Energy of ``x`` (dB) over the 20 ms frames where the clean speech is 40 dB below its
    loudest frame (what is left there is noise), in the windows ``keep`` holds."""
    n = len(keep) * win // frame
    e_clean = np.mean(clean[:n * frame].reshape(n, frame) ** 2, axis=1)
    quiet = (e_clean < 1e-4 * e_clean.max()) & np.repeat(keep, win // frame)
    assert quiet.sum() > 20, "too few speech pauses to measure noise in"
    e = np.mean(x[:n * frame].reshape(n, frame) ** 2, axis=1)
    return float(10 * np.log10(np.mean(e[quiet]) + 1e-20))


def speech_windows(clean: np.ndarray, n: int, win: int = RATE // 2) -> np.ndarray:
    """Which of ``n`` windows hold speech (within 30 dB of the loudest window)."""
    e = np.mean(clean[:n * win].reshape(n, win) ** 2, axis=1)
    return e > 1e-3 * e.max()


def our_modules(env: dict) -> list[str]:
    return [line for line in pactl(env, "list", "short", "modules").splitlines()
            if "hl_vmic" in line]


def test_application_recording_the_virtual_source_gets_denoised_audio(pulse, speech, tmp_path):
    clean, noisy = speech
    played, offline = tmp_path / "noisy.wav", tmp_path / "offline.wav"
    save_audio(played, noisy, subtype="FLOAT")
    subprocess.run([*EDGE, "file", str(played), str(offline)], check=True, timeout=120,
                   capture_output=True)
    modules_before = pactl(pulse, "list", "short", "modules")

    proc = start_vmic(pulse, "--buffer-ms", str(BUFFER_MS), "--profile",
                      realtime_profile(tmp_path))
    rec = tmp_path / "app.wav"
    recorder = None
    try:
        wait_source(pulse, proc, "hl_vmic")
        assert len(our_modules(pulse)) == 2  # the null sink and the remapped source
        wait_playing(pulse, proc, "hl_vmic_feed")
        recorder = subprocess.Popen(
            ["parecord", "--device=hl_vmic", f"--rate={RATE}", "--channels=1",
             "--format=float32le", "--file-format=wav", str(rec)], env=pulse,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)  # the recorder's stream starts
        subprocess.run(["paplay", "--device=hl_mic", str(played)], env=pulse, check=True,
                       timeout=120)
        time.sleep(1.0)
        recorder.send_signal(signal.SIGINT)  # parecord finishes its file on SIGINT
        assert recorder.wait(10) == 0, recorder.stderr.read()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        for p in (recorder, proc):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    summary = json.loads(stdout)
    print({k: summary[k] for k in ("overruns", "input_overflows", "underruns", "queue_max",
                                   "playback_dropped_periods", "playback_trimmed_ms")})
    assert summary["reason"] == "stopped" and summary["error"] is None
    assert summary["hops"] > 0 and summary["warnings"] == []  # the worker got SCHED_FIFO
    assert summary["virtual_mic"]["capture_source"] == "hl_mic.monitor"
    # exactly what it loaded is gone, nothing else touched
    assert our_modules(pulse) == []
    assert pactl(pulse, "list", "short", "modules") == modules_before

    y = load_audio(rec, allow_silence=True).samples
    ref = load_audio(offline).samples
    got, corrs, sure = stitch(ref, y)
    assert len(y) > len(ref), "the recording is shorter than the speech"
    speech = corrs[speech_windows(clean, len(corrs))]  # in pauses little is left to match
    live_db, offline_db, input_db = (pause_energy_db(x, clean, sure) for x in (got, ref, noisy))
    print(f"{np.sum(speech > MIN_CORRELATION)} of {len(speech)} speech windows of 0.5 s match "
          f"the offline output (median correlation {np.median(speech):.3f}); pauses: input "
          f"{input_db:.1f} dB, live {live_db:.1f} dB, offline {offline_db:.1f} dB")
    # The denoiser's output sample for sample; a CPU-starved stream loses a window or two.
    assert np.median(speech) > 0.98, np.round(corrs, 3)
    assert np.mean(speech > MIN_CORRELATION) >= MIN_MATCHING, np.round(corrs, 3)
    assert input_db - live_db > MIN_PAUSE_REDUCTION_DB, "the recording is not denoised"
    assert abs(live_db - offline_db) < 3.0
    raw = stitch(noisy, y)[1][speech_windows(clean, len(corrs))]
    assert np.median(raw) < np.median(speech) - 0.05  # not the noisy input


def test_kill_9_leaves_no_modules_behind(pulse):
    proc = start_vmic(pulse)
    try:
        wait_source(pulse, proc, "hl_vmic")
        assert len(our_modules(pulse)) == 2
    finally:
        proc.kill()  # SIGKILL: no finally runs in it; the guard process unloads
        proc.communicate(timeout=10)
    deadline = time.monotonic() + 10
    while our_modules(pulse):
        assert time.monotonic() < deadline, our_modules(pulse)
        time.sleep(0.1)


def test_refusals_load_nothing(pulse, monkeypatch):
    """A wrong source, the virtual source as its own input, a taken name: `Error:`, exit 1."""
    from edge.cli import cli

    for key in ("HOME", "XDG_RUNTIME_DIR"):
        monkeypatch.setenv(key, pulse[key])
    before = pactl(pulse, "list", "short", "modules")
    pactl(pulse, "load-module", "module-null-sink", "sink_name=taken")
    cases = [(["--source", "nope"], "no source 'nope'"),
             (["--source", "hl_vmic_feed.monitor", "--name", "hl_vmic"], "would feed back"),
             (["--source", "hl_mic.monitor", "--name", "taken"], "already exists")]
    for args, why in cases:
        r = CliRunner().invoke(cli, ["virtual-mic", *args])
        assert r.exit_code == 1, r.output
        assert r.output.startswith("Error: ") and why in r.output, r.output
    r = CliRunner().invoke(cli, ["virtual-mic", "--name", "a b"])
    assert r.exit_code == 2 and "--name" in r.output
    lines = pactl(pulse, "list", "short", "modules").splitlines()
    assert [m for m in lines if "sink_name=taken" not in m] == before.splitlines()


def test_no_sound_server_is_a_one_line_error(tmp_path, monkeypatch):
    need_tools("pactl", hint="(apt-get install pulseaudio-utils)")
    from edge.cli import cli

    (tmp_path / "run").mkdir(mode=0o700)
    (tmp_path / "client.conf").write_text("autospawn = no\n")  # as a user, libpulse would start one
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("PULSE_CLIENTCONFIG", str(tmp_path / "client.conf"))
    monkeypatch.delenv("PULSE_SERVER", raising=False)
    r = CliRunner().invoke(cli, ["virtual-mic"])
    assert r.exit_code == 1, r.output
    assert r.output.startswith("Error: no PulseAudio/PipeWire server")
    assert len(r.output.strip().splitlines()) == 1
