"""Link capacity from the dispersion of probe trains (packet-train probing, as in pathrate and
WebRTC's ProbeBitrateEstimator), so bandwidth utilisation and ``host-calibrate tune`` see the
link instead of the stream's own bitrate.

Every ``PROBE_PERIOD_S`` the sender sends ``TRAIN_PACKETS`` padded RTCP APP packets (``HLPB``)
back to back, right after an audio packet. At a bottleneck of capacity C they queue and leave
one packet time apart, so at the receiver the bytes that arrived after the train's first
packet, up to its last, took ``last - first`` seconds of link time::

    C = 8 · bytes(after first .. last) / (t_last − t_first)

(kernel arrival stamps; our own audio packets that arrive inside the train count too). One
train gives one sample: the median of that ratio over its three gaps (one probe delayed by a
busy CPU moves two gaps in opposite directions and leaves the third). The estimate is the
median of the last ``KEEP_TRAINS`` samples, each weighted by the bytes its train measured (a
few ms of timing error matter less in a longer train; by bytes, not by the measured spread,
so a stalled train gains no weight). It is reported from ``MIN_TRAINS`` trains on; the first
``STARTUP_TRAINS`` go 0.5 s apart, so that is about 1.2 s into a stream. The probe size
adapts: each train is sized to spread over ``TARGET_SPREAD_S`` at the last estimate, so the
error from timing noise stays about the same at every capacity.

Cost: ``TRAIN_PACKETS/(TRAIN_PACKETS−1) · TARGET_SPREAD_S / PROBE_PERIOD_S`` = 2.7 % of the
link's capacity up to ``FAST_KBPS`` (360 kbit/s: 9.6 kbit/s there); above, full-size trains
(4 × 600 bytes) every 6 s, 3.2 kbit/s. The audio packets behind a train wait up to 53 ms
longer. Above 360 kbit/s a train spreads less than 40 ms, so timing noise weighs more, and
where no bottleneck spreads it at all (a fast LAN) the sample is the sender's own burst rate:
a lower bound, far above any stream bitrate, which is all the tuner needs there.

Pure: times and sizes are passed in; no sockets or clocks.
"""

from __future__ import annotations

import collections
import math

TRAIN_PACKETS = 4
TARGET_SPREAD_S = 0.04  # how long a train should take on the link at the estimated capacity
PROBE_PERIOD_S = 2.0
MIN_PROBE_BYTES = 100  # the JSON body of a probe needs about 40 bytes
MAX_PROBE_BYTES = 600  # full size from FAST_KBPS on; the trains then spread less
# from here on trains are full size and shorter than TARGET_SPREAD_S (360 kbit/s, above which
# the tuner needs no precise number: the largest bitrate is 200): probe every FAST_PERIOD_S
FAST_KBPS = MAX_PROBE_BYTES * 8 * (TRAIN_PACKETS - 1) / TARGET_SPREAD_S / 1000
FAST_PERIOD_S = 6.0
KEEP_TRAINS = 9  # the estimate: median of this many trains (18 s at one train per 2 s)
MIN_TRAINS = 3  # no estimate from fewer (one train stretched by a busy CPU is no measurement)
STARTUP_TRAINS = 3  # the first trains go every STARTUP_PERIOD_S, so an estimate exists at once
STARTUP_PERIOD_S = 0.5
TRAIN_TIMEOUT_NS = 1_000_000_000  # a train whose last packet never came is closed after 1 s
RECENT_NS = 2_000_000_000  # stream packets kept to count the ones that arrive inside a train


def probe_size(capacity_kbps: float, packets: int = TRAIN_PACKETS,
               spread_s: float = TARGET_SPREAD_S) -> int:
    """Bytes per probe packet (a multiple of 4) so that ``packets`` of them spread over
    ``spread_s`` on a link of ``capacity_kbps``."""
    size = capacity_kbps * 1000.0 * spread_s / 8.0 / max(packets - 1, 1)
    size = min(max(size, MIN_PROBE_BYTES), MAX_PROBE_BYTES)
    return int(size) // 4 * 4


def train_capacity_kbps(first_ns: int, last_ns: int, bytes_after_first: int) -> float | None:
    """One train's sample, kbit/s: the bytes that arrived after its first packet up to its
    last, over that time. None when the train says nothing (one packet, no spread)."""
    span = last_ns - first_ns
    if span <= 0 or bytes_after_first <= 0:
        return None
    return 8.0 * bytes_after_first / span * 1e6


