"""Transport parameters and link telemetry (SPEC §6): the vocabulary shared by the sender,
the receiver, the serial agent and the host's calibration.

Pure data: no sockets, clocks or files here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from edge import validate
from edge.errors import HushlinkError

# The one home of the transport parameters' ranges: the agent reports them (get_params),
# the CLIs check their options against them, the host's calibration searches within them.
BITRATE_KBPS = (50, 200)
BUFFER_MS = (100, 500)
SHARE = (0.0, 1.0)  # (lo, hi]: a zero share is no stream at all
LOSS_HINT_PCT = (0, 100)
PROTOCOLS = ("udp", "tcp")
SHARE_SEARCH_MIN = 0.1  # calibration proposes no less: below 10 % the stream cannot recover
RANGES = {  # numeric fields: (type, lo, hi, lo excluded)
    "bitrate_kbps": (int, *BITRATE_KBPS, False),
    "buffer_ms": (int, *BUFFER_MS, False),
    "share": (float, *SHARE, True),
    "loss_hint_pct": (int, *LOSS_HINT_PCT, False),
}


class ParamsError(HushlinkError):
    """A transport parameter of the wrong type or outside its allowed range; nothing is
    applied."""


def check_param(name: str, value: object) -> object:
    """One transport parameter checked (type, finiteness, range); returns it normalised
    (a share given as ``1`` becomes ``1.0``). Raises ParamsError."""
    if name in RANGES:
        kind, lo, hi, lo_open = RANGES[name]
        return validate.number(name, value, kind=kind, lo=lo, hi=hi, lo_open=lo_open,
                               error=ParamsError)
    if name == "protocol":
        return validate.choice(name, value, PROTOCOLS, error=ParamsError)
    if name == "fec":
        return validate.boolean(name, value, error=ParamsError)
    raise ParamsError(f"unknown parameter {name!r}")


def ranges() -> dict:
    """The allowed values as plain data (the agent's ``get_params`` answer)."""
    out: dict = {name: [lo, hi] for name, (_, lo, hi, _open) in RANGES.items()}
    out["protocol"] = list(PROTOCOLS)
    out["fec"] = [False, True]
    return out


@dataclass(frozen=True)
class TransportParams:
    """What the host tunes. Defaults are the untuned starting point. Every field is checked
    on construction (type and range), so an instance is always valid."""

    bitrate_kbps: int = 64
    protocol: str = "udp"  # udp = RTP over UDP, tcp = RTP over TCP with RFC 4571 framing
    buffer_ms: int = 200  # receiver jitter-buffer target (upper bound of the adaptive delay)
    share: float = 1.0  # share of the link capacity allocated to this stream, (0, 1]
    fec: bool = True  # Opus in-band FEC
    loss_hint_pct: int = 5  # Opus expected packet loss, 0..100

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, check_param(f.name, getattr(self, f.name)))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TransportParams:
        """Validate a (possibly partial) mapping; unknown keys are an error."""
        if not isinstance(d, dict):
            raise ParamsError(f"parameters must be a map, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(repr(k)[:40] for k in d if k not in names)
        if unknown:
            raise ParamsError(f"unknown parameter(s) {', '.join(unknown)}; "
                              f"allowed: {', '.join(sorted(names))}")
        return cls(**d)

    def replace(self, **changes) -> TransportParams:
        return self.from_dict({**self.to_dict(), **changes})


@dataclass(frozen=True)
class Telemetry:
    """One second of link measurements, as the receiver reports them."""

    t: float  # PTP (or system) time at the end of the interval, seconds since the epoch
    latency_ms: float  # one-way, sender PTP timestamp vs receiver PTP time
    loss_pct: float  # from RTP sequence numbers, before FEC/PLC
    jitter_ms: float  # RFC 3550 interarrival jitter
    bandwidth_util: float  # bits on the wire / link capacity (else / bits allocated)
    snr_db: float  # estimate of the received audio's SNR
    late: int = 0  # packets that arrived after their playout time
    concealed: int = 0  # packets replaced by FEC or PLC
    bitrate_kbps: float = 0.0  # measured on the wire
    buffer_ms: float = 0.0  # the receiver's jitter-buffer bound in effect (0: not reported)
    delay_ms: float = 0.0  # the receiver's playout delay at the end of the interval (0: n/a)
    capacity_kbps: float = 0.0  # link capacity from probe trains, kbit/s (0: no estimate)

    MONITORED = ("latency_ms", "loss_pct", "jitter_ms", "bandwidth_util", "snr_db")
    # What a measurement can be (type, lo, hi): a record outside is corrupt, not a bad link.
    RANGES = {"t": (float, 0.0, 1e11), "latency_ms": (float, 0.0, 3.6e6),
              "loss_pct": (float, 0.0, 100.0), "jitter_ms": (float, 0.0, 3.6e6),
              "bandwidth_util": (float, 0.0, 1e3), "snr_db": (float, -200.0, 200.0),
              "late": (int, 0, 10**6), "concealed": (int, 0, 10**6),
              "bitrate_kbps": (float, 0.0, 1e6), "buffer_ms": (float, 0.0, 3.6e6),
              "delay_ms": (float, 0.0, 3.6e6), "capacity_kbps": (float, 0.0, 1e8)}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Telemetry:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def parse(cls, d: object) -> Telemetry:
        """A record from outside (a telemetry file), checked field by field: a map with every
        required field, each a finite number within ``RANGES``. Raises ParamsError."""
        if not isinstance(d, dict):
            raise ParamsError(f"a telemetry record must be a map, got {type(d).__name__}")
        kw = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                if f.default is dataclasses.MISSING:
                    raise ParamsError(f"telemetry record lacks {f.name!r}")
                continue
            kind, lo, hi = cls.RANGES[f.name]
            kw[f.name] = validate.number(f.name, d[f.name], kind=kind, lo=lo, hi=hi,
                                         error=ParamsError)
        return cls(**kw)

    def vector(self) -> list[float]:
        """The monitoring parameters of SPEC §6 in a fixed order (for clustering)."""
        return [float(getattr(self, k)) for k in self.MONITORED]
