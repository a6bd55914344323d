"""Issue 18 item 7: ``host-calibrate tune`` and ``report`` check their inputs against a
schema. Malformed telemetry lines are skipped and named by line number; impossible values
(negative latency, 1e308, text) are malformed, not a link condition; a malformed strategy
or apply file is one ``Error:`` line, never a traceback."""

from __future__ import annotations

import json
import random

import pytest
from click.testing import CliRunner

from edge.params import Telemetry, TransportParams
from host import calibrate
from host.cli import cli

GOOD = 60


def _good_lines(n: int = GOOD, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        p = TransportParams(bitrate_kbps=rng.choice([64, 96, 128]), buffer_ms=200)
        t = Telemetry(t=1000.0 + i, latency_ms=rng.uniform(30, 90), loss_pct=rng.uniform(0, 8),
                      jitter_ms=rng.uniform(2, 30), bandwidth_util=rng.uniform(0.3, 0.9),
                      snr_db=rng.uniform(15, 30), late=rng.randint(0, 3),
                      bitrate_kbps=p.bitrate_kbps)
        out.append(json.dumps({"telemetry": t.to_dict(), "params": p.to_dict()}))
    return out


def _bad(**change) -> str:
    base = json.loads(_good_lines(1)[0])
    base["telemetry"].update(change)
    return json.dumps(base)


BAD_LINES = {  # line content -> words of the reason
    "null": "a JSON NoneType",
    "[1, 2, 3]": "a JSON list",
    '"text"': "a JSON str",
    "{not json": "not JSON",
    _bad(latency_ms="40"): "latency_ms must be a number",
    _bad(latency_ms=1e308): "latency_ms=1e+308 is out of range",
    _bad(latency_ms=-1e7): "latency_ms=-10000000.0 is out of range",
    _bad(loss_pct=-5): "loss_pct=-5.0 is out of range 0..100",
    _bad(jitter_ms=True): "jitter_ms must be a number",
    _bad(late=-3): "late=-3 is out of range",
    json.dumps({"telemetry": {"t": 1.0}}): "lacks 'latency_ms'",
    json.dumps({"telemetry": json.loads(_good_lines(1)[0])["telemetry"],
                "params": {"fec": "1 --x"}}): "fec must be true or false",
    "[" * 100_000: "nested too deeply",
}


def _write(path, lines: list[str], binary: bytes = b"") -> None:
    path.write_bytes("\n".join(lines).encode() + b"\n" + binary)


def test_read_records_skips_and_names_every_malformed_line(tmp_path):
    lines = _good_lines()
    bad_at = {}
    for i, (line, words) in enumerate(BAD_LINES.items()):
        pos = 3 + 4 * i
        lines.insert(pos, line)
        bad_at[pos + 1] = words  # 1-based line numbers
    f = tmp_path / "t.jsonl"
    _write(f, lines, binary=b"\x89PNG\r\n\x1a\n\xff\xfe\x00garbage\n")
    recs, skipped = calibrate.read_records(f)
    assert len(recs) == GOOD
    got = {s.line: s.reason for s in skipped}
    for n, words in bad_at.items():
        assert words in got.pop(n), (n, got)
    assert got and all("not UTF-8" in r or "not JSON" in r for r in got.values())  # binary


def test_tune_skips_bad_lines_with_a_warning_and_a_sane_result(tmp_path):
    """Before: a traceback on the first null/array/text line; with negative telemetry the
    predicted C was -4999999.9985."""
    lines = _good_lines()
    lines[5:5] = ["null", "[1]", _bad(latency_ms=-1e7), _bad(snr_db=1e308)]
    f = tmp_path / "t.jsonl"
    _write(f, lines)
    out = tmp_path / "s.json"
    r = CliRunner().invoke(cli, ["tune", str(f), "-o", str(out), "--pop", "6",
                                 "--generations", "2"])
    assert r.exit_code == 0, r.output
    assert f"warning: {f}: skipped 4 malformed line(s)" in r.output
    assert "line 6 (a JSON NoneType" in r.output and "line 9 (snr_db=1e+308" in r.output
    s = json.loads(out.read_text())
    assert -1.0 <= s["predicted_cost"] < 10  # C >= -w_quality * Q >= -1


@pytest.mark.parametrize("content", [b"\x00\xff" * 500, b"null\n[]\n", b"",
                                     (_bad(latency_ms=-5) + "\n").encode() * 10])
def test_tune_without_valid_records_is_one_error(tmp_path, content):
    f = tmp_path / "t.jsonl"
    f.write_bytes(content)
    r = CliRunner().invoke(cli, ["tune", str(f), "-o", str(tmp_path / "s.json")])
    assert r.exit_code == 1 and r.output.startswith("Error: ") and r.output.count("\n") <= 2
    assert "0 valid record(s)" in r.output and r.exception.__class__ is SystemExit


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    d = tmp_path_factory.mktemp("tuned")
    f = d / "t.jsonl"
    _write(f, _good_lines())
    out = d / "s.json"
    r = CliRunner().invoke(cli, ["tune", str(f), "-o", str(out), "--pop", "6",
                                 "--generations", "2"])
    assert r.exit_code == 0, r.output
    return f, json.loads(out.read_text())


def _broken(strat: dict, path: str, value) -> dict:
    s = json.loads(json.dumps(strat))
    *keys, last = path.split(".")
    node = s
    for k in keys:
        node = node[int(k)] if isinstance(node, list) else node[k]
    if value is KeyError:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return s


@pytest.mark.parametrize("path, value, words", [
    ("clusters", "x", "'clusters' must be a list"),
    ("clusters", [], "no clusters"),
    ("clusters.0.centre", KeyError, "clusters[0] must be an object with a centre"),
    ("clusters.0.centre.latency_ms", "fast", "clusters[0].centre.latency_ms must be a number"),
    ("clusters.0.weight", 7, "clusters[0].weight=7.0 is out of range 0..1"),
    ("clusters.0.bins", [1], "clusters[0].bins must be 5 integers"),
    ("bin_edges.snr_db", [1.0], "bin_edges.snr_db must be a list of at least 2"),
    ("bin_edges.latency_ms.0", float("inf"), "bin_edges.latency_ms[0]=inf is not a finite"),
    ("history", {"a": 1}, "'history' must be a list"),
    ("history.0.best", None, "history[0].best must be a number"),
    ("weights", {"quality": -1}, "weight quality=-1.0 is out of range"),
    ("weights", {"colour": 1}, "weights:"),
    ("params.fec", "yes", "fec must be true or false"),
    ("predicted_cost", "low", "predicted_cost must be a number"),
    ("ga", KeyError, "no 'ga'"),
    ("seed", -1, "'seed' must be a non-negative integer"),
])
def test_report_refuses_a_wrongly_shaped_strategy_in_one_line(tmp_path, tuned, path, value,
                                                              words):
    """Before: KeyError, TypeError or ValueError tracebacks from deep inside the plots."""
    telem, strat = tuned
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_broken(strat, path, value)))  # (inf is written as Infinity)
    r = CliRunner().invoke(cli, ["report", "-t", str(telem), "-s", str(bad), "-o",
                                 str(tmp_path / "r")])
    assert r.exit_code == 1 and r.exception.__class__ is SystemExit, r.output
    assert r.output.count("\n") == 1 and r.output.startswith(f"Error: {bad}: not a strategy")
    assert words in r.output, r.output
    assert not (tmp_path / "r").exists()  # nothing written


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n\x00\x00", b"[]", b"null", b"{}",
                                     b"[" * 100_000])
