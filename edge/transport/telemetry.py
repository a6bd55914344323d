"""Per-second link telemetry: the receiver's meter, and the log the device keeps for the host.

``TelemetryMeter`` turns packet arrivals and played audio into one ``edge.params.Telemetry``
per interval (pure: times are passed in). ``TelemetryLog`` keeps the last N minutes in memory
and appends every record as one JSON line to a file, so another process (the serial agent) can
read the same window with ``TelemetryLog.read_window(path, seconds)``.
"""

from __future__ import annotations

import collections
import json
import os
import threading
from pathlib import Path

import numpy as np

from edge.params import Telemetry
from edge.transport import stats
from edge.transport.stats import LossCounter

KEEP_MINUTES = 10


class TelemetryMeter:
    """Accumulates one interval of measurements; ``take(now)`` returns its Telemetry."""

    def __init__(self, snr_window_s: float = 5.0, rate: int = 16_000) -> None:
        self.loss = LossCounter()  # whole-stream totals
        self.rate = rate
        self._audio: collections.deque[np.ndarray] = collections.deque(
            maxlen=int(snr_window_s * rate / 320))
        self.bytes_total = 0
        self.latency_sum_ms = 0.0
        self.latency_n = 0
        self.latencies: collections.deque[float] = collections.deque(maxlen=30_000)  # 10 min
        self.jitter_s = 0.0  # RFC 3550 J, seconds
        self._transit_prev: float | None = None
        self._late_last = self._conc_last = 0
        self.reordered = 0
        self._max_ext: int | None = None
        self.last_interval = (0, 0)  # (expected, received) of the last closed interval
        self._reset_interval(None)

    def _reset_interval(self, now: float | None) -> None:
        self._t0 = now
        self._bytes = 0
        self._lat: list[float] = []
        self._exp0 = self.loss.expected
        self._rcv0 = self.loss.received

    def packet(self, ext: int, rtp_ts: int, send_ns: int, recv_ns: int, n_bytes: int,
               clock_rate: int = 48_000) -> bool:
        """Record one arrival by its extended sequence number (``SeqTracker``); False when it
        was a duplicate (not counted again)."""
        if self._t0 is None:
            self._t0 = recv_ns / 1e9
        self._bytes += n_bytes
        self.bytes_total += n_bytes
        if not self.loss.add(ext):
            return False
        if self._max_ext is not None and ext < self._max_ext:
            self.reordered += 1  # arrived after a packet with a higher sequence number
        self._max_ext = ext if self._max_ext is None else max(self._max_ext, ext)
        if send_ns:
            lat = stats.latency_ms(send_ns, recv_ns)
            self._lat.append(lat)
            self.latency_sum_ms += lat
            self.latency_n += 1
            self.latencies.append(lat)
        transit = recv_ns / 1e9 - rtp_ts / clock_rate
        if self._transit_prev is not None and abs(transit - self._transit_prev) > 1000:
            self._transit_prev = None  # RTP timestamp wrapped or the stream restarted
        self.jitter_s = stats.jitter_update(self.jitter_s, self._transit_prev, transit)
        self._transit_prev = transit
        return True

    def audio(self, frame: np.ndarray) -> None:
        self._audio.append(frame)

    def take(self, now: float, late: int, concealed: int, allocated_kbps: float,
             capacity_kbps: float = 0.0) -> Telemetry:
        """Close the interval ending at ``now`` (s). ``late``/``concealed`` are running totals
        from the jitter buffer; the record holds the increments of this interval.
        Utilisation is of the measured ``capacity_kbps`` when there is an estimate, else of
        the bandwidth the sender allocated."""
        dur = max(now - (self._t0 if self._t0 is not None else now - 1.0), 1e-3)
        exp = self.loss.expected - self._exp0
        rcv = self.loss.received - self._rcv0
        self.last_interval = (exp, rcv)  # for the RFC 3550 report block's fraction lost
        kbps = stats.bitrate_kbps(self._bytes, dur)
        audio = np.concatenate(self._audio) if self._audio else np.zeros(0, np.float32)
        t = Telemetry(
            t=now,
            latency_ms=float(np.mean(self._lat)) if self._lat else float("nan"),
            loss_pct=stats.interval_loss_pct(exp, rcv),
            jitter_ms=1000.0 * self.jitter_s,
            bandwidth_util=stats.utilisation(kbps, capacity_kbps or allocated_kbps),
            snr_db=stats.snr_estimate_db(audio),
            late=late - self._late_last,
            concealed=concealed - self._conc_last,
            bitrate_kbps=kbps,
            capacity_kbps=float(capacity_kbps),
        )
        self._late_last, self._conc_last = late, concealed
        self._reset_interval(now)
        return t


def _clean(d: dict) -> dict:
    """JSON has no NaN: an interval without packets reports null latency."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in d.items()}


class TelemetryLog:
    """Thread-safe ring buffer of the last ``minutes`` of Telemetry, mirrored to JSON lines."""

    def __init__(self, path: str | os.PathLike | None = None,
                 minutes: float = KEEP_MINUTES) -> None:
        self.minutes = minutes
        self._items: collections.deque[Telemetry] = collections.deque()
        self._lock = threading.Lock()
        self.path = Path(path) if path else None
        self._fh = None
        if self.path:  # size-bounded (HUSHLINK_ROTATE_MB): a device runs for months
            from edge.outpaths import RotatingLines

            self._fh = RotatingLines(self.path, what="telemetry")

    def append(self, t: Telemetry) -> None:
        with self._lock:
            self._items.append(t)
            while self._items and self._items[0].t < t.t - 60.0 * self.minutes:
                self._items.popleft()
            if self._fh:
                self._fh.write(json.dumps(_clean(t.to_dict())))

    def window(self, seconds: float) -> list[Telemetry]:
        """Records of the last ``seconds`` (relative to the newest record)."""
        with self._lock:
            if not self._items:
                return []
            t_end = self._items[-1].t
            return [t for t in self._items if t.t > t_end - seconds]

    def records(self) -> list[dict]:
        """Everything kept, as JSON-ready dicts (the serial agent's telemetry-source API)."""
        with self._lock:
            return [_clean(t.to_dict()) for t in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def close(self) -> None:
        with self._lock:
            if self._fh:
                self._fh.close()
                self._fh = None

    @staticmethod
    def read_window(path: str | os.PathLike, seconds: float) -> list[Telemetry]:
        """What another process sees: the last ``seconds`` of a JSON-lines telemetry file.
        A torn last line (being written) is skipped."""
        p = Path(path)
        if not p.exists():
            return []
        rows = []
        with open(p, encoding="utf-8") as fh:
            for line in fh:
                try:
                    d = json.loads(line)
                except ValueError:
                    continue
                d = {k: (float("nan") if v is None else v) for k, v in d.items()}
                try:
                    rows.append(Telemetry.from_dict(d))
                except TypeError:
                    continue
        if not rows:
            return []
        t_end = rows[-1].t
        return [r for r in rows if r.t > t_end - seconds]
