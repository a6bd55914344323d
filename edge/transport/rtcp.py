"""RFC 3550 RTCP: compound packets of SR, RR, SDES, BYE and APP, and the NTP-time arithmetic
of the round trip. Pure: bytes in, dataclasses out.

Why standard reports: any RTP peer (GStreamer's rtpbin, a SIP phone, Wireshark) reads the
loss, jitter and round trip of a hushlink stream from its SR/RR, and hushlink's sender adapts
its FEC to a foreign receiver's RR. What RFC 3550 has no field for (one-way latency, SNR,
bandwidth use, the jitter buffer, the sender's parameters, the BYE's sequence range) still
travels in APP packets (JSON bodies, ``edge.transport.rtp.APP_*`` names) inside the same
compound packet, after the report: RFC 3550 §6.1 puts a report first in every compound packet.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from edge.transport.rtp import RTP_VERSION, RtpError, is_rtcp

SR, RR, SDES, BYE, APP = 200, 201, 202, 203, 204
SDES_CNAME = 1
NTP_EPOCH_OFFSET_S = 2_208_988_800  # 1900-01-01 to 1970-01-01


class RtcpError(RtpError):
    """Bytes that are not a well-formed RTCP compound packet."""


@dataclass(frozen=True)
class ReportBlock:
    """What a receiver says about one source (RFC 3550 §6.4.1)."""

    ssrc: int  # the source reported on
    fraction_lost: int  # lost / expected since the last report, in 1/256 (0..255)
    cumulative_lost: int  # since the start, 24-bit signed (duplicates can make it negative)
    highest_seq: int  # extended highest sequence number received (cycles << 16 | seq)
    jitter: int  # interarrival jitter, RTP timestamp units (1/48000 s for Opus)
    lsr: int = 0  # middle 32 bits of the NTP time of the last SR received (0: none yet)
    dlsr: int = 0  # delay since that SR, 1/65536 s

    def pack(self) -> bytes:
        lost = max(-(1 << 23), min((1 << 23) - 1, self.cumulative_lost)) & 0xFFFFFF
        return struct.pack("!IIIIII", self.ssrc & 0xFFFFFFFF,
                           (min(255, max(0, self.fraction_lost)) << 24) | lost,
                           self.highest_seq & 0xFFFFFFFF, self.jitter & 0xFFFFFFFF,
                           self.lsr & 0xFFFFFFFF, self.dlsr & 0xFFFFFFFF)

    @classmethod
    def unpack(cls, b: bytes) -> ReportBlock:
        ssrc, fl, hi, jit, lsr, dlsr = struct.unpack("!IIIIII", b)
        lost = fl & 0xFFFFFF
        return cls(ssrc, fl >> 24, lost - (1 << 24) if lost & 0x800000 else lost, hi, jit,
                   lsr, dlsr)


@dataclass(frozen=True)
class SenderReport:
    ssrc: int
    ntp: int  # 64-bit NTP timestamp of the send time
    rtp_ts: int  # the same instant on the RTP clock
    packets: int  # RTP data packets sent since the start
    octets: int  # payload octets sent since the start
    blocks: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True)
class ReceiverReport:
    ssrc: int  # the reporter's own SSRC
    blocks: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True)
class Sdes:
    ssrc: int
    cname: str


@dataclass(frozen=True)
class Bye:
    ssrcs: tuple[int, ...]
    reason: str = ""


@dataclass(frozen=True)
class App:
    ssrc: int
    name: bytes  # 4 ASCII bytes
    data: bytes = b""
    subtype: int = 0

    def json(self) -> dict:
        """The JSON object hushlink's APP packets carry; RtcpError if it is not one."""
        try:
            obj = json.loads(self.data.decode())
        except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: "[[[[..."
            raise RtcpError("RTCP APP body is not JSON") from None
        if not isinstance(obj, dict):
            raise RtcpError("RTCP APP body is not a JSON object")
        return obj


Packet = SenderReport | ReceiverReport | Sdes | Bye | App


def app_json(name: bytes, ssrc: int, obj: dict) -> App:
    data = json.dumps(obj, separators=(",", ":")).encode()
    return App(ssrc, name, data + b" " * (-len(data) % 4))


