"""The serial control link's wire format: COBS framing, CRC32, sequence numbers, CBOR bodies.

Pure encode/decode, no I/O. One frame on the wire::

    0x00 | COBS( version:u8 | kind:u8 | seq:u32be | body | crc32:u32be ) | 0x00

The CRC32 (zlib polynomial) covers version, kind, seq and body. A leading 0x00 flushes any
partial frame the peer holds (a host that vanished mid-frame, line noise), so every frame is
self-synchronising. ``body`` is CBOR (RFC 8949): see docs/protocol.md for why and for every
message. ``FrameDecoder`` turns an arbitrary byte stream (garbage, partial frames, dropped or
inserted bytes) into only those frames whose CRC is right, counting the rest.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum

import cbor2
from cobs import cobs

from edge.errors import HushlinkError

FRAME_VERSION = 1  # wire layout above; changes only if the header or the CRC changes
PROTOCOL_VERSION = 1  # message set and semantics; negotiated by ``hello``
MAX_BODY = 8192  # bytes of CBOR per frame; a put_chunk carries up to CHUNK_SIZE of data
CHUNK_SIZE = 4096  # default file-transfer chunk (bytes of file data per put_chunk)
_HEADER = struct.Struct(">BBI")  # version, kind, seq
_CRC = struct.Struct(">I")
MAX_RAW = _HEADER.size + MAX_BODY + _CRC.size
MAX_ENCODED = MAX_RAW + MAX_RAW // 254 + 2  # COBS worst case
DELIM = b"\x00"


class Kind(IntEnum):
    REQUEST = 1  # host -> device: {"m": method, "a": args}
    RESPONSE = 2  # device -> host, same seq: {"ok": true, "r": result} or an error
    ACK = 3  # device -> host, same seq, empty body: "heard it, working on it" (slow handlers)
    NAK = 4  # device -> host, seq 0, empty body: "a damaged frame arrived"; host resends now
    EVENT = 5  # device -> host, unsolicited: {"ev": name, "d": data}
    FRAG = 6  # either way, same seq: one erasure-coded piece of a message (edge/fragments.py)
    NEED = 7  # either way, same seq: "I hold h of the k pieces of your message; send more"


class ProtocolError(HushlinkError):
    """A frame or message that cannot be encoded or decoded."""


class DamagedFrame(ProtocolError):
    """A packet shaped like a hushlink frame (COBS, version and kind right) whose CRC fails:
    our own traffic hit by line noise, not a stranger's bytes."""


_KINDS = frozenset(int(k) for k in Kind)


@dataclass(frozen=True)
class Frame:
    kind: Kind
    seq: int  # 0..2**32-1; a retry reuses the seq so the device can answer from its cache
    body: bytes = b""

    def message(self) -> dict:
        """The CBOR body decoded; a ProtocolError if it is not a CBOR map."""
        return decode_body(self.body)


def encode_body(msg: dict) -> bytes:
    body = cbor2.dumps(msg)
    if len(body) > MAX_BODY:
        raise ProtocolError(f"message of {len(body)} bytes exceeds the {MAX_BODY}-byte frame "
                            "limit; send it in chunks")
    return body


def decode_body(body: bytes) -> dict:
    try:
        msg = cbor2.loads(body)
    except Exception as e:  # cbor2 raises several types on malformed input
        raise ProtocolError(f"malformed CBOR body ({e})") from None
    if not isinstance(msg, dict):
        raise ProtocolError("message body is not a CBOR map")
    return msg


def encode_frame(kind: Kind, seq: int, body: bytes = b"") -> bytes:
    """Bytes to write for one frame, delimiters included."""
    if len(body) > MAX_BODY:
        raise ProtocolError(f"frame body of {len(body)} bytes exceeds {MAX_BODY}")
    raw = _HEADER.pack(FRAME_VERSION, int(kind), seq & 0xFFFFFFFF) + body
    raw += _CRC.pack(zlib.crc32(raw))
    return DELIM + cobs.encode(raw) + DELIM


def request(seq: int, method: str, args: dict | None = None) -> bytes:
    return encode_frame(Kind.REQUEST, seq, encode_body({"m": method, "a": args or {}}))


def response_ok(seq: int, result) -> bytes:
    return encode_frame(Kind.RESPONSE, seq, encode_body({"ok": True, "r": result}))


def response_error(seq: int, code: str, message: str) -> bytes:
    return encode_frame(Kind.RESPONSE, seq,
                        encode_body({"ok": False, "e": code, "msg": message[:1000]}))


def decode_raw(packet: bytes) -> Frame:
    """One COBS packet (between delimiters, without them) -> Frame, or ProtocolError."""
    if len(packet) > MAX_ENCODED:
        raise ProtocolError("oversize frame")
    try:
        raw = cobs.decode(packet)
    except cobs.DecodeError as e:
        raise ProtocolError(f"bad COBS ({e})") from None
    if len(raw) < _HEADER.size + _CRC.size:
        raise ProtocolError("short frame")
    (crc,) = _CRC.unpack_from(raw, len(raw) - _CRC.size)
    version, kind, seq = _HEADER.unpack_from(raw)
    if zlib.crc32(raw[:-_CRC.size]) != crc:
        if version == FRAME_VERSION and kind in _KINDS:
            raise DamagedFrame("CRC mismatch")
        raise ProtocolError("CRC mismatch")
    if version != FRAME_VERSION:
        raise ProtocolError(f"frame version {version}, expected {FRAME_VERSION}")
    try:
        k = Kind(kind)
    except ValueError:
        raise ProtocolError(f"unknown frame kind {kind}") from None
    return Frame(k, seq, bytes(raw[_HEADER.size:-_CRC.size]))


