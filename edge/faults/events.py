"""Frame probabilities → fault events with start/end times (pure, no I/O).

Per class, hysteresis: an event opens when the probability reaches ``on`` and stays open while
it is at least ``off``; a dip shorter than the class's merge gap does not close it; events
shorter than the class's minimum duration are dropped. Clipping comes in bursts (the loud
syllables of a clipped passage, a short pause apart), so it merges across longer gaps and a
single short burst counts. Frame ``t`` is centred on ``t * hop_s`` so an
event over frames ``t0..t1`` spans ``[(t0 - 0.5) hop, (t1 + 0.5) hop]``. The same tracker
serves whole files (``frames_to_events``) and streams (``EventTracker.push``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from edge.faults import FAULT_TYPES


@dataclass(frozen=True)
class EventConfig:
    """Hysteresis thresholds (probability) and durations (seconds)."""

    on: float = 0.6
    off: float = 0.35
    merge_gap_s: float = 0.08
    min_duration_s: float = 0.2
    min_duration_overrides: tuple[tuple[str, float], ...] = (("dropout", 0.0),
                                                             ("clipping", 0.03))
    merge_gap_overrides: tuple[tuple[str, float], ...] = (("clipping", 0.25),)
    hop_s: float = 0.01

    def min_duration(self, kind: str) -> float:
        return dict(self.min_duration_overrides).get(kind, self.min_duration_s)

    def merge_gap(self, kind: str) -> float:
        return dict(self.merge_gap_overrides).get(kind, self.merge_gap_s)


@dataclass(frozen=True)
class Event:
    """A fault of ``kind`` over [start_s, end_s) seconds; ``confidence`` = peak probability."""

    kind: str
    start_s: float
    end_s: float
    confidence: float
    params: dict = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def as_dict(self) -> dict:
        d = asdict(self)
        d["start_s"], d["end_s"] = round(self.start_s, 4), round(self.end_s, 4)
        d["confidence"] = round(self.confidence, 3)
        return d


class EventTracker:
    """Streaming hysteresis over (frames, classes) probabilities; frames numbered from 0."""

    def __init__(self, cfg: EventConfig = EventConfig(), kinds: tuple[str, ...] = FAULT_TYPES):
        self.cfg, self.kinds = cfg, kinds
        self.t = 0  # index of the next frame
        self._open: dict[int, list] = {}  # class -> [first, last_above_off, peak]

    def push(self, probs: np.ndarray) -> list[Event]:
        """(frames, classes) -> events that closed within these frames."""
        out: list[Event] = []
        gaps = [round(self.cfg.merge_gap(k) / self.cfg.hop_s) for k in self.kinds]
        for row in np.atleast_2d(probs):
            for c, p in enumerate(row):
                st = self._open.get(c)
                if st is None:
                    if p >= self.cfg.on:
                        self._open[c] = [self.t, self.t, float(p)]
                    continue
                if p >= self.cfg.off:
                    st[1], st[2] = self.t, max(st[2], float(p))
                elif self.t - st[1] > gaps[c]:
                    out += self._close(c)
            self.t += 1
        return out

    def flush(self) -> list[Event]:
        """Close every open event (end of stream)."""
        out: list[Event] = []
        for c in list(self._open):
            out += self._close(c)
        return sorted(out, key=lambda e: e.start_s)

    def _close(self, c: int) -> list[Event]:
        first, last, peak = self._open.pop(c)
        h = self.cfg.hop_s
        ev = Event(self.kinds[c], max(0.0, (first - 0.5) * h), (last + 0.5) * h, peak)
        return [ev] if ev.duration_s >= self.cfg.min_duration(ev.kind) else []


def frames_to_events(probs: np.ndarray, cfg: EventConfig = EventConfig(),
                     kinds: tuple[str, ...] = FAULT_TYPES) -> list[Event]:
    """(frames, classes) probabilities of a whole file -> events sorted by start."""
    tr = EventTracker(cfg, kinds)
    evs = tr.push(probs) + tr.flush()
    return sorted(evs, key=lambda e: (e.start_s, e.kind))


def events_to_json(events: list[Event], **extra) -> str:
    return json.dumps({**extra, "events": [e.as_dict() for e in events]}, indent=1)


def events_from_json(text: str) -> list[Event]:
    return [Event(**d) for d in json.loads(text)["events"]]
