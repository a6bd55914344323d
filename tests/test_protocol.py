"""Frame codec and stream decoder: round trips, and hypothesis fuzzing with garbage,
truncation and corruption (a damaged frame must never be accepted)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge import protocol as P

bodies = st.binary(max_size=300)
seqs = st.integers(0, 2**32 - 1)
kinds = st.sampled_from(list(P.Kind))


@given(kinds, seqs, bodies)
@settings(deadline=None)
def test_round_trip(kind, seq, body):
    frames = P.FrameDecoder().feed(P.encode_frame(kind, seq, body))
    assert frames == [P.Frame(kind, seq, body)]


@given(st.binary(max_size=3000))
@settings(max_examples=300, deadline=None)
def test_garbage_never_raises_and_rarely_decodes(data):
    dec = P.FrameDecoder()
    for fr in dec.feed(data):  # anything accepted must have a valid CRC, so re-encodes
        assert P.encode_frame(fr.kind, fr.seq, fr.body).strip(b"\x00")


@given(st.binary(max_size=500), kinds, seqs, bodies, st.binary(max_size=500),
       st.integers(1, 64))
@settings(max_examples=300, deadline=None)
def test_frame_recovered_from_garbage_in_any_pieces(pre, kind, seq, body, post, piece):
    stream = pre + P.encode_frame(kind, seq, body) + post
    dec = P.FrameDecoder()
    got = []
    for i in range(0, len(stream), piece):
        got += dec.feed(stream[i:i + piece])
    assert P.Frame(kind, seq, body) in got


@given(kinds, seqs, bodies, st.data())
@settings(max_examples=500, deadline=None)
def test_corrupted_frame_never_accepted(kind, seq, body, data):
    wire = bytearray(P.encode_frame(kind, seq, body))
    n_edits = data.draw(st.integers(1, 4))
    for _ in range(n_edits):
        op = data.draw(st.sampled_from(["flip", "drop", "insert"]))
        i = data.draw(st.integers(1, len(wire) - 2))  # inside the delimiters
        if op == "flip":
            wire[i] ^= data.draw(st.integers(1, 255))
        elif op == "drop" and len(wire) > 3:
            del wire[i]
        else:
            wire.insert(i, data.draw(st.integers(0, 255)))
    original = P.Frame(kind, seq, body)
    for fr in P.FrameDecoder().feed(bytes(wire)):
        assert fr == original  # only an edit that undid itself can yield a frame


def test_oversize_is_dropped_and_decoder_recovers():
    dec = P.FrameDecoder()
    assert dec.feed(b"\x01" * (P.MAX_ENCODED + 10)) == []
    assert dec.pending == 0
    good = P.request(5, "get_info")
    assert [f.seq for f in dec.feed(b"\x00" + good)] == [5]
    assert dec.stats.oversize == 1


def test_messages_and_limits():
    fr = P.FrameDecoder().feed(P.request(9, "set_params", {"params": {"buffer_ms": 150}}))[0]
    assert fr.message() == {"m": "set_params", "a": {"params": {"buffer_ms": 150}}}
    err = P.FrameDecoder().feed(P.response_error(9, "out_of_range", "no"))[0].message()
    assert err == {"ok": False, "e": "out_of_range", "msg": "no"}
    with pytest.raises(P.ProtocolError, match="exceeds"):
        P.encode_body({"d": b"x" * P.MAX_BODY})
    with pytest.raises(P.ProtocolError):
        P.decode_body(b"\x01")  # CBOR integer, not a map
