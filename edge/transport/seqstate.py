"""Which RTP packets belong to the stream, and their place in it (RFC 3550 §A.1). Pure: arrival
times are passed in.

One :class:`SeqTracker` per receiver decides for every packet, from its SSRC, source address,
16-bit sequence number and arrival time (s):

* **Lock**: the stream is one (SSRC, source address) pair: the first to pass probation, from
  the configured peer when there is one. Another SSRC, or the same SSRC from another address,
  is counted as foreign and dropped. Another pair takes over after its own probation, when
  its line began ``quiet_s`` after the stream's last packet (a restarted sender: new SSRC,
  new port; its first packets are kept) or the stream was silent ``takeover_s``. A sender
  interleaved with a live stream never does; a configured peer is the defence against one
  that waits for an outage.
* **Probation** (A.1 MIN_SEQUENTIAL): a new stream is accepted after two packets that continue
  each other (within SLACK); the first is held meanwhile, then released, not lost.
* **Validation**, per SSRC (:class:`SeqState`): up to MAX_MISORDER behind the highest number is
  a reordered or duplicate packet. A gap ahead counts as loss only when it is below MAX_DROPOUT
  *and* the time since the highest packet could have carried it (plus SLACK packets of jitter);
  A.1 alone would accept any gap below MAX_DROPOUT at once, so one stray copy with seq+500
  would move the highest number. Anything else (that stray, a stale packet at -20000, a sender
  that renumbered) is held on probation: if the next packet continues it, the numbering
  resynchronises (A.1's resync after a very large jump); if the old line goes on, it was a
  stray and is dropped.
* **Numbering**: accepted packets get one continuous extended number across 16-bit wraps,
  resyncs and takeovers (a new line continues at the highest number + 1), so loss counts and
  the jitter buffer's schedule never take a discontinuity for lost packets.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass

MAX_DROPOUT = 3000  # RFC 3550 A.1: a larger jump ahead is a discontinuity, never loss
MAX_MISORDER = 100  # RFC 3550 A.1: further behind than this is not a reordered packet
MIN_SEQUENTIAL = 2  # RFC 3550 A.1: packets in sequence before a new line is believed
SLACK = 25  # packets (500 ms) a gap may exceed the time since the highest packet (jitter,
# sender bursts); also how close two packets on probation must be to confirm each other
MAX_CANDIDATES = 8  # new streams on probation at once (bounded memory under a flood)


def seq_delta(a: int, b: int) -> int:
    """Signed distance ``a - b`` of two 16-bit sequence numbers, in [-32768, 32767]."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def _continues(a: int, b: int) -> bool:
    """Two packets on probation confirm each other: near in sequence, not the same number."""
    return 0 < abs(seq_delta(a, b)) <= SLACK


@dataclass(frozen=True)
class _Held:
    seq: int
    now: float
    item: object
    since: float = 0.0  # arrival of the first packet of this candidate line
    foreign: str = ""  # the counter its arrival went to while the stream was locked


class SeqState:
    """One SSRC's sequence line: 16-bit numbers in, continuous extended numbers out.

    ``update`` returns the (extended number, item) pairs accepted by this packet, in order:
    none (held on probation), one, or two (a held packet confirmed by this one)."""

    def __init__(self, seq: int, ext: int, now: float, frame_s: float = 0.02,
                 spliced: bool = False) -> None:
        self.frame_s = frame_s
        self.seq, self.ext, self.t = seq & 0xFFFF, ext, now  # the highest packet so far
        self.start_seq, self.start_ext = self.seq, ext  # first of the current line
        self.spliced = spliced  # the line continues another one: its start is unknown
        self.held: _Held | None = None
        self.strays = self.resyncs = 0

    def update(self, seq: int, now: float, item: object = None) -> list[tuple[int, object]]:
        seq &= 0xFFFF
        d = seq_delta(seq, self.seq)
        if -MAX_MISORDER <= d <= 0:  # reordered or duplicate: the consumers tell which
            return [(self.ext + d, item)]
        if 0 < d <= MAX_DROPOUT and d - 1 <= SLACK + max(0.0, now - self.t) / self.frame_s:
            self.seq, self.ext, self.t = seq, self.ext + d, now
            self._drop_held()  # the line went on: a held packet was a stray
            return [(self.ext, item)]
        held = self.held
        if held is not None and _continues(seq, held.seq):
            self.held = None
            return self._resync(held, _Held(seq, now, item))
        self._drop_held()
        self.held = _Held(seq, now, item)
        return []

    def _resync(self, a: _Held, b: _Held) -> list[tuple[int, object]]:
        """Two packets continue each other off the line: the sender renumbered. The new line
        continues at the highest number + 1 (what the jump skipped was never sent)."""
        lo, hi = (a, b) if seq_delta(b.seq, a.seq) > 0 else (b, a)
        lo_ext = self.ext + 1
        hi_ext = lo_ext + seq_delta(hi.seq, lo.seq)
        self.seq, self.ext, self.t = hi.seq, hi_ext, max(a.now, b.now)
        self.start_seq, self.start_ext, self.spliced = lo.seq, lo_ext, True
        self.resyncs += 1
        return [(lo_ext, lo.item), (hi_ext, hi.item)]

    def _drop_held(self) -> None:
        if self.held is not None:
            self.strays += 1
            self.held = None

    def range_ext(self, first: int, last: int) -> tuple[int, int] | None:
        """The sender's BYE range (16-bit ``first``..``last``) as extended numbers of the
        current line, or None when it does not fit it. A line that continues another (after a
        resync or takeover) keeps its own start: the sender's first number is from before."""
        dl = seq_delta(last & 0xFFFF, self.seq)
        if not -MAX_MISORDER <= dl <= MAX_DROPOUT:
            return None
        df = seq_delta(first & 0xFFFF, self.start_seq)
        f = self.start_ext
        if not self.spliced and -MAX_DROPOUT <= df <= 0:
            f += df
        la = self.ext + dl
        return (f, la) if la >= f else None


