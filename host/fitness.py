"""The calibration's fitness C: a cost to minimise, trading audio quality against latency,
with the costs of the receiver buffer and of bitrate. Pure functions, no I/O.

    C = − w_q · Q + w_l · latency_ms/100 + w_b · buffer_ms/100 + w_r · bitrate_kbps/100

    Q = codec(bitrate) · (1 − impaired)² · snr_factor          (0..1, higher is better)
    codec(b) = 1 − exp(−b / 40 kbps)      (Opus speech quality saturates: 64 → 0.80, 128 → 0.96)
    impaired = fraction of 20 ms packets lost or too late for playout (after the buffer)
    snr_factor = clip(snr_db / 20 dB, 0, 1)

Lower C is better. The weights are flags of ``host-calibrate tune`` / ``apply``
(``--w-quality --w-latency --w-buffer --w-bitrate``). ``measured_cost`` computes C from live
telemetry; ``host.calibrate.LinkModel`` predicts the same quantities for candidate parameters.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from edge import validate

PACKETS_PER_S = 50.0  # 20 ms Opus frames


@dataclass(frozen=True)
class Weights:
    quality: float = 1.0
    latency: float = 0.5  # per 100 ms of one-way network latency
    buffer: float = 0.5  # per 100 ms of receiver buffer
    bitrate: float = 0.05  # per 100 kbps

    def __post_init__(self) -> None:  # a negative weight would reward what it should cost
        for f in fields(self):
            object.__setattr__(self, f.name, validate.number(f"weight {f.name}",
                                                             getattr(self, f.name),
                                                             lo=0.0, hi=1e3))

    def to_dict(self) -> dict:
        return asdict(self)


def codec_quality(bitrate_kbps: float) -> float:
    return 1.0 - math.exp(-bitrate_kbps / 40.0)


def quality(bitrate_kbps: float, impaired: float, snr_db: float = 20.0) -> float:
    """Quality score Q in [0, 1]."""
    imp = min(1.0, max(0.0, impaired))
    snr = min(1.0, max(0.0, snr_db / 20.0))
    return codec_quality(bitrate_kbps) * (1.0 - imp) ** 2 * snr


def cost(q: float, latency_ms: float, buffer_ms: float, bitrate_kbps: float,
         w: Weights = Weights()) -> float:
    """C (lower is better)."""
    return (-w.quality * q + w.latency * latency_ms / 100.0 + w.buffer * buffer_ms / 100.0
            + w.bitrate * bitrate_kbps / 100.0)


def measured_cost(records: list[dict], params: dict, w: Weights = Weights()) -> float:
    """C from live telemetry (``Telemetry.to_dict()`` records): means over the records;
    impaired = loss + late packets. Bitrate and buffer are what the receiver measured (its
    bitrate on the wire, its playout delay) when it reports them; ``params``
    (``TransportParams.to_dict()``) stand in only for records that do not, so C cannot improve
    by a parameter that never reached the receiver."""
    keys = ("latency_ms", "loss_pct", "snr_db")
    records = [r for r in records if all(r.get(k) is not None and r[k] == r[k] for k in keys)]
    if not records:  # (an interval without packets reports null or NaN latency)
        raise ValueError("no complete telemetry records to measure")
    n = len(records)
    loss = sum(r["loss_pct"] for r in records) / n / 100.0
    late = sum(r.get("late", 0) for r in records) / n / PACKETS_PER_S
    lat = sum(r["latency_ms"] for r in records) / n
    snr = sum(r["snr_db"] for r in records) / n
    rate = sum(r.get("bitrate_kbps") or params["bitrate_kbps"] for r in records) / n
    buf = sum(r.get("delay_ms") or params["buffer_ms"] for r in records) / n
    q = quality(rate, loss + late, snr)
    return cost(q, lat, buf, rate, w)
