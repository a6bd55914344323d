"""RTP packets for Opus (RFC 3550, RFC 7587), RTCP-style control packets and RFC 4571 framing.

Pure: bytes in, dataclasses out. Every data packet carries one header extension
(RFC 8285 one-byte form) with the sender's PTP/wall send time in ns and the bitrate it was
configured with, so the receiver can measure one-way latency and bandwidth use without a
separate sender report.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from edge.errors import HushlinkError

RTP_VERSION = 2
OPUS_PT = 111  # dynamic payload type conventionally used for Opus
OPUS_CLOCK = 48_000  # RFC 7587: the RTP clock of Opus is always 48 kHz
EXT_PROFILE = 0xBEDE  # RFC 8285 one-byte header extensions
EXT_ID = 1
EXT_LEN = 12  # u64 send time ns + u16 bitrate kbps + u16 allocated kbps
HEADER_BYTES = 12 + 4 + 16  # fixed header + extension header + padded extension body
MAX_PACKET = 1500  # anything bigger is not ours (Opus caps a 20 ms frame at 1275 bytes)
RTCP_APP = 204
RTCP_BYE = 203
APP_TELEMETRY = b"HLTM"
APP_BYE = b"HLBY"
APP_PARAMS = b"HLPR"  # the sender's parameters, for the receiver (buffer bound, FEC, protocol)
APP_PROBE = b"HLPB"  # a capacity probe, padded to its size (edge.transport.capacity)
APP_TRAIN = b"HLTR"  # receiver -> sender: one train's capacity sample, to size the next train


class RtpError(HushlinkError):
    """A datagram that is not a valid packet of this stream."""


@dataclass(frozen=True)
class RtpPacket:
    seq: int  # 16-bit sequence number
    timestamp: int  # 32-bit RTP timestamp, 48 kHz units
    ssrc: int
    payload: bytes  # one Opus packet
    send_ns: int = 0  # sender clock at send time (PTP-disciplined wall clock), ns
    bitrate_kbps: int = 0  # codec bitrate the sender was configured with
    allocated_kbps: int = 0  # bandwidth allocated to the stream (share of capacity)
    pt: int = OPUS_PT
    marker: bool = False

    def pack(self) -> bytes:
        b0 = (RTP_VERSION << 6) | 0x10  # X bit: one extension block follows
        b1 = (int(self.marker) << 7) | (self.pt & 0x7F)
        head = struct.pack("!BBHII", b0, b1, self.seq & 0xFFFF, self.timestamp & 0xFFFFFFFF,
                           self.ssrc & 0xFFFFFFFF)
        body = struct.pack("!BQHH", (EXT_ID << 4) | (EXT_LEN - 1), self.send_ns,
                           self.bitrate_kbps & 0xFFFF, self.allocated_kbps & 0xFFFF)
        body += b"\0" * (-len(body) % 4)
        ext = struct.pack("!HH", EXT_PROFILE, len(body) // 4) + body
        return head + ext + self.payload


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 demultiplexing: RTCP packet types 192..223 in the second byte."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def parse_rtp(data: bytes, expect_pt: int | None = OPUS_PT) -> RtpPacket:
    """Parse one RTP packet; raise RtpError naming what is wrong with it."""
    n = len(data)
    if n > MAX_PACKET:
        raise RtpError(f"packet of {n} bytes is larger than {MAX_PACKET}")
    if n < 12:
        raise RtpError(f"packet of {n} bytes is shorter than an RTP header")
    b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", data)
    if b0 >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {b0 >> 6}, expected 2")
    if is_rtcp(data):
        raise RtpError("RTCP packet where RTP was expected")
    pt = b1 & 0x7F
    if expect_pt is not None and pt != expect_pt:
        raise RtpError(f"payload type {pt}, expected {expect_pt} (Opus)")
    off = 12 + 4 * (b0 & 0x0F)  # CSRC list
    send_ns = bitrate = allocated = 0
    if b0 & 0x10:
        if n < off + 4:
            raise RtpError("truncated header extension")
        profile, words = struct.unpack_from("!HH", data, off)
        body = data[off + 4: off + 4 + 4 * words]
        if len(body) != 4 * words:
            raise RtpError("truncated header extension")
        off += 4 + 4 * words
        if profile == EXT_PROFILE:
            send_ns, bitrate, allocated = _read_ext(body)
    end = n
    if b0 & 0x20:  # padding: last byte says how much
        pad = data[-1]
        if pad == 0 or off + pad > n:
            raise RtpError("invalid padding")
        end -= pad
    if end <= off:
        raise RtpError("empty payload")
    return RtpPacket(seq=seq, timestamp=ts, ssrc=ssrc, payload=bytes(data[off:end]),
                     send_ns=send_ns, bitrate_kbps=bitrate, allocated_kbps=allocated, pt=pt,
                     marker=bool(b1 & 0x80))


def _read_ext(body: bytes) -> tuple[int, int, int]:
    i = 0
    while i < len(body):
        if body[i] == 0:  # padding byte
            i += 1
            continue
        eid, ln = body[i] >> 4, (body[i] & 0x0F) + 1
        if eid == 15:
            break
        if eid == EXT_ID and ln == EXT_LEN and i + 1 + ln <= len(body):
            return struct.unpack_from("!QHH", body, i + 1)
        i += 1 + ln
    return 0, 0, 0


def pack_app(name: bytes, ssrc: int, obj: dict, pt: int = RTCP_APP) -> bytes:
    """A lone RTCP APP (or BYE with our APP-like body) packet carrying a JSON object: the
    form before compound RTCP (``edge.transport.rtcp``); receivers still read a lone APP."""
    data = json.dumps(obj, separators=(",", ":")).encode()
    data += b" " * (-len(data) % 4)
    words = (8 + 4 + len(data)) // 4 - 1
    return struct.pack("!BBHI4s", 0x80, pt, words, ssrc & 0xFFFFFFFF, name) + data


def pack_probe(ssrc: int, train: int, index: int, count: int, size: int) -> bytes:
    """Probe ``index`` of ``count`` in train ``train``: an APP packet of ``size`` bytes (a
    multiple of 4, at least the JSON body), its body padded with spaces (still valid JSON)."""
    pkt = pack_app(APP_PROBE, ssrc, {"train": train, "i": index, "n": count})
    if size % 4 or size < len(pkt):
        raise ValueError(f"probe size {size}: a multiple of 4 of at least {len(pkt)} bytes")
    words = size // 4 - 1
    return pkt[:2] + struct.pack("!H", words) + pkt[4:] + b" " * (size - len(pkt))


def parse_probe(body: dict) -> tuple[int, int, int]:
    """(train, index, count) of a probe's JSON body; RtpError when they are not sane."""
    train, index, count = body.get("train"), body.get("i"), body.get("n")
    if not all(type(v) is int for v in (train, index, count)) \
            or not (0 <= index < count <= 64 and train >= 0):
        raise RtpError("probe fields are not sane integers")
    return train, index, count