class SeqTracker:
    """The receiver's view: which (SSRC, source) is the stream, and each packet's extended
    number. ``src`` is the source address (None on TCP, where the connection is the source);
    ``peer`` (host, port) locks to one address from the start (port 0: any port)."""

    def __init__(self, frame_s: float = 0.02, takeover_s: float = 1.0,
                 peer: tuple[str, int] | None = None, quiet_s: float = 0.1) -> None:
        self.frame_s = frame_s
        self.takeover_s = takeover_s
        self.quiet_s = quiet_s
        self.peer = peer
        self.state: SeqState | None = None
        self.key: tuple[int, object] | None = None  # (ssrc, src) of the stream
        self.last_t = -math.inf  # arrival of the stream's last accepted packet
        self.top: int | None = None  # highest extended number handed out
        self._relock = False
        self._cands: collections.OrderedDict[tuple[int, object], _Held] = (
            collections.OrderedDict())
        self.foreign_ssrc = self.foreign_source = self.streams = 0
        self._strays = self._resyncs = 0  # of streams that were replaced

    @property
    def ssrc(self) -> int | None:
        return None if self.key is None else self.key[0]

    @property
    def counts(self) -> dict:
        s = self.state
        return {"foreign_ssrc": self.foreign_ssrc, "foreign_source": self.foreign_source,
                "stray": self._strays + (s.strays if s else 0),
                "seq_resyncs": self._resyncs + (s.resyncs if s else 0),
                "streams": self.streams}

    def from_peer(self, src) -> bool:
        """Whether ``src`` may send the stream at all (always, without a configured peer)."""
        if self.peer is None or src is None:  # TCP: the receiver checks the connection
            return True
        return src[0] == self.peer[0] and self.peer[1] in (0, src[1])

    def relock(self) -> None:
        """The transport changed (UDP <-> TCP): the stream's next packet with its SSRC sets
        its new source address."""
        self._relock = True

    def packet(self, ssrc: int, src, seq: int, now: float,
               item: object = None) -> list[tuple[int, object]]:
        """(extended number, item) of every packet this one lets through, in order."""
        if not self.from_peer(src):
            self.foreign_source += 1
            return []
        if self._relock and self.key is not None and ssrc == self.key[0]:
            self.key, self._relock = (ssrc, src), False
        key = (ssrc, src)
        if key == self.key:
            out = self.state.update(seq, now, item)
            if out:
                self.last_t = max(self.last_t, now)
                self.top = max(self.top, out[-1][0])
            return out
        foreign = ""
        if self.key is not None and now - self.last_t < self.takeover_s:
            foreign = "foreign_source" if ssrc == self.key[0] else "foreign_ssrc"
            setattr(self, foreign, getattr(self, foreign) + 1)
        held = self._cands.pop(key, None)
        if held is None or not _continues(seq, held.seq):
            self._cands[key] = _Held(seq & 0xFFFF, now, item, now, foreign)
            while len(self._cands) > MAX_CANDIDATES:
                self._cands.popitem(last=False)
            return []
        if foreign and held.since - self.last_t < self.quiet_s:  # overlapped a live stream:
            return []  # refused; after the takeover time it starts probation afresh
        for f in {held.foreign, foreign} - {""}:  # released after all: not foreign
            setattr(self, f, getattr(self, f) - (held.foreign == f) - (foreign == f))
        return self._take_over(key, held, _Held(seq & 0xFFFF, now, item))

    def _take_over(self, key, a: _Held, b: _Held) -> list[tuple[int, object]]:
        lo, hi = (a, b) if seq_delta(b.seq, a.seq) > 0 else (b, a)
        if self.state is not None:
            self._strays += self.state.strays + (self.state.held is not None)
            self._resyncs += self.state.resyncs
        lo_ext = lo.seq if self.top is None else self.top + 1
        hi_ext = lo_ext + seq_delta(hi.seq, lo.seq)
        self.state = SeqState(lo.seq, lo_ext, lo.now, self.frame_s,
                              spliced=self.top is not None)
        self.state.seq, self.state.ext, self.state.t = hi.seq, hi_ext, max(a.now, b.now)
        self.key, self._relock = key, False
        self._cands.clear()
        self.streams += 1
        self.last_t, self.top = self.state.t, hi_ext
        return [(lo_ext, lo.item), (hi_ext, hi.item)]

    def bye_range(self, ssrc: int, src, first: int, last: int) -> tuple[int, int] | None:
        """The stream's BYE range as extended numbers; None for another stream or source."""
        if self.key != (ssrc, src) or self.state is None:
            return None
        return self.state.range_ext(first, last)
