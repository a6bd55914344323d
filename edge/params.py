"""Transport parameters and link telemetry (SPEC §6): the vocabulary shared by the sender,
the receiver, the serial agent and the host's calibration.

Pure data: no sockets, clocks or files here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from edge.errors import HushlinkError

BITRATE_KBPS = (50, 200)
BUFFER_MS = (100, 500)
PROTOCOLS = ("udp", "tcp")


class ParamsError(HushlinkError):
    """A transport parameter outside its allowed range; nothing is applied."""


@dataclass(frozen=True)
class TransportParams:
    """What the host tunes. Defaults are the untuned starting point."""

    bitrate_kbps: int = 64
    protocol: str = "udp"  # udp = RTP over UDP, tcp = RTP over TCP with RFC 4571 framing
    buffer_ms: int = 200  # receiver jitter-buffer target (upper bound of the adaptive delay)
    share: float = 1.0  # share of the link capacity allocated to this stream, (0, 1]
    fec: bool = True  # Opus in-band FEC
    loss_hint_pct: int = 5  # Opus expected packet loss, 0..100

    def __post_init__(self) -> None:
        lo, hi = BITRATE_KBPS
        if not lo <= self.bitrate_kbps <= hi:
            raise ParamsError(f"bitrate_kbps={self.bitrate_kbps} is out of range {lo}..{hi}")
        if self.protocol not in PROTOCOLS:
            raise ParamsError(f"protocol={self.protocol!r} must be one of {', '.join(PROTOCOLS)}")
        lo, hi = BUFFER_MS
        if not lo <= self.buffer_ms <= hi:
            raise ParamsError(f"buffer_ms={self.buffer_ms} is out of range {lo}..{hi}")
        if not 0.0 < self.share <= 1.0:
            raise ParamsError(f"share={self.share} must be in (0, 1]")
        if not 0 <= self.loss_hint_pct <= 100:
            raise ParamsError(f"loss_hint_pct={self.loss_hint_pct} must be in 0..100")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TransportParams:
        """Validate a (possibly partial) mapping; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ParamsError(f"unknown parameter(s) {', '.join(unknown)}; "
                              f"allowed: {', '.join(sorted(names))}")
        try:
            return cls(**d)
        except TypeError as e:
            raise ParamsError(str(e)) from None

    def replace(self, **changes) -> TransportParams:
        return self.from_dict({**self.to_dict(), **changes})


@dataclass(frozen=True)
class Telemetry:
    """One second of link measurements, as the receiver reports them."""

    t: float  # PTP (or system) time at the end of the interval, seconds since the epoch
    latency_ms: float  # one-way, sender PTP timestamp vs receiver PTP time
    loss_pct: float  # from RTP sequence numbers, before FEC/PLC
    jitter_ms: float  # RFC 3550 interarrival jitter
    bandwidth_util: float  # bytes on the wire / bytes allocated (bitrate share of capacity)
    snr_db: float  # estimate of the received audio's SNR
    late: int = 0  # packets that arrived after their playout time
    concealed: int = 0  # packets replaced by FEC or PLC
    bitrate_kbps: float = 0.0  # measured on the wire
    buffer_ms: float = 0.0  # the receiver's jitter-buffer bound in effect (0: not reported)
    delay_ms: float = 0.0  # the receiver's playout delay at the end of the interval (0: n/a)

    MONITORED = ("latency_ms", "loss_pct", "jitter_ms", "bandwidth_util", "snr_db")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Telemetry:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def vector(self) -> list[float]:
        """The monitoring parameters of SPEC §6 in a fixed order (for clustering)."""
        return [float(getattr(self, k)) for k in self.MONITORED]