def parse_app(data: bytes) -> tuple[int, bytes, int, dict]:
    """(packet type, name, ssrc, JSON body) of a packet made by :func:`pack_app`."""
    if len(data) < 12 or not is_rtcp(data) or data[0] >> 6 != RTP_VERSION:
        raise RtpError("not an RTCP packet")
    _, pt, words, ssrc, name = struct.unpack_from("!BBHI4s", data)
    if 4 * (words + 1) != len(data):
        raise RtpError("RTCP length field does not match the packet")
    try:
        obj = json.loads(data[12:].decode())
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: "[[[[..."
        raise RtpError("RTCP body is not JSON") from None
    if not isinstance(obj, dict):
        raise RtpError("RTCP body is not a JSON object")
    return pt, name, ssrc, obj


def frame_4571(packet: bytes) -> bytes:
    """RFC 4571: a 16-bit length in network order, then the packet."""
    if len(packet) > 0xFFFF:
        raise RtpError(f"packet of {len(packet)} bytes cannot be framed")
    return struct.pack("!H", len(packet)) + packet


class Deframer:
    """Incremental RFC 4571 parser for a TCP byte stream."""

    def __init__(self, max_packet: int = MAX_PACKET) -> None:
        self._buf = bytearray()
        self.max_packet = max_packet
        self.oversized = 0  # frames longer than max_packet, skipped

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out = []
        while len(self._buf) >= 2:
            ln = struct.unpack_from("!H", self._buf)[0]
            if len(self._buf) < 2 + ln:
                break
            frame = bytes(self._buf[2: 2 + ln])
            del self._buf[: 2 + ln]
            if ln > self.max_packet:
                self.oversized += 1
                continue
            out.append(frame)
        return out
