"""Opus through opuslib over the system libopus: float32 20 ms frames, 16 kHz mono by default,
or any Opus rate (8/12/16/24/48 kHz) with 1 or 2 channels (RFC 7587: the RTP clock is 48 kHz
whatever the rate, and any decoder decodes any stream at the rate and channels it wants).

Bytes on the wire follow the configured bitrate: the encoder runs in constrained VBR a little
under the budget and every packet is padded (``opus_packet_pad``, which the decoder ignores) to
the constant size the budget allows. Plain CBR would do that too, but libopus's SILK mode,
which in-band FEC selects, loses quality in CBR above about 150 kbit/s (PESQ-WB 4.56 -> 3.6 at
187 kbit/s). In-band FEC and the expected-loss hint are set at runtime (opuslib's
``inband_fec`` setter is broken, so the CTL is issued directly). The decoder conceals a lost
frame from the next packet's FEC data when there is some, else with Opus PLC.
"""

from __future__ import annotations

import ctypes

import numpy as np

from edge.errors import HushlinkError

RATE = 16_000
RATES = (8_000, 12_000, 16_000, 24_000, 48_000)  # what libopus encodes and decodes
FRAME_MS = 20
FRAME = RATE * FRAME_MS // 1000  # 320 samples per packet
TS_PER_FRAME = 48_000 * FRAME_MS // 1000  # RTP timestamp increment (48 kHz clock)
MAX_OPUS_PACKET = 1275
VBR_HEADROOM = 0.95  # VBR aims a little low so the padded packets rarely overshoot


class CodecError(HushlinkError):
    """libopus is missing or refused a setting."""


def frame_samples(rate: int = RATE) -> int:
    """Samples per channel in one 20 ms frame."""
    return rate * FRAME_MS // 1000


def check_format(rate: int, channels: int) -> None:
    if rate not in RATES:
        raise CodecError(f"Opus rate {rate} Hz is not one of {', '.join(map(str, RATES))}")
    if channels not in (1, 2):
        raise CodecError(f"Opus carries 1 or 2 channels, not {channels}")


def _opuslib():
    try:
        import opuslib
        import opuslib.api.ctl
        import opuslib.api.decoder
        import opuslib.api.encoder
    except Exception as e:  # opuslib raises a bare Exception when libopus is absent
        raise CodecError(f"Opus is unavailable ({e}); install libopus0 "
                         "(apt-get install libopus0) and the opuslib package") from None
    return opuslib


_DELAY: list[int] = []


def codec_delay() -> int:
    """Samples (16 kHz) by which decoded audio trails the encoder's input: libopus's lookahead
    for this encoder configuration (104, 6.5 ms), asked once. PTP playout subtracts it so
    sample n plays at its own capture time plus the link offset."""
    if not _DELAY:
        ol = _opuslib()
        enc = ol.Encoder(RATE, 1, ol.APPLICATION_AUDIO)
        _DELAY.append(int(ol.api.encoder.encoder_ctl(enc.encoder_state,
                                                     ol.api.ctl.get_lookahead)))
    return _DELAY[0]


