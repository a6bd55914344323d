"""Fuzz tests (issue 18): the parameter validator, the agent's parameter messages, the
telemetry schema and the bundle reader take thousands of generated inputs each; the only
exceptions are the documented error types, and a refused input changes no state.

Derandomized (the same inputs every run) and sized to run in about 20 s on a loaded
2-core machine."""

from __future__ import annotations

import io
import json
import math
import tarfile
import tempfile
import time
from pathlib import Path

import pytest
from fakes import RecordingStream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge import protocol as P
from edge.params import RANGES, ParamsError, Telemetry, TransportParams

FUZZ = settings(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
NAMES = ("bitrate_kbps", "protocol", "buffer_ms", "share", "fec", "loss_hint_pct")

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-10**30, 10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 1),
    st.integers(0, 600), st.text(max_size=30), st.binary(max_size=20),
    st.sampled_from(["udp", "tcp", "UDP", "it's", "1 --to udp://x", "64", "nan", "\n"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=4)
keys = st.one_of(st.sampled_from(NAMES), st.text(max_size=12), st.integers(), st.none())
param_maps = st.dictionaries(keys, values, max_size=6)


def _valid(p: TransportParams) -> None:
    """The invariants every TransportParams must hold."""
    for name, (kind, lo, hi, lo_open) in RANGES.items():
        v = getattr(p, name)
        assert type(v) is kind and math.isfinite(v)
        assert (lo < v if lo_open else lo <= v) and v <= hi
    assert p.protocol in ("udp", "tcp") and type(p.fec) is bool
    assert TransportParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p


@settings(FUZZ, max_examples=1000)
@given(param_maps)
def test_validator_accepts_only_valid_params_and_raises_only_params_error(d):
    try:
        p = TransportParams.from_dict({**TransportParams().to_dict(), **d}
                                      if all(isinstance(k, str) for k in d) else d)
    except ParamsError as e:
        assert "\n" not in str(e) and len(str(e)) < 400
        return
    _valid(p)


@settings(FUZZ, max_examples=500)
@given(st.dictionaries(st.sampled_from([*Telemetry.RANGES, "x"]), values, max_size=10))
def test_telemetry_schema_raises_only_params_error(d):
    try:
        t = Telemetry.parse(d)
    except ParamsError:
        return
    for name, (kind, lo, hi) in Telemetry.RANGES.items():
        v = getattr(t, name)
        assert type(v) is kind and lo <= v <= hi


@settings(FUZZ, max_examples=500)
@given(st.one_of(st.binary(max_size=300),
                 st.builds(lambda d: json.dumps(d, default=repr).encode(),
                           st.dictionaries(st.sampled_from(["telemetry", "params", "t"]),
                                           values, max_size=3))))
def test_telemetry_lines_parse_or_raise_value_error(line):
    from host.calibrate import Record, parse_record

    try:
        r = parse_record(line)
    except ValueError as e:
        assert "\n" not in str(e)
        return
    assert r is None or isinstance(r, Record)


# ---------------------------------------------------------------- the agent's parameters
def _Recorder():  # noqa: N802 - reads as the class it returns
    return RecordingStream("prog --b {bitrate_kbps} --p {protocol} --f {fec} "
                           "--s {share} --buf {buffer_ms} --l {loss_hint_pct}")


DOCUMENTED = {"out_of_range", "bad_args", "no_pending", "not_in_trial", "bad_request", "io"}
requests = st.one_of(
    st.tuples(st.just("set_params"), st.one_of(
        st.fixed_dictionaries({"params": param_maps}),
        st.dictionaries(st.sampled_from(["params", "x"]), values, max_size=2))),
    st.tuples(st.just("apply"), st.one_of(
        st.fixed_dictionaries({"timeout_s": st.one_of(st.just(0), st.floats(0, 0.02),
                                                      values)}),
        st.just({}))),
    st.tuples(st.sampled_from(["confirm", "revert", "get_params", "start_stream"]),
              st.just({})),
)


@settings(FUZZ, max_examples=150)
@given(st.lists(requests, min_size=1, max_size=12))
def test_agent_parameter_messages_never_fail_internally_nor_corrupt_state(reqs):
    from edge.agent import Agent

    with tempfile.TemporaryDirectory() as d:
        stream = _Recorder()
        ag = Agent("loop://", state_dir=d, log=lambda m: None, stream=stream)
        for seq, (method, args) in enumerate(reqs, 1):
            fr = P.FrameDecoder().feed(P.request(seq, method, args))[0]
            r = P.FrameDecoder().feed(ag.handle_frame(fr))[0].message()
            assert r["ok"] or r["e"] in DOCUMENTED, r
            ag.tick()
            _valid(ag.active)
            assert ag.pending is None or isinstance(ag.pending, TransportParams)
            saved = Path(d, "params.json")
            if saved.exists():  # what a restart would load is what is active (or reverts)
                s = json.loads(saved.read_text())
                assert TransportParams.from_dict(s["active"]) == ag.active
                prev = ag.previous.to_dict() if ag.previous else None
                assert s["previous"] == prev
        for argv in stream.runs:  # no value ever added or split an argument
            assert len(argv) == 13 and argv[0] == "prog"
            assert argv[4] in ("udp", "tcp") and argv[6] in ("True", "False")


# ------------------------------------------------------------------------- bundle reader
@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """A signed bundle of the shipped model, its bytes, and the trusted key table."""
    from edge.model import default_model_path
    from edge.slots import load_public_key
    from host.bundle import build, keygen

    d = tmp_path_factory.mktemp("fuzzb")
    key, pub, kid = keygen(d / "k")
    out = d / "b.hlb"
    build(default_model_path(), key, out, version="1.0.0")
    return out.read_bytes(), {kid: load_public_key(pub.read_bytes())}


def _read(data: bytes, trusted: dict):
    from edge.slots import FlashError, read_bundle

    with tempfile.NamedTemporaryFile(suffix=".hlb") as f:
        f.write(data)
        f.flush()
        try:
            return read_bundle(f.name, trusted, max_bytes=1 << 20)
        except FlashError as e:
            assert e.code and "\n" not in str(e)
            return None


@settings(FUZZ, max_examples=500)
@given(st.data())
def test_a_damaged_bundle_is_refused_with_flash_error_only(signed, data):
    good, trusted = signed
    kind = data.draw(st.sampled_from(["flip", "block", "truncate", "random", "extend"]))
    b = bytearray(good)
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(b) - 1))
            b[i] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "block":
        i = data.draw(st.integers(0, len(b) - 1))
        blob = data.draw(st.binary(min_size=1, max_size=600))
        b[i:i + len(blob)] = blob
    elif kind == "truncate":
        b = b[:data.draw(st.integers(0, len(b) - 1))]
    elif kind == "extend":
        b += data.draw(st.binary(min_size=1, max_size=2000))
    else:
        b = bytearray(data.draw(st.binary(max_size=3000)))
    out = _read(bytes(b), trusted)
    if out is not None:  # only bytes outside every checked member (padding) changed
        with tarfile.open(fileobj=io.BytesIO(good)) as tf:
            assert out.manifest_bytes == tf.extractfile("manifest.json").read()


