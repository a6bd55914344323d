"""Interop with GStreamer (gst-launch-1.0, Debian's gstreamer1.0-plugins-base/-good/-bad) on
loopback, 48 kHz stereo with a different tone on each channel so a swapped or downmixed
channel shows:

* GStreamer's sdpdemux plays a hushlink stream from the SDP `send --sdp` wrote;
* hushlink's `receive --sdp` plays GStreamer's rtpbin stream (payload type 96, RTCP on the
  next port, as rtpbin sends it) and stops at rtpbin's RTCP BYE;
* GStreamer's srtpdec decrypts hushlink's SRTP with the key alone: the SRTP is RFC 3711's.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sandbox import need_tools

from edge.transport.sdp import parse_sdp

RATE = 48_000
FREQS = (440.0, 660.0)
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _gst():
    need_tools("gst-launch-1.0", hint="(scripts/bootstrap-system installs GStreamer)")


def _stereo_wav(path: Path, seconds: float) -> Path:
    t = np.arange(int(seconds * RATE)) / RATE
    sf.write(path, np.stack([0.3 * np.sin(2 * np.pi * f * t) for f in FREQS], 1), RATE)
    return path


def _tones(y: np.ndarray) -> list[float]:
    """The strongest frequency of each channel of (n, 2) samples at RATE, middle half."""
    assert y.ndim == 2 and y.shape[1] == 2, y.shape
    m = y[len(y) // 4: 3 * len(y) // 4]
    return [float(np.argmax(np.abs(np.fft.rfft(m[:, c]))) * RATE / len(m)) for c in (0, 1)]


def _free_port_pair() -> int:
    """An even port whose successor is free too (RTP, RTCP)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1] & ~1
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
                a.bind(("127.0.0.1", p))
                b.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
    raise RuntimeError("no free UDP port pair")


def _edge(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edge", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def _wait_for(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _gst_record(tmp_path: Path, source: list[str], seconds: float) -> np.ndarray:
    """Run ``source ! ... ! filesink`` for ``seconds``; the (n, 2) float32 samples it wrote
    (raw, so stopping needs no EOS: srtpdec does not pass one on)."""
    out = tmp_path / "gst.f32"
    gst = subprocess.Popen(
        ["gst-launch-1.0", *source, "!", "rtpopusdepay", "!", "opusdec", "!",
         "audioconvert", "!", "audioresample", "!",
         f"audio/x-raw,format=F32LE,rate={RATE},channels=2", "!", "filesink",
         f"location={out}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(seconds)
    log, _ = _stop(gst, signal.SIGINT)
    assert gst.returncode == 0, log
    return np.fromfile(out, "<f4").reshape(-1, 2)


def test_gstreamer_plays_a_hushlink_stream_from_its_sdp(tmp_path):
    port = _free_port_pair()
    sdp = tmp_path / "hushlink.sdp"
    tx = _edge("send", str(_stereo_wav(tmp_path / "in.wav", 2.0)), "--loop",
               "--to", f"udp://127.0.0.1:{port}", "--rate", "48000", "--channels", "2",
               "--sdp", str(sdp), "--json")
    try:
        _wait_for(sdp)
        out = _gst_record(tmp_path, ["filesrc", f"location={sdp}", "!",
                                     "sdpdemux", "latency=100"], 6.0)
    finally:
        _, err = _stop(tx)
    assert tx.returncode == 0, err
    assert len(out) > 1.5 * RATE  # of 6 s: a loaded machine starts both ends late
    assert np.allclose(_tones(out), FREQS, atol=5), _tones(out)


def test_hushlink_plays_a_gstreamer_stream_from_an_sdp(tmp_path):
    """rtpbin sends RTP to the port and RTCP to the next one; the SDP (what a GStreamer
    deployment would hand out) says PT 96, stereo; `receive` ends on rtpbin's BYE."""
    port = _free_port_pair()
    sdp = tmp_path / "gst.sdp"
    sdp.write_text("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=GStreamer\r\nc=IN IP4 127.0.0.1\r\n"
                   f"t=0 0\r\nm=audio {port} RTP/AVP 96\r\na=rtpmap:96 OPUS/48000/2\r\n"
                   "a=fmtp:96 sprop-stereo=1\r\n")
    out = tmp_path / "out.wav"
    rx = _edge("receive", "--sdp", str(sdp), "--record", str(out), "--duration", "25",
               "--json")
    try:
        assert f"listening on udp://127.0.0.1:{port}" in rx.stderr.readline()
        gst = subprocess.run(
            ["gst-launch-1.0", "rtpbin", "name=rb",
             "filesrc", f"location={_stereo_wav(tmp_path / 'in.wav', 3.0)}", "!", "wavparse",
             "!", "audioconvert", "!", "audioresample", "!", "opusenc", "!",
             "rtpopuspay", "pt=96", "!", "rb.send_rtp_sink_0",
             "rb.send_rtp_src_0", "!", "udpsink", "host=127.0.0.1", f"port={port}",
             "rb.send_rtcp_src_0", "!", "udpsink", "host=127.0.0.1", f"port={port + 1}",
             "sync=false", "async=false"],
            capture_output=True, text=True, timeout=30)
        assert gst.returncode == 0, gst.stdout + gst.stderr
        stdout, err = rx.communicate(timeout=15)  # ends on the BYE, long before --duration
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()
    assert rx.returncode == 0, err
    s = json.loads(stdout.strip().splitlines()[-1])
    assert s["bye"] == 1 and s["lost"] == 0 and s["received"] >= 140 and s["wrong_pt"] == 0
    assert s["rtcp"] >= 1  # rtpbin's SR/BYE on the RTCP port
    y, sr = sf.read(out)
    assert sr == RATE and np.allclose(_tones(y), FREQS, atol=5), _tones(y)


def test_gstreamer_srtpdec_decrypts_hushlink_srtp(tmp_path):
    port = _free_port_pair()
    key = os.urandom(30)
    (tmp_path / "key").write_bytes(key)
    sdp = tmp_path / "s.sdp"
    tx = _edge("send", str(_stereo_wav(tmp_path / "in.wav", 2.0)), "--loop",
               "--to", f"udp://127.0.0.1:{port}", "--rate", "48000", "--channels", "2",
               "--srtp-key", str(tmp_path / "key"), "--sdp", str(sdp), "--json")
    try:
        _wait_for(sdp)
        assert f"m=audio {port} RTP/SAVP 111" in sdp.read_text()
        ssrc = parse_sdp(sdp.read_text()).ssrc  # srtpdec keys streams by SSRC (a=ssrc)
        caps = ("application/x-srtp,media=audio,clock-rate=48000,encoding-name=OPUS,"
                f"payload=111,ssrc=(uint){ssrc},srtp-key=(buffer){key.hex()},"
                "srtp-cipher=aes-128-icm,"
                "srtp-auth=hmac-sha1-80,srtcp-cipher=aes-128-icm,srtcp-auth=hmac-sha1-80")
        # the SRTCP reports arrive on the same port (RFC 5761) and leave on rtcp_src
        out = _gst_record(tmp_path, ["udpsrc", f"port={port}", f"caps={caps}", "!",
                                     "srtpdec", "name=d", "d.rtcp_src", "!", "fakesink",
                                     "async=false", "d.rtp_src", "!", "rtpjitterbuffer",
                                     "latency=100"], 6.0)
    finally:
        _, err = _stop(tx)
    assert tx.returncode == 0, err
    assert len(out) > 1.5 * RATE  # of 6 s: a loaded machine starts both ends late
    assert np.allclose(_tones(out), FREQS, atol=5), _tones(out)
