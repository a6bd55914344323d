"""SDP (RFC 8866) for one Opus audio stream (RFC 7587), written by `send --sdp` and read by
`receive --sdp`, GStreamer's sdpdemux, ffmpeg or VLC. Pure: text in, dataclass out.

What it says: where the stream goes (``c=`` and the ``m=`` port), the payload type, the Opus
format (``a=rtpmap:PT opus/48000/2`` always, RFC 7587; stereo and the capture rate in
``a=fmtp``), 20 ms packets, RTCP on the same port (``a=rtcp-mux``), TCP framing (RFC 4571,
``TCP/RTP/AVP``) and SRTP (``RTP/SAVP``). The SRTP key is never written into the file: an SDP
is shared, the key is not; a received SDP's RFC 4568 ``a=crypto`` inline key is read.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from edge.errors import HushlinkError
from edge.transport.codec import RATES
from edge.transport.rtp import OPUS_CLOCK, OPUS_PT

SRTP_SUITE = "AES_CM_128_HMAC_SHA1_80"


class SdpError(HushlinkError):
    """A session description hushlink cannot use, with the line that is wrong."""


@dataclass(frozen=True)
class StreamDescription:
    address: str  # where the RTP goes (the receiver's address; a multicast group)
    port: int
    pt: int = OPUS_PT
    rate: int = 16_000  # the audio's rate (maxplaybackrate / sprop-maxcapturerate)
    channels: int = 1  # sprop-stereo
    fec: bool = True  # useinbandfec
    protocol: str = "udp"  # "tcp": RFC 4571 framing, TCP/RTP/AVP
    srtp: bool = False  # RTP/SAVP
    srtp_key: bytes | None = None  # from a=crypto inline (30 bytes: key and salt)
    rtcp_mux: bool = True
    rtcp_port: int | None = None  # a=rtcp, when RTCP is not muxed
    ssrc: int | None = None
    cname: str = ""
    session: str = "hushlink"
    origin: str = "127.0.0.1"  # the sender's address, for o=

    def to_text(self) -> str:
        return write_sdp(self)


def write_sdp(d: StreamDescription, session_id: int = 0) -> str:
    """The SDP text of one stream (CRLF lines, as RFC 8866 asks)."""
    fam = "IP6" if ":" in d.address else "IP4"
    ofam = "IP6" if ":" in d.origin else "IP4"
    proto = ("TCP/" if d.protocol == "tcp" else "") + ("RTP/SAVP" if d.srtp else "RTP/AVP")
    fmtp = [f"useinbandfec={int(d.fec)}", f"maxplaybackrate={d.rate}",
            f"sprop-maxcapturerate={d.rate}"]
    if d.channels == 2:
        fmtp += ["stereo=1", "sprop-stereo=1"]
    lines = ["v=0", f"o=- {session_id} {session_id} IN {ofam} {d.origin}", f"s={d.session}",
             f"c=IN {fam} {d.address}", "t=0 0",
             f"m=audio {d.port} {proto} {d.pt}",
             f"a=rtpmap:{d.pt} opus/{OPUS_CLOCK}/2", f"a=fmtp:{d.pt} {';'.join(fmtp)}",
             "a=ptime:20", "a=sendonly"]
    if d.protocol == "tcp":
        lines += ["a=setup:active", "a=connection:new"]  # RFC 4145: the sender connects
    if d.rtcp_mux:
        lines.append("a=rtcp-mux")
    elif d.rtcp_port:
        lines.append(f"a=rtcp:{d.rtcp_port}")
    if d.ssrc is not None:
        lines.append(f"a=ssrc:{d.ssrc & 0xFFFFFFFF} cname:{d.cname or 'hushlink'}")
    return "\r\n".join(lines) + "\r\n"


def parse_sdp(text: str) -> StreamDescription:
    """The first Opus audio stream of an SDP; SdpError naming what is missing or wrong."""
    session_c = media_c = None
    m = None
    attrs: list[str] = []
    origin = "127.0.0.1"
    name = "hushlink"
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"line {n}: {line[:40]!r} is not an SDP line (x=value)")
        k, v = line[0], line[2:]
        if k == "m":
            if m is not None:  # a second media section: hushlink takes the first audio one
                if m[0] == "audio":
                    break
                attrs, media_c = [], None
            m = v.split()
        elif k == "c":
            if m is None:
                session_c = v
            else:
                media_c = v
        elif k == "a" and m is not None:
            attrs.append(v)
        elif k == "o" and len(v.split()) >= 6:
            origin = v.split()[5]
        elif k == "s":
            name = v
    if m is None or m[0] != "audio" or len(m) < 4:
        raise SdpError("no audio stream (m=audio PORT RTP/AVP PT) in the SDP")
    try:
        port = int(m[1].split("/")[0])
    except ValueError:
        raise SdpError(f"m=audio port {m[1]!r} is not a number") from None
    if not 0 < port < 65536:
        raise SdpError(f"m=audio port {port} is out of range")
    proto = m[2].upper()
    if proto not in ("RTP/AVP", "RTP/SAVP", "TCP/RTP/AVP", "TCP/RTP/SAVP", "RTP/AVPF",
                     "RTP/SAVPF"):
        raise SdpError(f"transport {m[2]!r} is not RTP (RTP/AVP, RTP/SAVP, TCP/RTP/AVP)")
    conn = media_c or session_c
    if conn is None:
        raise SdpError("no connection address (c=IN IP4 ADDRESS)")
    address = _address(conn)
    rtpmap, fmtp = _opus_maps(attrs)
    if not rtpmap:
        raise SdpError("no Opus payload type (a=rtpmap:PT opus/48000/2)")
    pt = min(rtpmap)
    if str(pt) not in m[3:]:
        raise SdpError(f"the Opus payload type {pt} is not in the m= line's formats")
    f = fmtp.get(pt, {})
    stereo = f.get("sprop-stereo", f.get("stereo", "0")) == "1"
    rate = _rate(f.get("sprop-maxcapturerate", f.get("maxplaybackrate", "48000")))
    key = None
    for a in attrs:
        if a.startswith("crypto:"):
            key = _crypto_key(a)
    rtcp_port = None
    for a in attrs:
        if a.startswith("rtcp:"):
            try:
                rtcp_port = int(a[5:].split()[0])
            except (ValueError, IndexError):
                raise SdpError(f"a={a!r}: the RTCP port is not a number") from None
    ssrc, cname = None, ""
    for a in attrs:
        if a.startswith("ssrc:"):
            parts = a[5:].split(None, 1)
            try:
                ssrc = int(parts[0])
            except ValueError:
                raise SdpError(f"a={a!r}: the SSRC is not a number") from None
            if len(parts) > 1 and parts[1].startswith("cname:"):
                cname = parts[1][6:]
            break
    return StreamDescription(
        address=address, port=port, pt=pt, rate=rate, channels=2 if stereo else 1,
        fec=f.get("useinbandfec", "1") == "1", protocol="tcp" if proto.startswith("TCP/")
        else "udp", srtp="SAVP" in proto, srtp_key=key, rtcp_mux="rtcp-mux" in attrs,
        rtcp_port=rtcp_port, ssrc=ssrc, cname=cname, session=name, origin=origin)


def _address(conn: str) -> str:
    parts = conn.split()
    if len(parts) < 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"c={conn!r} is not 'IN IP4 ADDRESS' or 'IN IP6 ADDRESS'")
    addr = parts[2].split("/")[0]  # multicast TTL / count suffixes
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        if not addr or any(c in addr for c in " /\\"):
            raise SdpError(f"c= address {addr!r} is not an address") from None
    return addr


def _opus_maps(attrs: list[str]) -> tuple[set[int], dict[int, dict[str, str]]]:
    rtpmap: set[int] = set()
    fmtp: dict[int, dict[str, str]] = {}
    for a in attrs:
        if a.startswith("rtpmap:"):
            try:
                pt_s, enc = a[7:].split(None, 1)
                pt = int(pt_s)
            except ValueError:
                raise SdpError(f"a={a!r} is not 'rtpmap:PT ENCODING/CLOCK'") from None
            parts = enc.strip().split("/")
            if parts[0].lower() == "opus":
                if len(parts) < 2 or parts[1] != str(OPUS_CLOCK):
                    raise SdpError(f"a={a!r}: Opus runs a 48000 Hz RTP clock (RFC 7587)")
                if not 0 <= pt <= 127:
                    raise SdpError(f"a={a!r}: payload type {pt} is not 0-127")
                rtpmap.add(pt)
        elif a.startswith("fmtp:"):
            try:
                pt_s, params = a[5:].split(None, 1)
                pt = int(pt_s)
            except ValueError:
                continue
            fmtp[pt] = {k.strip().lower(): v.strip() for k, _, v in
                        (p.partition("=") for p in params.split(";")) if k.strip()}
    return rtpmap, fmtp


def _rate(s: str) -> int:
    """The smallest Opus rate that holds the announced one (Opus codes 48 kHz internally)."""
    try:
        r = int(s)
    except ValueError:
        raise SdpError(f"Opus rate {s!r} is not a number") from None
    if not 8000 <= r <= 48000:
        raise SdpError(f"Opus rate {r} is outside 8000-48000 Hz")
    return next(x for x in RATES if x >= r)


def _crypto_key(a: str) -> bytes:
    """RFC 4568: ``crypto:TAG SUITE inline:BASE64(key||salt)[|lifetime|mki]``."""
    parts = a[7:].split()
    if len(parts) < 3 or not parts[2].startswith("inline:"):
        raise SdpError(f"a={a[:40]!r}... is not 'crypto:TAG SUITE inline:KEY'")
    if parts[1] != SRTP_SUITE:
        raise SdpError(f"SRTP suite {parts[1]} is not supported (only {SRTP_SUITE})")
    try:
        key = base64.b64decode(parts[2][7:].split("|")[0], validate=True)
    except ValueError:
        raise SdpError("the a=crypto inline key is not base64") from None
    if len(key) != 30:
        raise SdpError(f"the a=crypto key is {len(key)} bytes, {SRTP_SUITE} takes 30")
    return key


def save_sdp(path: str | os.PathLike, d: StreamDescription) -> Path:
    """Write atomically: a reader (GStreamer polling for the file) never sees half of it."""
    from edge.outpaths import atomic_temp

    p = Path(path)
    fd, tmp = atomic_temp(p)
    try:
        with os.fdopen(fd, "w", encoding="ascii", newline="") as fh:
            fh.write(write_sdp(d))
        os.replace(tmp, p)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise SdpError(f"{p}: cannot write the SDP ({e.strerror or e})") from None
    return p


def load_sdp(path: str | os.PathLike) -> StreamDescription:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise SdpError(f"{p}: cannot read the SDP ({e.strerror or e})") from None
    try:
        return parse_sdp(text)
    except SdpError as e:
        raise SdpError(f"{p}: {e}") from None
