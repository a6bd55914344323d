"""PTP playout (AES67 style): sample n plays at its capture time plus a fixed link offset on
the receiver's PTP-disciplined clock, so every receiver of a stream plays it in step.

The sender's RTP timestamps are its media clock (RFC 7273, SDP ``a=mediaclk:direct=0``): the
PTP capture time of a frame's first sample in 48 kHz ticks, mod 2^32. The receiver unwraps a
timestamp against its own PTP time, adds the link offset and subtracts the codec's delay; the
result is the frame's output position, an absolute 16 kHz sample index (PTP time × 16 000).
Frames are decoded in sequence order ``lead_ms`` before their play time (a sound card's output
buffer); a packet still missing then is recovered from the next packet's FEC or concealed, and
one that comes later is counted late and ignored. Unlike ``JitterBuffer`` nothing adapts to
arrivals: the offset is configured, the same on every receiver, and must exceed the worst path
delay plus one frame (a frame leaves the sender when its last sample was captured) plus the lead.

Pure logic: the caller passes ``now`` (PTP s). ``TimedTrack`` turns played frames into a
recording that starts on a whole PTP second, so two receivers' files can be laid side by side.
"""

from __future__ import annotations

import collections

import numpy as np

from edge.transport.jitter import MAX_AHEAD_S, MAX_CONCEAL, Playout

MEDIA_RATE = 48_000  # RTP clock of Opus (RFC 7587) = the AES67 media clock rate
WRAP = 1 << 32


def media_ticks(t_ns: int, rate: int = MEDIA_RATE) -> int:
    """PTP time ``t_ns`` in media-clock ticks (not wrapped): floor(t · rate)."""
    return int(t_ns) * rate // 1_000_000_000