@dataclass
class DecoderStats:
    frames: int = 0  # good frames
    bad: int = 0  # damaged packets dropped (COBS, CRC, short, version, kind)
    oversize: int = 0  # packets longer than MAX_ENCODED dropped without decoding
    garbage_bytes: int = 0  # bytes thrown away in bad or oversize packets
    damaged: int = 0  # of ``bad``: hushlink frames hit by noise (DamagedFrame)
    last_error: str = ""
    # byte error rate estimate, decayed (recent ~100 KB): errors over bytes tried, where a
    # damaged packet counts one error after half its bytes (the first error's expected place)
    err_events: float = 0.01  # prior: 1e-5 with little weight, so a noisy line shows fast
    err_bytes: float = 1000.0

    def note(self, nbytes: int, errors: int) -> None:
        self.err_bytes += nbytes / 2 if errors else nbytes
        self.err_events += errors
        if self.err_bytes > 100_000:
            self.err_bytes /= 2
            self.err_events /= 2

    @property
    def byte_error_rate(self) -> float:
        """Estimated probability that a byte arrives damaged (one error per bad packet)."""
        return self.err_events / self.err_bytes


@dataclass
class FrameDecoder:
    """Stream decoder: ``feed(bytes)`` yields every good frame; everything else is counted.

    Memory is bounded: a packet that grows past MAX_ENCODED without a delimiter is discarded
    up to the next 0x00.
    """

    stats: DecoderStats = field(default_factory=DecoderStats)
    _buf: bytearray = field(default_factory=bytearray)
    _discarding: bool = False

    def feed(self, data: bytes) -> list[Frame]:
        """The good frames completed by ``data``, in order. Damaged packets are skipped and
        counted in ``stats.bad`` (the agent answers them with a NAK)."""
        return list(self._feed(data))

    def _feed(self, data: bytes) -> Iterator[Frame]:
        start = 0
        while True:
            end = data.find(DELIM, start)
            if end < 0:
                self._append(data[start:])
                return
            self._append(data[start:end])
            packet, discarding = bytes(self._buf), self._discarding
            self._buf.clear()
            self._discarding = False
            start = end + 1
            if discarding:
                self.stats.oversize += 1
                self.stats.note(MAX_ENCODED, True)
                continue
            if not packet:
                continue  # two delimiters in a row: an empty separator, not an error
            try:
                frame = decode_raw(packet)
            except ProtocolError as e:
                self.stats.bad += 1
                self.stats.damaged += isinstance(e, DamagedFrame)
                self.stats.garbage_bytes += len(packet)
                self.stats.last_error = str(e)
                self.stats.note(len(packet) + 1, True)
                continue
            self.stats.frames += 1
            self.stats.note(len(packet) + 1, False)
            yield frame

    def _append(self, chunk: bytes) -> None:
        if self._discarding:
            self.stats.garbage_bytes += len(chunk)
            return
        self._buf += chunk
        if len(self._buf) > MAX_ENCODED:
            self.stats.garbage_bytes += len(self._buf)
            self._buf.clear()
            self._discarding = True

    @property
    def pending(self) -> int:
        """Bytes of an unfinished packet held (for diagnostics)."""
        return len(self._buf)


def describe_noise(sample: bytes, stats: DecoderStats, received: int) -> str:
    """Why the bytes that arrived were not frames, for a user's error message.

    ``sample``: the first bytes received (raw). "wrong baud rate" only when they look like
    it: a UART at the wrong rate reads framing errors (0x00 on Linux) for a large share of
    bytes (measured 34-100 % across 9600..3M baud pairs, tests/test_link_util.uart_resample);
    random noise has 0.4 %, our own frames at most 2 delimiters per frame. Damaged hushlink
    frames (right COBS, version and kind, wrong CRC) mean a noisy line instead.
    """
    n = received
    if stats.frames or (stats.damaged and stats.damaged * 20 >= stats.bad):
        return (f"{stats.damaged} damaged hushlink frames arrived ({n} bytes): a noisy or "
                "unreliable line (cable, ground, connector)")
    if len(sample) >= 32 and sample.count(0) >= 0.2 * len(sample):
        return f"received {n} bytes that were not hushlink frames: wrong baud rate?"
    text = sum(32 <= b < 127 or b in (9, 10, 13) for b in sample)
    if len(sample) >= 16 and text >= 0.9 * len(sample):
        return (f"received {n} bytes of text, not hushlink frames: a console or another "
                "program on this port?")
    return f"received {n} bytes that were not hushlink frames (line noise or another protocol)"
