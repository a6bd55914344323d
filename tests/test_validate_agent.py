"""Issue 18 items 3 and 4 on the device: transport parameters are checked at one boundary
(type and range), the stream command is an argv list, ``apply`` is all or nothing, and the
state files are checked again when the agent reads them."""

from __future__ import annotations

import errno
import json
import sys
import time

import pytest
from fakes import RecordingStream

from edge import protocol as P
from edge.agent import Agent, CommandStream
from edge.errors import HushlinkError
from edge.params import ParamsError, TransportParams


def _agent(tmp_path, **kw) -> Agent:
    return Agent("loop://", state_dir=tmp_path / "state", log=lambda m: None, **kw)


def _ask(agent: Agent, method: str, args: dict | None = None, seq=[0]) -> dict:  # noqa: B006
    seq[0] += 1
    fr = P.FrameDecoder().feed(P.request(seq[0] % 60000, method, args or {}))[0]
    return P.FrameDecoder().feed(agent.handle_frame(fr))[0].message()


_Recorder = RecordingStream


@pytest.mark.parametrize("value", ["1 --to udp://203.0.113.9:5004 --extra", "it's", b"\x00",
                                   1, None, [True], {"x": 1}])
def test_a_non_bool_fec_is_refused_and_nothing_is_staged(tmp_path, value):
    """Before: a text fec was staged, applied and formatted into --stream-cmd, where shlex
    split it into extra arguments (or, for "it's", failed on every later start)."""
    stream = _Recorder("prog --fec {fec} --bitrate {bitrate_kbps}")
    ag = _agent(tmp_path, stream=stream)
    r = _ask(ag, "set_params", {"params": {"fec": value}})
    assert not r["ok"] and r["e"] == "out_of_range" and "fec must be true or false" in r["msg"]
    assert _ask(ag, "apply", {"timeout_s": 0})["e"] == "no_pending"
    assert _ask(ag, "start_stream")["ok"]
    assert stream.runs == [["prog", "--fec", "True", "--bitrate", "64"]]


@pytest.mark.parametrize("change, words", [
    ({"bitrate_kbps": "64 --x"}, "must be an integer"),
    ({"bitrate_kbps": 64.0}, "must be an integer"),
    ({"bitrate_kbps": True}, "must be an integer"),
    ({"share": float("nan")}, "not a finite number"),
    ({"share": float("inf")}, "not a finite number"),
    ({"share": "0.5"}, "must be a number"),
    ({"buffer_ms": 10**400}, "out of range 100..500"),
    ({"protocol": b"udp"}, "must be one of udp, tcp"),
    ({"loss_hint_pct": -1}, "out of range 0..100"),
])
def test_every_field_is_type_and_range_checked(change, words):
    with pytest.raises(ParamsError, match=words):
        TransportParams.from_dict({**TransportParams().to_dict(), **change})


def test_a_text_bitrate_says_what_is_wrong_not_pythons_comparison_error():
    """Item 11: before, ``'<=' not supported between instances of 'int' and 'str'``."""
    with pytest.raises(ParamsError) as e:
        TransportParams.from_dict({"bitrate_kbps": "64"})
    assert str(e.value) == "bitrate_kbps must be an integer, got str '64'"


def test_stream_command_values_stay_one_argument_each():
    """The template is split once; a value is substituted inside its word, never re-split."""
    cmd = CommandStream("send --to 'udp://h:1' --b {bitrate_kbps} --share={share} {protocol}")
    argv = cmd.argv_for(TransportParams(bitrate_kbps=80, share=0.5, protocol="tcp"))
    assert argv == ["send", "--to", "udp://h:1", "--b", "80", "--share=0.5", "tcp"]


@pytest.mark.parametrize("template, words", [("prog {colour}", "unknown placeholder"),
                                             ("prog {}", "unknown placeholder"),
                                             ("prog 'unclosed", "closing quotation"),
                                             ("   ", "empty")])
def test_a_bad_stream_command_is_an_error_at_start(template, words):
    with pytest.raises(HushlinkError, match=words):
        CommandStream(template)


def test_stream_command_runs_as_an_argv_list(tmp_path):
    """The real subprocess gets exactly the template's words."""
    out = tmp_path / "argv.json"
    script = tmp_path / "show.py"
    script.write_text("import json, os, sys\n"
                      f"open({str(out)!r} + '.tmp', 'w').write(json.dumps(sys.argv[1:]))\n"
                      f"os.replace({str(out)!r} + '.tmp', {str(out)!r})\n")
    cmd = CommandStream(f"{sys.executable} {script} --fec {{fec}} --share {{share}}")
    cmd.start(TransportParams(fec=False, share=0.25))
    deadline = time.monotonic() + 20
    while not out.exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    cmd.stop()
    assert json.loads(out.read_text()) == ["--fec", "False", "--share", "0.25"]


def test_apply_is_all_or_nothing_when_the_state_cannot_be_saved(tmp_path, monkeypatch):
    """Before: the in-memory set changed, then saving failed and apply answered internal."""
    ag = _agent(tmp_path)
    before = ag.active
    saved = (tmp_path / "state" / "params.json").read_bytes() if (
        tmp_path / "state" / "params.json").exists() else None
    assert _ask(ag, "set_params", {"params": {"bitrate_kbps": 96}})["ok"]

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("edge.agent._atomic_write", full)
    r = _ask(ag, "apply", {"timeout_s": 5})
    assert r["e"] == "io" and "nothing changed" in r["msg"]
    assert ag.active == before and ag.previous is None and ag.trial_deadline is None
    assert ag.pending == before.replace(bitrate_kbps=96)  # still staged: apply may be retried
    p = (tmp_path / "state" / "params.json")
    assert (p.read_bytes() if p.exists() else None) == saved
    monkeypatch.undo()
    r = _ask(ag, "apply", {"timeout_s": 5})
    assert r["ok"] and ag.active.bitrate_kbps == 96 and ag.trial_deadline is not None


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), -1.0, 3601, "30", True])
def test_apply_refuses_a_timeout_that_would_never_revert(tmp_path, timeout):
    ag = _agent(tmp_path)
    assert _ask(ag, "set_params", {"params": {"buffer_ms": 300}})["ok"]
    r = _ask(ag, "apply", {"timeout_s": timeout})
    assert not r["ok"] and r["e"] in ("out_of_range", "bad_args")
    assert ag.active == TransportParams() and ag.trial_deadline is None


@pytest.mark.parametrize("saved", [
    {"active": {"fec": "it's"}, "previous": None},
    {"active": {"bitrate_kbps": "64 --extra"}, "previous": None},
    {"active": {"share": float("nan")}, "previous": None},
    {"active": {"buffer_ms": 1e308}, "previous": None},
    {"active": None},
    [1, 2],
    "text",
])
def test_a_bad_state_file_falls_back_to_the_defaults(tmp_path, saved):
    """Before: ``fec: "it's"`` in params.json loaded, and every later start_stream failed."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "params.json").write_text(json.dumps(saved))
    stream = _Recorder("prog {fec} {bitrate_kbps} {share} {buffer_ms}")
    ag = _agent(tmp_path, stream=stream)
    assert ag.active == TransportParams()
    assert _ask(ag, "start_stream")["ok"]
    assert stream.runs == [["prog", "True", "64", "1.0", "200"]]


def test_get_params_reports_the_ranges_of_edge_params(tmp_path):
    from edge.params import ranges

    r = _ask(_agent(tmp_path), "get_params")["r"]
    assert r["ranges"] == ranges() and r["ranges"]["share"] == [0.0, 1.0]