def unwrap_ts(ts: int, now_ticks: int) -> int:
    """The full tick count whose low 32 bits are ``ts``, nearest to ``now_ticks`` (the wrap is
    24.9 h at 48 kHz, so any path delay is far inside half of it)."""
    return now_ticks + ((ts - now_ticks + WRAP // 2) % WRAP) - WRAP // 2


class PtpPlayout:
    """Schedules frames by their RTP timestamps (the interface of ``JitterBuffer``, plus the
    timestamp in ``push``). Slots carry ``index``: the output sample of their first sample."""

    def __init__(self, link_offset_ms: float, *, fec: bool = True, lead_ms: float = 20.0,
                 delay_samples: int = 0, rate: int = 16_000, frame_ms: float = 20) -> None:
        self.rate = rate
        self.link_offset_ms = float(link_offset_ms)
        self.offset = int(round(link_offset_ms * rate / 1000))  # samples
        self.lead_s = lead_ms / 1000.0
        self.delay = int(delay_samples)
        self.fec = fec
        self.frame = frame_ms / 1000.0
        self.step = MEDIA_RATE // rate  # media ticks per output sample (3)
        self.ticks = int(MEDIA_RATE * frame_ms / 1000)  # media ticks per frame (960)
        self._pkts: dict[int, bytes] = {}
        self._seen: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._ref: tuple[int, int] | None = None  # (extended seq, full media ticks)
        self._next: int | None = None
        self._newest: int | None = None
        self.end_seq: int | None = None
        self.late = self.duplicates = self.fec_frames = self.plc_frames = 0
        self.inserted = self.discarded = self.played = self.resyncs = 0

    # the JitterBuffer interface the receiver uses -----------------------------------
    def set_bound(self, buffer_ms: float) -> None:
        """No effect: the delay is the configured link offset, not a bounded adaptation."""

    @property
    def target_s(self) -> float:
        return self.link_offset_ms / 1000.0

    @property
    def delay_ms(self) -> float:
        return self.link_offset_ms

    @property
    def concealed(self) -> int:
        return self.fec_frames + self.plc_frames

    @property
    def buffered(self) -> int:
        return len(self._pkts)

    def set_end(self, last_ext: int) -> None:
        self.end_seq = last_ext

    @property
    def finished(self) -> bool:
        return self.end_seq is not None and self._next is not None and self._next > self.end_seq

    def _stalled(self) -> bool:
        return self._newest is not None and self._next > self._newest + MAX_CONCEAL

    # schedule ----------------------------------------------------------------------
    def index(self, ext: int) -> int:
        """Output sample index (PTP time × rate) of frame ``ext``'s first sample."""
        ext0, t0 = self._ref
        ticks = t0 + (ext - ext0) * self.ticks
        # nearest output sample: a timestamp off the 16 kHz grid moves by at most 1/3 sample
        return (ticks + self.step // 2) // self.step + self.offset - self.delay

    def play_s(self, ext: int) -> float:
        return self.index(ext) / self.rate

    def next_due(self) -> float | None:
        """When the next slot is decoded (PTP s): its play time minus the lead."""
        if self._ref is None or self._stalled() or self.finished:
            return None
        return self.play_s(self._next) - self.lead_s

    # input -------------------------------------------------------------------------
    def push(self, ext: int, payload: bytes, now: float, ts: int) -> str:
        """A packet with extended number ``ext`` and RTP timestamp ``ts`` arrived at ``now``
        (PTP s). Returns 'ok', 'late' or 'duplicate'."""
        ticks = unwrap_ts(ts, int(now * MEDIA_RATE))
        if self._ref is None or abs(ext - self._next) * self.frame > MAX_AHEAD_S:
            if self._ref is not None:
                self.resyncs += 1
            self._ref, self._next, self._newest = (ext, ticks), ext, None
            self._pkts.clear()
        if ext in self._seen:
            self.duplicates += 1
            return "duplicate"
        self._seen[ext] = None
        if len(self._seen) > 4096:
            self._seen.popitem(last=False)
        newest = self._newest is None or ext > self._newest
        if newest and ticks != self._ref[1] + (ext - self._ref[0]) * self.ticks:
            # the media clock jumped (a restarted sender, a paused source): schedule from here
            self._ref = (ext, ticks)
            self.resyncs += 1
        if newest and self._stalled() and not self.finished:
            self._next = ext  # the stream resumed after a gap: nothing to conceal in between
        if ext < self._next:
            self.late += 1
            return "late"
        self._pkts[ext] = payload
        self._newest = ext if self._newest is None else max(self._newest, ext)
        return "ok"

    # output ------------------------------------------------------------------------
    def pop(self, now: float) -> list[Playout]:
        """Every slot whose decode time has come, in order."""
        out: list[Playout] = []
        while (self._ref is not None and not self._stalled()
               and now >= self.play_s(self._next) - self.lead_s
               and (self.end_seq is None or self._next <= self.end_seq)):
            out.append(self._take())
        return out

    def flush(self) -> list[Playout]:
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
        self.played += 1
        idx = self.index(s)
        p = self._pkts.pop(s, None)
        if p is not None:
            return Playout("packet", s, p, idx)
        nxt = self._pkts.get(s + 1)
        if self.fec and nxt is not None:
            self.fec_frames += 1
            return Playout("fec", s, nxt, idx)
        self.plc_frames += 1
        return Playout("plc", s, None, idx)


class TimedTrack:
    """Frames at absolute output sample indices -> one recording. It starts at the first
    multiple of ``align`` (a whole PTP second) at or after the first frame, so recordings of
    the same stream made by different receivers start on the same sample; gaps are silence,
    a rewritten span keeps the later frame."""

    def __init__(self, align: int = 16_000) -> None:
        self.align = align
        self._chunks: list[tuple[int, np.ndarray]] = []

    def put(self, index: int, samples: np.ndarray) -> None:
        self._chunks.append((int(index), np.asarray(samples, np.float32)))

    @property
    def start(self) -> int | None:
        """Output sample index of the recording's first sample (None while empty)."""
        if not self._chunks:
            return None
        return -(-self._chunks[0][0] // self.align) * self.align

    def array(self) -> np.ndarray:
        """The recording from ``start``, (n,) float32."""
        start = self.start
        if start is None:
            return np.zeros(0, np.float32)
        end = max(i + len(x) for i, x in self._chunks)
        out = np.zeros(max(end - start, 0), np.float32)
        for i, x in self._chunks:
            a = max(i, start)
            if a < i + len(x):
                out[a - start:i + len(x) - start] = x[a - i:]
        return out
