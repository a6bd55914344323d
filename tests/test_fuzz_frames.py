"""Fuzzing the serial frame decoder and the piece reassembly (issue 18, "fuzz tests"):
thousands of generated inputs in a few seconds; the only exceptions allowed are the
documented ones (ProtocolError from decode_raw/decode_body, ValueError from parse_piece),
and the decoder's state stays sound (bounded buffer, consistent counters, every intact frame
still decoded after any garbage, nothing yielded that was not sent)."""

from __future__ import annotations

import struct
import zlib

import cbor2
from cobs import cobs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from edge import fragments as F
from edge import protocol as P
from edge.link import Link

kinds = st.sampled_from(list(P.Kind))
seqs = st.integers(0, 2**32 - 1)
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@given(st.one_of(
    st.binary(max_size=600),
    st.binary(max_size=600).map(cobs.encode),  # passes COBS, reaches the length/CRC checks
    # right CRC, any version/kind/length: reaches the header checks
    st.tuples(st.integers(0, 255), st.integers(0, 255), seqs, st.binary(max_size=64)).map(
        lambda t: cobs.encode(struct.pack(">BBI", *t[:3]) + t[3] + struct.pack(
            ">I", zlib.crc32(struct.pack(">BBI", *t[:3]) + t[3]))))))
@settings(FAST, max_examples=1500)
def test_decode_raw_raises_only_protocol_error(packet):
    try:
        fr = P.decode_raw(packet)
    except P.ProtocolError:
        return
    assert P.encode_frame(fr.kind, fr.seq, fr.body)[1:-1] == packet  # only exact frames


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=4), max_leaves=6)


@given(st.one_of(st.binary(max_size=300),
                 cbor_values.map(cbor2.dumps),
                 st.tuples(cbor_values.map(cbor2.dumps), st.integers(0, 400),
                           st.integers(0, 255)).map(  # one byte changed, or cut short
                     lambda t: (t[0][:t[1]] + bytes([t[2]]) + t[0][t[1] + 1:])[:t[1] + 2])))
@settings(FAST, max_examples=800)
def test_decode_body_raises_only_protocol_error(body):
    try:
        msg = P.decode_body(body)
    except P.ProtocolError:
        return
    assert isinstance(msg, dict)


class DecoderMachine(RuleBasedStateMachine):
    """Good frames, garbage, damaged frames and oversize runs fed in arbitrary pieces: every
    good frame comes out, in order, once, whatever came before it; nothing else does."""

    def __init__(self):
        super().__init__()
        self.dec = P.FrameDecoder()
        self.expected: list[P.Frame] = []
        self.got: list[P.Frame] = []

    def _feed(self, data: bytes, step: int) -> None:
        for i in range(0, len(data), step):
            self.got += self.dec.feed(data[i:i + step])

    @rule(kind=kinds, seq=seqs, body=st.binary(max_size=200), step=st.integers(1, 300))
    def good(self, kind, seq, body, step):
        self.expected.append(P.Frame(kind, seq, body))
        self._feed(P.encode_frame(kind, seq, body), step)

    @rule(data=st.binary(max_size=400), step=st.integers(1, 300))
    def garbage(self, data, step):
        self._feed(data, step)

    @rule(kind=kinds, seq=seqs, body=st.binary(max_size=200), where=st.integers(1, 10**6),
          xor=st.integers(1, 255), step=st.integers(1, 300))
    def damaged(self, kind, seq, body, where, xor, step):
        wire = bytearray(P.encode_frame(kind, seq, body))
        wire[1 + where % (len(wire) - 2)] ^= xor
        self._feed(bytes(wire), step)

    @rule(extra=st.integers(1, 3000), step=st.integers(100, 5000))
    def oversize(self, extra, step):
        self._feed(b"\x01" * (P.MAX_ENCODED + extra), step)

    @invariant()
    def sound(self):
        s = self.dec.stats
        assert self.dec.pending <= P.MAX_ENCODED
        assert min(s.frames, s.bad, s.oversize, s.garbage_bytes, s.damaged) >= 0
        assert s.damaged <= s.bad and s.frames == len(self.got)
        assert 0 <= s.byte_error_rate <= 1
        # every intact frame out at once, in order; nothing from garbage or damaged frames
        assert self.got == self.expected


DecoderMachine.TestCase.settings = settings(FAST, max_examples=150, stateful_step_count=25)
TestDecoderMachine = DecoderMachine.TestCase


class _Wire:
    """A serial port stand-in for Link: records writes, never has input."""

    in_waiting = 0

    def __init__(self):
        self.out = bytearray()

    def write(self, data):
        self.out += data

    def read(self, n):
        return b""

    def close(self):
        pass


@st.composite
def piece_traffic(draw):
    """Two or three messages cut into pieces (their own piece sizes), a random selection of
    their pieces (dropped, duplicated, reordered), junk FRAG and NEED frames on other seqs,
    and line garbage, as one byte stream."""
    msgs, frames = [], []
    for seq in range(1, draw(st.integers(2, 3)) + 1):
        kind = draw(st.sampled_from([P.Kind.REQUEST, P.Kind.RESPONSE]))
        body = draw(st.binary(max_size=3000))
        out = F.Outgoing.new(int(kind), body, draw(st.integers(8, 400)))
        pieces = out.take(draw(st.integers(0, min(255, 2 * out.k + 2))))
        keep = [p for p in pieces if draw(st.booleans()) or draw(st.booleans())]
        keep += draw(st.lists(st.sampled_from(pieces), max_size=3)) if pieces else []
        msgs.append((P.Frame(kind, seq, body), out.k, keep))
        frames += [P.encode_frame(P.Kind.FRAG, seq, p) for p in keep]
    frames += [P.encode_frame(P.Kind.FRAG, 1000 + i, b)
               for i, b in enumerate(draw(st.lists(st.binary(max_size=40), max_size=4)))]
    frames += [P.encode_frame(P.Kind.NEED, draw(st.integers(0, 5)), b)
               for b in draw(st.lists(st.binary(min_size=3, max_size=3), max_size=3))]
    frames += draw(st.lists(st.binary(max_size=50), max_size=3))
    return msgs, draw(st.permutations(frames)), draw(st.integers(1, 500))


@given(piece_traffic())
@settings(FAST, max_examples=300)
def test_link_reassembly_is_sound(traffic):
    """Whatever mix of pieces arrives: no exception, bounded state, every message yielded
    is byte-exact one that was sent, and each message with k distinct pieces delivered is
    yielded exactly once."""
    msgs, frames, step = traffic
    link = Link(_Wire(), "fuzz://")
    stream = b"".join(frames)
    got = []
    for i in range(0, len(stream), step):
        got += link.receive(stream[i:i + step])
        link.ask_for_missing()
    assert len(link.incoming) <= Link.MAX_IN and len(link.done) <= 256
    sent = [m for m, _, _ in msgs]
    assert all(fr in sent for fr in got), "a message was rebuilt wrong"
    for m, k, keep in msgs:
        distinct = {F.parse_piece(p)[2] for p in keep}
        assert got.count(m) == (1 if len(distinct) >= k else 0)


@given(st.binary(max_size=64))
@settings(FAST, max_examples=500)
def test_parse_piece_raises_only_value_error(body):
    try:
        kind, k, idx, length, data = F.parse_piece(body)
    except ValueError:
        return
    assert k >= 1 and len(data) * k >= length