def train_sample_kbps(probes, stream) -> float | None:
    """One train's sample, kbit/s, from its probes' and the stream packets' ``(arrival ns,
    bytes)``: per gap between consecutive probes, the bytes that arrived in it over its
    length, and the median over the gaps. A probe held up by a busy CPU lengthens one gap and
    shortens the next, and the median keeps the third; with fewer than three gaps (probes
    lost) the whole train's bytes over its spread. None when the train says nothing."""
    p = sorted(probes)
    if len(p) < 2:
        return None
    gaps = [(t1 - t0, n1 + sum(n for t, n in stream if t0 < t <= t1))
            for (t0, _), (t1, n1) in zip(p, p[1:], strict=False)]
    if len(gaps) < 3:
        return train_capacity_kbps(p[0][0], p[-1][0], sum(n for _, n in gaps))
    rates = sorted(8.0 * n / dt * 1e6 if dt > 0 else math.inf for dt, n in gaps)
    mid = len(rates) // 2
    kbps = rates[mid] if len(rates) % 2 else (rates[mid - 1] + rates[mid]) / 2
    return kbps if math.isfinite(kbps) else None


def estimate_kbps(samples, min_trains: int = MIN_TRAINS) -> float:
    """The filtered estimate from ``(kbps, bytes)`` train samples: their median weighted by
    the bytes each train measured (0.0 with fewer than ``min_trains``)."""
    samples = sorted(samples)
    if len(samples) < max(min_trains, 1):
        return 0.0
    half, acc = sum(w for _, w in samples) / 2.0, 0.0
    for kbps, w in samples:
        acc += w
        if acc >= half:
            return float(kbps)
    return float(samples[-1][0])


def probe_due(frame: int, trains: int, last_frame: int, frames_per_s: float,
              capacity_kbps: float = 0.0, first_frame: int = 10) -> bool:
    """Whether the sender's ``frame`` (counted from 1) should be followed by a train, after
    ``trains`` trains, the last one after ``last_frame``: the first at ``first_frame``, the
    next ``STARTUP_TRAINS - 1`` every ``STARTUP_PERIOD_S``, then every ``PROBE_PERIOD_S``
    (``FAST_PERIOD_S`` while the estimate ``capacity_kbps`` is at least ``FAST_KBPS``)."""
    if trains == 0:
        return frame >= first_frame
    period = (STARTUP_PERIOD_S if trains < STARTUP_TRAINS else
              FAST_PERIOD_S if capacity_kbps >= FAST_KBPS else PROBE_PERIOD_S)
    return frame - last_frame >= round(period * frames_per_s)


class CapacityMeter:
    """Receiver side: stream packets and probe packets in, capacity estimate out."""

    def __init__(self, keep: int = KEEP_TRAINS) -> None:
        self.samples: collections.deque[tuple[float, float]] = collections.deque(maxlen=keep)
        self.trains = 0  # trains that gave a sample
        self._recent: collections.deque[tuple[int, int]] = collections.deque()
        self._train: dict | None = None

    def packet(self, t_ns: int, size: int) -> None:
        """A packet of the stream (not a probe) arrived at ``t_ns`` with ``size`` bytes."""
        self._recent.append((t_ns, size))
        while self._recent and self._recent[0][0] < t_ns - RECENT_NS:
            self._recent.popleft()

    def probe(self, train: int, index: int, count: int, t_ns: int, size: int) -> None:
        """Probe ``index`` of ``count`` of train ``train`` arrived at ``t_ns``."""
        if self._train is not None and self._train["id"] != train:
            self._finish()
        if self._train is None:
            self._train = {"id": train, "first": t_ns, "probes": [], "seen": set()}
        if index in self._train["seen"]:  # a duplicate (the network copied it): no gap
            return
        self._train["seen"].add(index)
        self._train["probes"].append((t_ns, size))
        if index >= count - 1:
            self._finish()

    def _finish(self) -> None:
        tr, self._train = self._train, None
        if tr is None:
            return
        probes = sorted(tr["probes"])
        kbps = train_sample_kbps(probes, self._recent)
        if kbps is not None:
            first, last = probes[0][0], probes[-1][0]
            n_bytes = sum(n for _, n in probes[1:]) + sum(
                n for t, n in self._recent if first < t <= last)
            self.samples.append((kbps, n_bytes))
            self.trains += 1

    def estimate(self, now_ns: int) -> float:
        """Capacity in kbit/s (0.0: no train measured yet); closes a train left open."""
        if self._train is not None and now_ns - self._train["first"] > TRAIN_TIMEOUT_NS:
            self._finish()
        return estimate_kbps(self.samples)