def _header(count: int, pt: int, body: bytes) -> bytes:
    return struct.pack("!BBH", (RTP_VERSION << 6) | count, pt, len(body) // 4) + body


def _pack_one(p: Packet) -> bytes:
    if isinstance(p, SenderReport):
        body = struct.pack("!IQIII", p.ssrc & 0xFFFFFFFF, p.ntp & (2**64 - 1),
                           p.rtp_ts & 0xFFFFFFFF, p.packets & 0xFFFFFFFF,
                           p.octets & 0xFFFFFFFF)
        return _header(len(p.blocks), SR, body + b"".join(b.pack() for b in p.blocks))
    if isinstance(p, ReceiverReport):
        body = struct.pack("!I", p.ssrc & 0xFFFFFFFF)
        return _header(len(p.blocks), RR, body + b"".join(b.pack() for b in p.blocks))
    if isinstance(p, Sdes):
        name = p.cname.encode()[:255]
        item = struct.pack("!IBB", p.ssrc & 0xFFFFFFFF, SDES_CNAME, len(name)) + name
        item += b"\0" * (4 - len(item) % 4)  # end of list, then to a 32-bit boundary
        return _header(1, SDES, item)
    if isinstance(p, Bye):
        body = b"".join(struct.pack("!I", s & 0xFFFFFFFF) for s in p.ssrcs)
        if p.reason:
            r = p.reason.encode()[:255]
            body += bytes([len(r)]) + r
            body += b"\0" * (-len(body) % 4)
        return _header(len(p.ssrcs), BYE, body)
    if isinstance(p, App):
        if len(p.name) != 4 or len(p.data) % 4:
            raise RtcpError("APP name must be 4 bytes and its data a multiple of 4")
        return _header(p.subtype & 0x1F, APP, struct.pack("!I4s", p.ssrc & 0xFFFFFFFF, p.name)
                       + p.data)
    raise TypeError(f"not an RTCP packet: {p!r}")


def pack(packets: list[Packet] | tuple[Packet, ...]) -> bytes:
    """One compound packet (RFC 3550 §6.1: it should start with an SR or RR)."""
    return b"".join(_pack_one(p) for p in packets)


def parse(data: bytes) -> list[Packet]:
    """Every packet of a compound packet, in order. Packet types hushlink does not use (XR,
    feedback) are skipped; anything malformed raises RtcpError. A compound packet that does
    not start with a report (hushlink's own before 2026-12, or a lone APP) is accepted too."""
    if not is_rtcp(data) or len(data) < 4:
        raise RtcpError("not an RTCP packet")
    out: list[Packet] = []
    off = 0
    while off < len(data):
        if len(data) - off < 4:
            raise RtcpError("truncated RTCP header")
        b0, pt, words = struct.unpack_from("!BBH", data, off)
        if b0 >> 6 != RTP_VERSION:
            raise RtcpError(f"RTCP version {b0 >> 6}, expected 2")
        end = off + 4 * (words + 1)
        if end > len(data):
            raise RtcpError("RTCP length field runs past the packet")
        body, count = data[off + 4:end], b0 & 0x1F
        if b0 & 0x20:  # padding, allowed in the last packet only
            if end != len(data) or not body or body[-1] == 0 or body[-1] > len(body):
                raise RtcpError("invalid RTCP padding")
            body = body[:-body[-1]]
        out.extend(_parse_one(pt, count, body))
        off = end
    return out


def _blocks(body: bytes, count: int) -> tuple[ReportBlock, ...]:
    if len(body) < 24 * count:
        raise RtcpError("RTCP report shorter than its block count")
    return tuple(ReportBlock.unpack(body[24 * i:24 * i + 24]) for i in range(count))


def _parse_one(pt: int, count: int, body: bytes) -> list[Packet]:
    if pt == SR:
        if len(body) < 24:
            raise RtcpError("RTCP SR too short")
        ssrc, ntp, ts, pk, octets = struct.unpack_from("!IQIII", body)
        return [SenderReport(ssrc, ntp, ts, pk, octets, _blocks(body[24:], count))]
    if pt == RR:
        if len(body) < 4:
            raise RtcpError("RTCP RR too short")
        return [ReceiverReport(struct.unpack_from("!I", body)[0], _blocks(body[4:], count))]
    if pt == SDES:
        return _parse_sdes(body, count)
    if pt == BYE:
        if len(body) < 4 * count:
            raise RtcpError("RTCP BYE shorter than its source count")
        ssrcs = struct.unpack_from(f"!{count}I", body)
        rest, reason = body[4 * count:], ""
        if rest and len(rest) >= 1 + rest[0]:
            reason = rest[1:1 + rest[0]].decode(errors="replace")
        return [Bye(tuple(ssrcs), reason)]
    if pt == APP:
        if len(body) < 8:
            raise RtcpError("RTCP APP too short")
        ssrc, name = struct.unpack_from("!I4s", body)
        return [App(ssrc, name, bytes(body[8:]), count)]
    return []  # XR, RTPFB, PSFB...: not ours to read


def _parse_sdes(body: bytes, count: int) -> list[Packet]:
    out, off = [], 0
    for _ in range(count):
        if len(body) - off < 4:
            raise RtcpError("truncated RTCP SDES chunk")
        ssrc = struct.unpack_from("!I", body, off)[0]
        off += 4
        cname = None
        while off < len(body) and body[off] != 0:
            if off + 2 > len(body) or off + 2 + body[off + 1] > len(body):
                raise RtcpError("truncated RTCP SDES item")
            kind, ln = body[off], body[off + 1]
            if kind == SDES_CNAME:
                cname = body[off + 2:off + 2 + ln].decode(errors="replace")
            off += 2 + ln
        off += 4 - off % 4  # the null terminator and padding to the next chunk
        if cname is not None:
            out.append(Sdes(ssrc, cname))
    return out


# NTP time and the round trip (RFC 3550 §6.4.1) -----------------------------------------
def ntp_from_ns(t_ns: int) -> int:
    """64-bit NTP timestamp (s since 1900 << 32 | fraction) of a Unix time in ns."""
    sec, ns = divmod(int(t_ns), 1_000_000_000)
    return (((sec + NTP_EPOCH_OFFSET_S) & 0xFFFFFFFF) << 32) | (ns << 32) // 1_000_000_000


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits (16.16 fixed point seconds) that LSR and the RTT use."""
    return (ntp >> 16) & 0xFFFFFFFF


def dlsr_units(seconds: float) -> int:
    return max(0, min(0xFFFFFFFF, round(seconds * 65536)))


def rtt_s(arrival_ntp: int, block: ReportBlock) -> float | None:
    """Round trip of a report block that echoes our SR: A - LSR - DLSR; None when it echoes
    none (LSR 0) or the result is negative (clocks stepped, or a forged block)."""
    if not block.lsr:
        return None
    d = (ntp_middle(arrival_ntp) - block.lsr - block.dlsr) & 0xFFFFFFFF
    if d >= 0x80000000:
        return None
    return d / 65536.0


def fraction_lost(expected: int, received: int) -> int:
    """RFC 3550 A.3: lost / expected in the interval, in 1/256, 0 when nothing was lost."""
    lost = expected - received
    if expected <= 0 or lost <= 0:
        return 0
    return min(255, (lost << 8) // expected)
