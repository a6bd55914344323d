"""`edge-denoise receive --play` through a real sound server: a private PulseAudio whose null
sink's monitor is recorded with parec while a stream plays."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from sandbox import need_tools, pulse_server
from scipy.signal import correlate

from edge.audio import load_audio
from edge.params import TransportParams
from edge.transport.sender import Sender, send_file

pytestmark = pytest.mark.slow
IN_CI = os.environ.get("CI") == "true"
SPEECH = "speech/vctk/p278/p278_003.flac"


@pytest.fixture
def pulse(tmp_path):
    """A private PulseAudio server with one null sink (tests/sandbox.py)."""
    need_tools("parec", hint="(apt-get install pulseaudio-utils)")
    sink = f"hlt_play_{os.getpid()}"
    with pulse_server(tmp_path, [sink]) as (env, _log, _proc):
        yield {**env, "PULSE_SINK": sink}, sink


def test_receive_plays_on_the_sound_card(pulse, shared_data, tmp_path):
    env, sink = pulse
    x = load_audio(shared_data / SPEECH).samples[: 3 * 16_000]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    raw = tmp_path / "monitor.f32"
    rec = subprocess.Popen(["parec", f"--device={sink}.monitor", "--rate=16000", "--channels=1",
                            "--format=float32le", "--raw", "--latency-msec=20", str(raw)],
                           env=env)
    deadline = time.monotonic() + 10
    while not (raw.exists() and raw.stat().st_size > 0):  # recording before playing
        assert time.monotonic() < deadline and rec.poll() is None, "parec did not start"
        time.sleep(0.05)
    rx = subprocess.Popen([sys.executable, "-m", "edge", "receive", "--listen",
                           f"127.0.0.1:{port}", "--play", "--duration", "15"], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "listening" in rx.stderr.readline()
        with Sender(f"udp://127.0.0.1:{port}", TransportParams()) as tx:
            send_file(x, tx)
        out, err = rx.communicate(timeout=15)
        assert rx.returncode == 0, err
        time.sleep(0.5)
        rec.send_signal(signal.SIGINT)  # parec flushes what it recorded and exits
        rec.wait(timeout=5)
    finally:
        for p in (rx, rec):
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)
    summary = dict(line.split(None, 1) for line in out.splitlines())
    assert summary["received"] == "150"
    assert int(summary["play_underruns"]) <= 5  # one when the stream ends; a busy CPU adds some
    y = np.fromfile(raw, dtype=np.float32)
    assert len(y) > len(x)
    # every voiced half second of the speech is found in what the sound card played (each at
    # its own lag: a starved sound server may glitch between them on a busy machine)
    seg = 8000
    found = []
    for i in range(0, len(x) - seg + 1, seg):
        ref = x[i:i + seg]
        if np.sqrt(np.mean(ref ** 2)) < 0.02:
            continue
        c = correlate(y, ref, mode="valid", method="fft")
        norms = np.sqrt(np.convolve(y ** 2, np.ones(seg), mode="valid")) * np.linalg.norm(ref)
        found.append(float(np.max(c / (norms + 1e-9))))
    assert len(found) >= 3
    assert np.mean(np.array(found) > 0.9) >= 0.75, (found, out)
