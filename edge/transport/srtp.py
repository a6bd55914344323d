"""SRTP/SRTCP (RFC 3711, AES_CM_128_HMAC_SHA1_80) through pylibsrtp, the maintained binding of
Cisco's libsrtp (the library GStreamer, Chrome and Asterisk use): hand-rolled crypto would be
the one part of the transport nobody could review.

One master key (30 bytes: 16 of key, 14 of salt) protects both directions: the media and the
sender's reports one way, the receiver's reports back. RFC 3711 allows one master key for the
several SSRCs of a session (the keystream depends on the SSRC, so the two directions never
reuse it). The key comes from a file, never from the SDP hushlink writes.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from edge.errors import HushlinkError

KEY_BYTES = 30  # AES-128 master key + 112-bit master salt
TAG_BYTES = 10  # HMAC-SHA1-80 authentication tag on every SRTP packet
SRTCP_TRAILER = 4 + TAG_BYTES  # E flag + SRTCP index, then the tag


class SrtpError(HushlinkError):
    """A packet that does not authenticate (wrong key, tampered, replayed), or a bad key."""


def parse_key(data: bytes, what: str = "SRTP key") -> bytes:
    """30 raw bytes, or the same as base64 (40 characters, RFC 4568 inline form) or hex (60)."""
    if len(data) == KEY_BYTES:
        return bytes(data)
    text = data.strip()
    for decode in (lambda t: base64.b64decode(t, validate=True), binascii.unhexlify):
        try:
            key = decode(text)
        except (ValueError, binascii.Error):
            continue
        if len(key) == KEY_BYTES:
            return key
    raise SrtpError(f"{what}: expected {KEY_BYTES} bytes of key and salt (raw, base64 or hex), "
                    f"got {len(data)} bytes; make one with: "
                    f"head -c {KEY_BYTES} /dev/urandom > FILE")


def load_key(path: str | os.PathLike) -> bytes:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise SrtpError(f"{p}: cannot read the SRTP key ({e.strerror or e})") from None
    return parse_key(data, str(p))


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def _lib():
    try:
        import pylibsrtp
    except ImportError as e:
        raise SrtpError(f"SRTP is unavailable ({e}); pip install pylibsrtp") from None
    return pylibsrtp


class SrtpSession:
    """Protects what this end sends and checks what it receives, with one master key."""

    def __init__(self, key: bytes) -> None:
        lib = _lib()
        if len(key) != KEY_BYTES:
            raise SrtpError(f"SRTP key must be {KEY_BYTES} bytes, got {len(key)}")
        self._Error = lib.Error
        tx = lib.Policy(key=bytes(key), ssrc_type=lib.Policy.SSRC_ANY_OUTBOUND)
        rx = lib.Policy(key=bytes(key), ssrc_type=lib.Policy.SSRC_ANY_INBOUND)
        rx.window_size = 1024  # replay window: reordering of up to ~20 s of 20 ms packets
        tx.allow_repeat_tx = True  # the BYE goes out several times with the same index
        self._tx, self._rx = lib.Session(tx), lib.Session(rx)

    def protect(self, rtp_packet: bytes) -> bytes:
        return self._run(self._tx.protect, rtp_packet)

    def protect_rtcp(self, rtcp_packet: bytes) -> bytes:
        return self._run(self._tx.protect_rtcp, rtcp_packet)

    def unprotect(self, srtp_packet: bytes) -> bytes:
        return self._run(self._rx.unprotect, srtp_packet)

    def unprotect_rtcp(self, srtcp_packet: bytes) -> bytes:
        return self._run(self._rx.unprotect_rtcp, srtcp_packet)

    def _run(self, fn, data: bytes) -> bytes:
        try:
            return fn(bytes(data))
        except (self._Error, ValueError) as e:
            raise SrtpError(str(e)) from None
