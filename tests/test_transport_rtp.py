"""RTP/RTCP packet format and RFC 4571 framing (pure)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.transport import rtp


@given(seq=st.integers(0, 0xFFFF), ts=st.integers(0, 0xFFFFFFFF),
       ssrc=st.integers(0, 0xFFFFFFFF), payload=st.binary(min_size=1, max_size=1275),
       send_ns=st.integers(0, 2**64 - 1), br=st.integers(0, 0xFFFF), marker=st.booleans())
def test_pack_parse_roundtrip(seq, ts, ssrc, payload, send_ns, br, marker):
    p = rtp.RtpPacket(seq=seq, timestamp=ts, ssrc=ssrc, payload=payload, send_ns=send_ns,
                      bitrate_kbps=br, allocated_kbps=br // 2, marker=marker)
    data = p.pack()
    assert len(data) == rtp.HEADER_BYTES + len(payload)
    assert rtp.parse_rtp(data) == p
    assert not rtp.is_rtcp(data)


def _plain(seq=7, pt=rtp.OPUS_PT, payload=b"\x01\x02\x03", csrc=0, pad=0):
    """A packet from another RTP stack: CSRCs, no extension, optional padding."""
    b0 = 0x80 | csrc | (0x20 if pad else 0)
    head = struct.pack("!BBHII", b0, pt, seq, 1234, 99) + b"\0\0\0\1" * csrc
    tail = (b"\0" * (pad - 1) + bytes([pad])) if pad else b""
    return head + payload + tail


def test_parse_foreign_layouts():
    p = rtp.parse_rtp(_plain(csrc=2, pad=4))
    assert (p.seq, p.payload, p.send_ns) == (7, b"\x01\x02\x03", 0)


@pytest.mark.parametrize("data,msg", [
    (b"", "shorter"),
    (b"\x80\x6f\x00", "shorter"),
    (b"\x40" + bytes(11) + b"x", "version"),
    (_plain(pt=0), "payload type"),
    (b"\x80\xc8" + bytes(30), "RTCP"),
    (_plain(payload=b""), "empty payload"),
    (bytes([0x90, 111]) + bytes(10) + b"\xbe\xde\x00\x09", "extension"),
    (bytes([0xA0, 111]) + bytes(10) + b"\x01\x09", "padding"),
    (b"\x80\x6f" + bytes(2000), "larger"),
])
def test_parse_rejects_with_a_reason(data, msg):
    with pytest.raises(rtp.RtpError, match=msg):
        rtp.parse_rtp(data)


def test_app_roundtrip_and_errors():
    data = rtp.pack_app(rtp.APP_TELEMETRY, 5, {"loss_pct": 1.5, "late": 2})
    assert len(data) % 4 == 0 and rtp.is_rtcp(data)
    assert rtp.parse_app(data) == (rtp.RTCP_APP, rtp.APP_TELEMETRY, 5,
                                   {"loss_pct": 1.5, "late": 2})
    with pytest.raises(rtp.RtpError, match="length"):
        rtp.parse_app(data + b"    ")
    with pytest.raises(rtp.RtpError, match="JSON"):
        rtp.parse_app(data[:12] + b"\xff" * (len(data) - 12))
    with pytest.raises(rtp.RtpError):
        rtp.parse_app(b"\x80\x6f" + bytes(20))


@given(sizes=st.lists(st.integers(1, 300), min_size=1, max_size=20),
       cut=st.integers(1, 50))
def test_rfc4571_deframer_any_chunking(sizes, cut):
    packets = [bytes([i % 256]) * n for i, n in enumerate(sizes)]
    stream = b"".join(rtp.frame_4571(p) for p in packets)
    d = rtp.Deframer()
    out = []
    for i in range(0, len(stream), cut):
        out += d.feed(stream[i:i + cut])
    assert out == packets


def test_deframer_skips_oversized_frames():
    d = rtp.Deframer(max_packet=100)
    out = d.feed(rtp.frame_4571(b"a" * 101) + rtp.frame_4571(b"ok"))
    assert out == [b"ok"] and d.oversized == 1