class OpusEncoder:
    """float32 frames, (320,) at 16 kHz mono or (rate/50, channels), -> Opus packets at
    ``bitrate_bps`` (constant size on the wire)."""

    def __init__(self, bitrate_bps: int, fec: bool = True, loss_pct: int = 5,
                 complexity: int = 9, rate: int = RATE, channels: int = 1) -> None:
        check_format(rate, channels)
        ol = _opuslib()
        self._api = ol.api
        self.rate, self.channels, self.frame = rate, channels, frame_samples(rate)
        self._enc = ol.Encoder(rate, channels, ol.APPLICATION_AUDIO)
        self._enc.vbr = 1
        self._enc.vbr_constraint = 1
        self._enc.complexity = complexity
        self._debt = 0  # bytes sent over the budget, to repay from padding
        lib = ol.api.libopus
        self._pad = lib.opus_packet_pad
        self._pad.argtypes = (ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32)
        self._pad.restype = ctypes.c_int
        self.configure(bitrate_bps, fec, loss_pct)

    def configure(self, bitrate_bps: int, fec: bool, loss_pct: int) -> None:
        """Apply new settings between two frames (no state reset, no glitch)."""
        enc, api = self._enc, self._api
        try:
            enc.bitrate = int(bitrate_bps * VBR_HEADROOM)
            api.encoder.encoder_ctl(enc.encoder_state, api.ctl.set_inband_fec, int(bool(fec)))
            enc.packet_loss_perc = int(np.clip(loss_pct, 0, 100))
        except Exception as e:
            raise CodecError(f"libopus refused bitrate={bitrate_bps} fec={fec} "
                             f"loss={loss_pct}: {e}") from None
        self.bitrate_bps, self.fec, self.loss_pct = int(bitrate_bps), bool(fec), int(loss_pct)
        self.packet_bytes = min(MAX_OPUS_PACKET, int(bitrate_bps) * FRAME_MS // 8000)

    def encode(self, frame: np.ndarray) -> bytes:
        x = np.ascontiguousarray(frame, dtype=np.float32)
        want = (self.frame,) if self.channels == 1 else (self.frame, self.channels)
        if x.shape != want:
            raise CodecError(f"Opus frame must be {want} float32, got {x.shape}")
        p = self._enc.encode_float(x.tobytes(), self.frame)
        # a packet over the budget (a VBR onset) is sent whole and repaid from the padding of
        # the next ones, so the long-run byte rate equals the budget
        size = max(len(p), self.packet_bytes - self._debt)
        self._debt += size - self.packet_bytes
        if size == len(p):
            return p
        buf = ctypes.create_string_buffer(p, size)
        if self._pad(buf, len(p), size) != 0:
            self._debt -= size - len(p)
            return p
        return buf.raw


class OpusDecoder:
    """Opus packets -> float32 frames, (320,) at 16 kHz mono or (rate/50, channels), with FEC
    recovery and PLC."""

    def __init__(self, rate: int = RATE, channels: int = 1) -> None:
        check_format(rate, channels)
        ol = _opuslib()
        self.rate, self.channels, self.frame = rate, channels, frame_samples(rate)
        self._dec = ol.Decoder(rate, channels)
        api = ol.api.decoder
        self._raw = api.libopus_decode_float
        self._err = ol.exceptions.OpusError

    def decode(self, payload: bytes) -> np.ndarray:
        return self._run(payload, fec=False)

    def decode_fec(self, next_payload: bytes) -> np.ndarray:
        """Recover the frame *before* ``next_payload`` from its in-band FEC data (falls back to
        PLC inside libopus when that packet carries none)."""
        return self._run(next_payload, fec=True)

    def conceal(self) -> np.ndarray:
        """Packet loss concealment: extrapolate one frame from the decoder state."""
        return self._run(None, fec=False)

    def _run(self, payload: bytes | None, fec: bool) -> np.ndarray:
        # room for 120 ms (the longest Opus packet) so a foreign sender's 40/60 ms packets
        # decode too; the jitter buffer schedules 20 ms slots, so only the first 20 ms play
        size, ch = 6 * self.frame, self.channels
        pcm = (ctypes.c_float * (size * ch))()
        n = self._raw(self._dec.decoder_state, payload, len(payload) if payload else 0,
                      ctypes.cast(pcm, ctypes.POINTER(ctypes.c_float)),
                      size if payload and not fec else self.frame, int(fec))
        if n < 0:
            raise self._err(n)
        n = min(n, self.frame)
        out = np.frombuffer(pcm, dtype=np.float32, count=n * ch).copy()
        if n < self.frame:  # cannot happen for 20 ms packets, but never return a short frame
            out = np.pad(out, (0, (self.frame - n) * ch))
        return out if ch == 1 else out.reshape(self.frame, ch)
