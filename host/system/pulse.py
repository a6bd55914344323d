"""A device's microphone: a private PulseAudio server (own HOME and XDG_RUNTIME_DIR) with a
16 kHz null sink, fed in a loop by a real recording; ``edge-denoise live`` records the
sink's monitor as its default input (../shared/RECIPES.md, "PulseAudio null sink")."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np

from edge.errors import HushlinkError

SINK = "vsink"
RATE = 16_000


class AudioError(HushlinkError):
    pass


def env_for(home: Path) -> dict:
    """The client environment that reaches this device's server (and nobody else's)."""
    return {"HOME": str(home), "XDG_RUNTIME_DIR": str(home / "run"),
            "PULSE_SOURCE": f"{SINK}.monitor", "PULSE_SINK": SINK}


def prepare_home(home: Path) -> dict:
    """HOME and XDG_RUNTIME_DIR for a private server, ALSA's default routed to it."""
    run = home / "run"
    run.mkdir(parents=True, exist_ok=True)
    run.chmod(0o700)
    (home / ".asoundrc").write_text("pcm.!default { type pulse }\nctl.!default { type pulse }\n")
    return env_for(home)


def server_argv(sinks: tuple[str, ...] = (SINK,)) -> list[str]:
    """A server in the foreground with only the null ``sinks`` and the native protocol (no
    default.pa: no hardware probing, no D-Bus)."""
    return ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "-F", "/dev/null",
            *[f"--load=module-null-sink sink_name={s} rate={RATE}" for s in sinks],
            "--load=module-native-protocol-unix"]


def player_argv(wav: Path) -> list[str]:
    """Play ``wav`` into the sink forever; a failing paplay ends the loop (a crash)."""
    return ["sh", "-c", f'while paplay --device={SINK} "$0"; do :; done; exit 1', str(wav)]


def wait_ready(env: dict, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while subprocess.run(["pactl", "info"], env={**os.environ, **env},
                         capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise AudioError(f"PulseAudio did not start in {timeout_s:.0f} s")
        time.sleep(0.2)


def make_recording(data: Path | None, index: int, out: Path, seconds: float = 30.0,
                   snr_db: float = 5.0) -> str:
    """Speech of one speaker per device mixed with a real noise at ``snr_db`` (a different
    pair per ``index``), or a synthetic voice in pink noise when the corpus is absent.
    Returns where it came from. The clean speech goes beside it (``NAME.clean.wav``): the
    reference the received audio is scored against."""
    from edge.audio import load_audio, save_audio

    speech = sorted((data / "speech").rglob("*.flac")) if data and data.is_dir() else []
    noises = sorted((data / "noise").rglob("*.flac")) if speech else []
    if speech and noises:
        rng = np.random.default_rng(index)
        parts, n = [], 0
        start = int(rng.integers(len(speech)))
        for k in range(len(speech)):
            x = load_audio(speech[(start + k) % len(speech)]).samples
            parts += [x, np.zeros(RATE // 4, np.float32)]
            n += len(x) + RATE // 4
            if n >= seconds * RATE:
                break
        clean = np.concatenate(parts)[: int(seconds * RATE)]
        noise_path = noises[int(rng.integers(len(noises)))]
        noise = np.resize(load_audio(noise_path).samples, len(clean))
        src = f"{speech[start].relative_to(data)} and following + {noise_path.relative_to(data)}"
    else:
        rng = np.random.default_rng(index)  # a clone without the corpus: a voiced stand-in
        t = np.arange(int(seconds * RATE)) / RATE
        phase = 2 * np.pi * np.cumsum(140 + 30 * np.sin(2 * np.pi * 0.5 * t)) / RATE
        clean = (0.1 * sum(np.sin(k * phase) / k for k in range(1, 20))
                 * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32)
        noise = rng.standard_normal(len(t)).astype(np.float32)
        src = "synthetic voice + white noise (no corpus)"
    gain = np.sqrt(np.mean(clean ** 2) / (np.mean(noise ** 2) * 10 ** (snr_db / 10) + 1e-12))
    y = clean + gain * noise
    scale = max(1.0, float(np.abs(y).max()) / 0.9)
    y = (y / scale).astype(np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_audio(out, y)
    save_audio(clean_path(out), (clean / scale).astype(np.float32))
    return src


def clean_path(recording: Path) -> Path:
    return Path(recording).with_suffix(".clean.wav")