def test_report_and_apply_refuse_a_non_strategy_file(tmp_path, tuned, content):
    telem, _ = tuned
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    r = CliRunner().invoke(cli, ["report", "-t", str(telem), "-s", str(bad), "-o",
                                 str(tmp_path / "r")])
    assert r.exit_code == 1 and r.output.startswith(f"Error: {bad}: not a strategy"), r.output
    r = CliRunner().invoke(cli, ["apply", "loop://", str(bad)])  # refused before connecting
    assert r.exit_code == 1 and r.output.startswith(f"Error: {bad}: not a strategy"), r.output


@pytest.mark.parametrize("change, words", [
    ({"confirmed": "yes"}, "no boolean 'confirmed'"),
    ({"before": []}, "'before' must be an object"),
    ({"after": {"cost": "x", "telemetry": []}}, "after.cost must be a number"),
    ({"after": {"cost": 1.0, "telemetry": [{"latency_ms": "x"}]}}, "after.telemetry[0]"),
])
def test_report_refuses_a_malformed_apply_result(tmp_path, tuned, change, words):
    telem, strat = tuned
    s = tmp_path / "s.json"
    s.write_text(json.dumps(strat))
    good = {"before": {"cost": 0.1, "telemetry": [{"latency_ms": 40.0}]},
            "after": {"cost": 0.0, "telemetry": [{"latency_ms": None}]}, "confirmed": True}
    ap = tmp_path / "apply.json"
    ap.write_text(json.dumps({**good, **change}))
    r = CliRunner().invoke(cli, ["report", "-t", str(telem), "-s", str(s), "-a", str(ap),
                                 "-o", str(tmp_path / "r")])
    assert r.exit_code == 1 and words in r.output and r.output.count("\n") == 1, r.output
    if "confirmed" in change:  # once: the same file, valid, makes a report
        ap.write_text(json.dumps(good))
        r = CliRunner().invoke(cli, ["report", "-t", str(telem), "-s", str(s), "-a", str(ap),
                                     "-o", str(tmp_path / "r")])
        assert r.exit_code == 0 and (tmp_path / "r" / "before_after.png").exists(), r.output


def test_every_telemetry_field_has_a_range():
    """A field the receiver reports but the schema lacks made every record fail to parse
    (buffer_ms and delay_ms, added by the calibration work, broke `tune`)."""
    import dataclasses

    from edge.params import Telemetry

    assert {f.name for f in dataclasses.fields(Telemetry)} == set(Telemetry.RANGES)
    rec = Telemetry(t=1.0, latency_ms=40, loss_pct=1, jitter_ms=2, bandwidth_util=0.5,
                    snr_db=20, buffer_ms=120, delay_ms=110).to_dict()
    assert Telemetry.parse(rec).delay_ms == 110
