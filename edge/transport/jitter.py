"""Jitter buffer: when to play which Opus packet (pure logic; the caller passes ``now``).

Packets are scheduled by extended sequence number (one 20 ms frame each): frame ``s`` plays at
``anchor + (s - s0) * frame``. The numbers come from ``edge.transport.seqstate.SeqTracker``,
which has already dropped strays and made resyncs and sender restarts continuous.
The playout delay adapts between ``min_ms`` and the configured ``buffer_ms``:
every ``adapt_s`` it compares the anchor with the earliest relative arrival plus
the observed delay spread (95th percentile over the last two seconds, measured from the 3rd
earliest arrival so one early stray cannot pull the schedule forward) plus one frame, so that the
next packet's FEC is usually there when a packet is missing, and moves by one frame: a
concealment frame is inserted to grow, a frame is decoded and discarded to shrink (the decoder
state stays continuous). Reordered packets take their slot; duplicates and packets that arrive
after their slot was played are counted and ignored. A missing packet is recovered from the
next packet's in-band FEC when it is buffered, else concealed (PLC).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

MAX_AHEAD_S = 10.0  # a packet further ahead than this means the stream restarted: resync
MAX_CONCEAL = 5  # frames concealed beyond the newest packet before playout stalls
BASE_RANK = 2  # the earliest arrival is the 3rd earliest: robust to two early outliers


@dataclass(frozen=True)
class Playout:
    """One frame slot. kind: packet (decode payload), fec (decode the FEC part of the next
    packet's payload), plc (conceal), discard (decode payload but do not output it)."""

    kind: str
    seq: int  # extended sequence number of the slot
    payload: bytes | None = None
    index: int | None = None  # PTP playout: output sample (PTP time x rate) of the first sample


class JitterBuffer:
    def __init__(self, buffer_ms: float = 200, min_ms: float = 100, frame_ms: float = 20,
                 fec: bool = True, adapt_s: float = 0.2) -> None:
        self.frame = frame_ms / 1000.0
        self.min_s = min_ms / 1000.0
        self.adapt_s = adapt_s
        self.fec = fec
        self.set_bound(buffer_ms)
        self.target_s = float(np.clip(0.1, self.min_s, self.max_s))
        self._pkts: dict[int, bytes] = {}
        self._seen: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._rel: collections.deque[float] = collections.deque(maxlen=int(2.0 / self.frame))
        self._s0: int | None = None
        self._anchor = 0.0
        self._next: int | None = None
        self._newest: int | None = None
        self._last_adapt = 0.0
        self.end_seq: int | None = None  # set when the sender said it has finished
        self.late = self.duplicates = self.fec_frames = self.plc_frames = 0
        self.inserted = self.discarded = self.played = self.resyncs = 0

    # configuration -----------------------------------------------------------------
    def set_bound(self, buffer_ms: float) -> None:
        """Change the upper bound of the playout delay at runtime (takes effect gradually)."""
        self.max_s = max(buffer_ms / 1000.0, self.min_s)
        if hasattr(self, "target_s"):
            self.target_s = min(self.target_s, self.max_s)

    @property
    def delay_ms(self) -> float:
        """The current playout delay over the earliest arrivals, ms."""
        if not self._rel:
            return 1000.0 * self.target_s
        return 1000.0 * (self._anchor - self._base(np.fromiter(self._rel, dtype=np.float64)))

    @staticmethod
    def _base(rel: np.ndarray) -> float:
        """The earliest relative arrival, ignoring up to BASE_RANK outliers when there are
        enough samples: a single packet far ahead of its time (a stray the sequence check let
        through) would otherwise shrink the delay and make the next packets late."""
        k = BASE_RANK if len(rel) >= 10 else 0
        return float(np.partition(rel, k)[k])

    @property
    def concealed(self) -> int:
        return self.fec_frames + self.plc_frames

    @property
    def buffered(self) -> int:
        return len(self._pkts)

    def set_end(self, last_ext: int) -> None:
        """The sender's BYE: extended number ``last_ext`` was the final packet."""
        self.end_seq = last_ext

    @property
    def finished(self) -> bool:
        return self.end_seq is not None and self._next is not None and self._next > self.end_seq

    # input -------------------------------------------------------------------------
    def push(self, ext: int, payload: bytes, now: float) -> str:
        """Add a packet (extended sequence number ``ext``) that arrived at ``now`` (s).
        Returns 'ok', 'late' or 'duplicate'."""
        if self._s0 is None or (self._next is not None
                                and abs(ext - self._next) * self.frame > MAX_AHEAD_S):
            self._start(ext, now)
        if ext in self._seen:
            self.duplicates += 1
            return "duplicate"
        self._seen[ext] = None
        if len(self._seen) > 4096:
            self._seen.popitem(last=False)
        rel = now - (ext - self._s0) * self.frame
        if self._stalled() and ext > self._newest and not self.finished:
            # playout ran dry (sender paused or restarted, long outage): restart the schedule
            # at this packet, even if its slot was among the concealed ones (a restarted
            # sender's numbering continues right after the newest packet)
            self._anchor = rel + self.target_s
            self._next = ext
            self._rel.clear()
        self._rel.append(rel)
        if ext < self._next:
            self.late += 1
            return "late"
        self._pkts[ext] = payload
        self._newest = ext if self._newest is None else max(self._newest, ext)
        return "ok"

    def _start(self, ext: int, now: float) -> None:
        if self._s0 is not None:
            self.resyncs += 1
        self._s0, self._next, self._newest = ext, ext, None
        self._pkts.clear()
        self._rel.clear()
        self._anchor = now + self.target_s
        self._last_adapt = now

    def _stalled(self) -> bool:
        return self._newest is not None and self._next > self._newest + MAX_CONCEAL

    # output ------------------------------------------------------------------------
    def due(self, seq: int) -> float:
        return self._anchor + (seq - self._s0) * self.frame

    def next_due(self) -> float | None:
        """When the next slot plays (s), or None while nothing is scheduled."""
        if self._s0 is None or self._stalled() or self.finished:
            return None
        return self.due(self._next)

    def pop(self, now: float) -> list[Playout]:
        """Every slot whose play time has come, in order."""
        out: list[Playout] = []
        if self._s0 is None:
            return out
        if now - self._last_adapt >= self.adapt_s:
            self._last_adapt = now
            out += self._adapt()
        while (not self._stalled() and now >= self.due(self._next)
               and (self.end_seq is None or self._next <= self.end_seq)):
            out.append(self._take())
        return out

    def flush(self) -> list[Playout]:
        """Play out everything up to the end of the stream (or the newest packet) now."""
        out: list[Playout] = []
        if self._next is None or self._newest is None:
            return out
        last = self._newest if self.end_seq is None else self.end_seq
        while self._next <= last:
            out.append(self._take())
        return out

    def _take(self) -> Playout:
        s = self._next
        self._next += 1
        p = self._pkts.pop(s, None)
        self.played += 1
        if p is not None:
            return Playout("packet", s, p)
        nxt = self._pkts.get(s + 1)
        if self.fec and nxt is not None:
            self.fec_frames += 1
            return Playout("fec", s, nxt)
        self.plc_frames += 1
        return Playout("plc", s)

    def _adapt(self) -> list[Playout]:
        if len(self._rel) < 10:
            return []
        rel = np.fromiter(self._rel, dtype=np.float64)
        base = self._base(rel)
        spread = float(np.percentile(rel, 95)) - base
        self.target_s = float(np.clip(spread + self.frame, self.min_s, self.max_s))
        want = base + self.target_s
        if want - self._anchor >= self.frame:  # grow: one extra concealment frame
            self._anchor += self.frame
            self.inserted += 1
            return [Playout("plc", self._next - 1)]
        if self._anchor - want >= self.frame and self._next in self._pkts:  # shrink
            self._anchor -= self.frame
            self.discarded += 1
            s = self._next
            self._next += 1
            return [Playout("discard", s, self._pkts.pop(s))]
        return []