def _tar(entries: list[tuple[str, bytes, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.PAX_FORMAT) as tf:
        for name, data, kind in entries:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime = len(data), int(time.time())
            if kind == b"sym":
                ti.type, ti.linkname, ti.size = tarfile.SYMTYPE, "../../etc/passwd", 0
            elif kind == b"dir":
                ti.type, ti.size = tarfile.DIRTYPE, 0
            tf.addfile(ti, io.BytesIO(data) if ti.size else None)
    return buf.getvalue()


entry_names = st.one_of(st.sampled_from(["manifest.json", "manifest.sig", "model.tflite",
                                         "model.json", "config.json", "../x", "/etc/x",
                                         "a/b", "..", ".hidden", "C:x", "x" * 200]),
                        st.text(min_size=1, max_size=20))


@settings(FUZZ, max_examples=300)
@given(st.data())
def test_a_forged_archive_is_refused_with_flash_error_only(signed, data):
    good, trusted = signed
    with tarfile.open(fileobj=io.BytesIO(good)) as tf:
        real = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}
    entries = []
    for _ in range(data.draw(st.integers(0, 7))):
        name = data.draw(entry_names)
        content = data.draw(st.one_of(st.sampled_from(list(real.values())),
                                      st.binary(max_size=200),
                                      st.builds(lambda v: json.dumps(v, default=repr).encode(),
                                                values)))
        entries.append((name, content, data.draw(st.sampled_from([b"reg"] * 6 + [b"sym",
                                                                               b"dir"]))))
    try:
        blob = _tar(entries)
    except (ValueError, UnicodeEncodeError, tarfile.TarError):
        return  # a name tarfile itself cannot write
    assert _read(blob, trusted) is None or {n for n, _, _ in entries} >= set(real)


def test_a_refused_bundle_leaves_the_store_unchanged(signed, tmp_path):
    """Zero state corruption: 200 damaged bundles offered to an initialised store, which
    then still installs the good one."""
    import random

    from edge.slots import FlashError, SlotStore

    good, trusted = signed
    store = SlotStore(tmp_path / "dev")
    pub = next(iter(trusted.values()))
    from edge.slots import public_raw

    store.init([public_raw(pub)])

    def fingerprint():
        return sorted((str(p.relative_to(store.root)), p.read_bytes() if p.is_file() else b"")
                      for p in store.root.rglob("*") if p.name != ".lock")

    before = fingerprint()
    # the signed contents: every byte is under the signature or a hash. Not the tar headers'
    # mtime/owner fields, nor manifest.sig's informational fields ("public_key"; a damaged
    # "alg" key falls back to ed25519): a flip there is harmless and may install (the v2.0.0
    # model moved the random flips onto them)
    with tarfile.open(fileobj=io.BytesIO(good)) as tf:
        regions = [(m.offset_data, m.offset_data + m.size) for m in tf.getmembers()
                   if m.size and m.name != "manifest.sig"]
    rng = random.Random(0)
    bad = tmp_path / "bad.hlb"
    for _ in range(200):
        b = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            lo, hi = rng.choice(regions)
            b[rng.randrange(lo, hi)] ^= 1 << rng.randrange(8)
        bad.write_bytes(bytes(b))
        with pytest.raises(FlashError):
            store.install(bad)
        assert fingerprint() == before
    store.install(tmp_path / "good.hlb" if (tmp_path / "good.hlb").write_bytes(good) else bad)
    assert store.read_pointer()["state"] == "trial"
