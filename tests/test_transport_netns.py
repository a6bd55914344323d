"""The command-line tools across two network namespaces joined by a veth pair: sender and
emulator in one, receiver in the other. Telemetry is checked against the emulator's truth."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from sandbox import need, veth_namespaces

pytestmark = [pytest.mark.slow, pytest.mark.root]
BIN = Path(sys.executable).parent
SPEECH = "speech/vctk/p278/p278_003.flac"


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=20)


@pytest.fixture(scope="module")
def netns():
    """Two namespaces, ``a`` (10.77.0.1) and ``b`` (10.77.0.2), unique to this process."""
    need(os.geteuid() == 0 and shutil.which("ip") is not None,
         "network namespaces need root and iproute2")
    pid = os.getpid()
    a, b = f"hlt{pid}a", f"hlt{pid}b"
    teardown = veth_namespaces((a, b), (f"hv{pid}a", f"hv{pid}b"),
                               ("10.77.0.1/24", "10.77.0.2/24"))
    try:
        yield a, b
    finally:
        teardown()


def _start(ns: str, *args: str) -> subprocess.Popen:
    p = subprocess.Popen(["ip", "netns", "exec", ns, *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return p


def _run_once(netns, tmp: Path, wav: Path, tag: str, impair: list[str],
              proto: str = "udp") -> tuple[dict, dict]:
    a, b = netns
    truth, rx_tel = tmp / f"{tag}-truth.json", tmp / f"{tag}-rx.jsonl"
    procs = []
    try:
        rx = _start(b, str(BIN / "edge-denoise"), "receive", "--listen", "10.77.0.2:5004",
                    "--record", str(tmp / f"{tag}.wav"), "--telemetry", str(rx_tel), "--json",
                    "--duration", "30", "--protocol", proto)
        procs.append(rx)
        assert "listening" in rx.stderr.readline()
        emu = _start(a, str(BIN / "host-calibrate"), "emulate", "--listen", "127.0.0.1:5005",
                     "--forward", "10.77.0.2:5004", "--truth", str(truth), "--duration", "30",
                     "--protocol", proto, *impair)
        procs.append(emu)
        assert "emulating" in emu.stderr.readline()
        snd = subprocess.run(["ip", "netns", "exec", a, str(BIN / "edge-denoise"), "send",
                              str(wav), "--to", f"{proto}://127.0.0.1:5005", "--bitrate", "64",
                              "--json"], capture_output=True, text=True, timeout=30)
        assert snd.returncode == 0, snd.stderr
        out, err = rx.communicate(timeout=10)
        assert rx.returncode == 0, err
        emu.terminate()  # SIGTERM: the emulator writes its truth and exits cleanly
        emu.communicate(timeout=10)
        assert emu.returncode == 0
        return json.loads(out.strip().splitlines()[-1]), json.loads(truth.read_text())
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()


def test_cli_stream_across_namespaces(netns, shared_data, tmp_path):
    x, sr = sf.read(shared_data / SPEECH, dtype="float32")
    wav = tmp_path / "in.wav"
    sf.write(wav, x[: 3 * sr], sr)
    base, base_truth = _run_once(netns, tmp_path, wav, "base", [])
    # the base path: sender -> emulator -> receiver without the emulator's own holding time
    # (which the truth of every run reports, so it must not be counted twice)
    base_med = base["latency_ms_median"] - base_truth["rtp"]["delay_ms_median"]
    base_mean = base["latency_ms"] - base_truth["rtp"]["delay_ms_mean"]
    assert base["lost"] == 0 and base["received"] == 150
    rx, truth = _run_once(netns, tmp_path, wav, "lossy",
                          ["--loss", "5%", "--delay", "40ms", "--jitter", "10ms",
                           "--reorder", "1%", "--rate", "300kbit", "--seed", "3"])
    t = truth["rtp"]
    assert t["dropped"] > 0 and truth["protocol"] == "udp"
    assert rx["loss_pct"] == pytest.approx(t["loss_pct"], abs=0.5), (rx, t)
    # mean and median: the median is robust to a few packets held up by a busy CPU
    assert rx["latency_ms_median"] == pytest.approx(
        t["delay_ms_median"] + base_med, abs=2.0), (rx, t, base)
    assert rx["latency_ms"] == pytest.approx(t["delay_ms_mean"] + base_mean, abs=2.0)
    assert abs(rx["jitter_ms"] - t["jitter_rfc3550_ms"]) <= 1.5 + base["jitter_ms"], (rx, t)
    assert rx["reordered"] == t["reordered"]
    assert truth["back_packets"] >= 2  # telemetry went back to the sender's namespace
    assert sf.info(tmp_path / "lossy.wav").duration == pytest.approx(3.0, abs=0.2)
    # the stream's bitrate on the wire (RTP; the capacity probes and RTCP come on top)
    assert 8 * truth["rtp"]["bytes_in"] / 3.0 / 1000 == pytest.approx(64, rel=0.10)
    assert 8 * truth["bytes_in"] / 3.0 / 1000 == pytest.approx(64, rel=0.25)


def test_cli_tcp_stream_across_namespaces(netns, shared_data, tmp_path):
    x, sr = sf.read(shared_data / SPEECH, dtype="float32")
    wav = tmp_path / "in.wav"
    sf.write(wav, x[: 2 * sr], sr)
    rx, truth = _run_once(netns, tmp_path, wav, "tcp", ["--delay", "30ms", "--jitter", "5ms"],
                          proto="tcp")
    assert truth["protocol"] == "tcp" and truth["dropped_loss"] == 0
    assert rx["lost"] == 0 and rx["received"] == 100 and rx["connections"] == 1
    # TCP has no kernel arrival stamps here: a busy CPU adds its scheduling delay on top
    assert truth["delay_ms_median"] - 1 <= rx["latency_ms_median"] <= truth["delay_ms_median"] + 15
    assert sf.info(tmp_path / "tcp.wav").duration == pytest.approx(2.0, abs=0.2)
