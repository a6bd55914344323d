"""SDP: what `send --sdp` writes reads back the same; SDPs written by other tools (ffmpeg,
a SIP phone's offer, RFC 4568 SDES) are understood; what hushlink cannot use is a clear error;
`send --sdp` then `receive --sdp` carries a 48 kHz stereo stream end to end."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from edge.cli import cli
from edge.transport.sdp import SdpError, StreamDescription, parse_sdp, write_sdp


def test_round_trip_of_every_field():
    d = StreamDescription(address="10.0.0.2", port=5004, pt=96, rate=48_000, channels=2,
                          fec=False, protocol="tcp", srtp=True, ssrc=0xDEADBEEF,
                          cname="hushlink-1@dev", origin="10.0.0.1")
    text = write_sdp(d)
    assert "m=audio 5004 TCP/RTP/SAVP 96\r\n" in text
    assert "a=rtpmap:96 opus/48000/2\r\n" in text  # RFC 7587: always /48000/2
    assert "inline:" not in text  # the SRTP key never goes into the file
    assert parse_sdp(text) == d


def test_defaults_are_16k_mono_udp_with_rtcp_mux():
    text = write_sdp(StreamDescription(address="127.0.0.1", port=7000))
    d = parse_sdp(text)
    assert (d.rate, d.channels, d.pt, d.protocol, d.srtp, d.rtcp_mux) == \
        (16_000, 1, 111, "udp", False, True)
    assert "sprop-maxcapturerate=16000" in text and "stereo" not in text


def test_foreign_sdp_with_sdes_key_and_a_video_section():
    key = bytes(range(30))
    text = "\n".join([
        "v=0", "o=- 42 42 IN IP4 192.0.2.1", "s=Phone call", "c=IN IP4 192.0.2.7",
        "t=0 0",
        "m=video 6000 RTP/AVP 97", "a=rtpmap:97 H264/90000",
        "m=audio 6002 RTP/SAVP 0 109", "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:109 OPUS/48000/2", "a=fmtp:109 sprop-stereo=1; maxplaybackrate=24000",
        "a=rtcp:6003",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"
        + base64.b64encode(key).decode() + "|2^20|1:32",
    ])
    d = parse_sdp(text)
    assert (d.address, d.port, d.pt, d.channels, d.rate) == ("192.0.2.7", 6002, 109, 2, 24_000)
    assert d.srtp and d.srtp_key == key and not d.rtcp_mux and d.rtcp_port == 6003


@pytest.mark.parametrize("text, why", [
    ("v=0\nc=IN IP4 1.2.3.4\n", "no audio stream"),
    ("v=0\nm=audio 5000 RTP/AVP 111\na=rtpmap:111 opus/48000/2\n", "no connection address"),
    ("v=0\nc=IN IP4 1.2.3.4\nm=audio 5000 RTP/AVP 0\na=rtpmap:0 PCMU/8000\n",
     "no Opus payload type"),
    ("v=0\nc=IN IP4 1.2.3.4\nm=audio 5000 RTP/AVP 111\na=rtpmap:111 opus/16000/1\n",
     "48000 Hz RTP clock"),
    ("v=0\nc=IN IP4 1.2.3.4\nm=audio 99999 RTP/AVP 111\na=rtpmap:111 opus/48000/2\n",
     "out of range"),
    ("v=0\nc=IN IP4 1.2.3.4\nm=audio 5000 udp 111\n", "is not RTP"),
    ("this is not sdp", "not an SDP line"),
    ("v=0\nc=IN IP4 1.2.3.4\nm=audio 5000 RTP/SAVP 111\na=rtpmap:111 opus/48000/2\n"
     "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=\n", "30"),
])
def test_unusable_sdp_names_the_problem(text, why):
    with pytest.raises(SdpError, match=why):
        parse_sdp(text)


def test_receive_with_a_bad_sdp_is_an_error_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.sdp"
    bad.write_text("v=0\nc=IN IP4 127.0.0.1\nm=audio 5000 RTP/SAVP 111\n"
                   "a=rtpmap:111 opus/48000/2\n")
    r = CliRunner().invoke(cli, ["receive", "--sdp", str(bad), "--duration", "1"])
    assert r.exit_code == 1 and "Error:" in r.output and "--srtp-key" in r.output
    r = CliRunner().invoke(cli, ["receive", "--sdp", str(tmp_path / "none.sdp")])
    assert r.exit_code == 1 and "cannot read the SDP" in r.output
    r = CliRunner().invoke(cli, ["receive", "--duration", "1"])
    assert r.exit_code == 2 and "--sdp" in r.output


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_send_sdp_then_receive_sdp_48k_stereo(tmp_path):
    """The SDP alone tells `receive` the port, rate and channels: left 440 Hz, right 660 Hz
    arrive on their own channels at 48 kHz."""
    rate = 48_000
    t = np.arange(int(2.0 * rate)) / rate
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)], 1)
    wav, sdp, out = tmp_path / "in.wav", tmp_path / "s.sdp", tmp_path / "out.wav"
    sf.write(wav, stereo, rate)
    port = _free_port()
    r = CliRunner().invoke(cli, ["send", str(wav), "--to", f"udp://127.0.0.1:{port}",
                                 "--rate", "48000", "--channels", "2", "--sdp", str(sdp),
                                 "--json"])
    assert r.exit_code == 0, r.output  # nobody listens yet: only the SDP matters here
    d = parse_sdp(sdp.read_text())
    assert (d.port, d.rate, d.channels) == (port, 48_000, 2)

    proc = subprocess.Popen([sys.executable, "-m", "edge", "receive", "--sdp", str(sdp),
                             "--record", str(out), "--duration", "20", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert f"listening on udp://127.0.0.1:{port}" in proc.stderr.readline()
        r = CliRunner().invoke(cli, ["send", str(wav), "--to", f"udp://127.0.0.1:{port}",
                                     "--rate", "48000", "--channels", "2", "--json"])
        assert r.exit_code == 0, r.output
        summary = json.loads(proc.communicate(timeout=15)[0].strip().splitlines()[-1])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert summary["bye"] == 1 and summary["lost"] == 0  # ended by the sender's BYE
    y, sr = sf.read(out)
    assert sr == 48_000 and y.shape[1] == 2 and len(y) > 1.5 * rate
    mid = y[len(y) // 4: 3 * len(y) // 4]
    freqs = [np.argmax(np.abs(np.fft.rfft(mid[:, c]))) * sr / len(mid) for c in (0, 1)]
    assert abs(freqs[0] - 440) < 5 and abs(freqs[1] - 660) < 5
