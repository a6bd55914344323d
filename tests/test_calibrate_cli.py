"""host-calibrate collect → tune → apply → report against a real agent over a socat pty
pair. The device's telemetry file is written by a simulated link whose loss, late packets
and latency respond to the parameters the agent has active (read from its state dir), so
the loop is closed; the real-transport version is tests/test_calibrate_e2e.py."""

from __future__ import annotations

import json
import os
import random
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_link_util import AgentProc, PtyPair

from edge.params import Telemetry, TransportParams
from host import calibrate
from host.cli import cli

COND = calibrate.Condition(latency_ms=60, loss_pct=6, jitter_ms=30, capacity_kbps=150,
                           snr_db=25)


def _simulate(state: os.PathLike, out: os.PathLike, stop: threading.Event) -> None:
    model = calibrate.LinkModel((COND,))
    rng = random.Random(0)
    t = 1_000.0
    with open(out, "a") as f:
        while not stop.wait(0.02):
            try:
                saved = json.loads(Path(state, "params.json").read_text())
                p = TransportParams.from_dict(saved["active"])
            except (OSError, ValueError):
                p = TransportParams()
            m = model.predict(p, COND)
            t += 1.0
            rec = Telemetry(t=t, latency_ms=m["latency_ms"] * rng.uniform(0.95, 1.05),
                            loss_pct=min(100.0, 100 * m["lost"] * rng.uniform(0.8, 1.2)),
                            jitter_ms=COND.jitter_ms * rng.uniform(0.9, 1.1),
                            bandwidth_util=min(1.5, p.bitrate_kbps / (p.share * 150)),
                            snr_db=25.0, late=round(50 * m["late"] * rng.uniform(0.8, 1.2)),
                            bitrate_kbps=p.bitrate_kbps)
            f.write(json.dumps(rec.to_dict()) + "\n")
            f.flush()


@pytest.fixture
def device(tmp_path):
    pair = PtyPair(tmp_path, f"c{os.getpid()}")
    state, telem = tmp_path / "state", tmp_path / "telemetry.jsonl"
    state.mkdir()
    stop = threading.Event()
    th = threading.Thread(target=_simulate, args=(state, telem, stop), daemon=True)
    th.start()
    agent = AgentProc(pair.a, state, "--telemetry", str(telem))
    yield pair.b
    stop.set()
    th.join()
    agent.stop()
    pair.stop()


def test_collect_tune_apply_report(device, tmp_path):
    run = CliRunner().invoke
    tel, strat, app = (str(tmp_path / n) for n in ("t.jsonl", "s.json", "a.json"))
    r = run(cli, ["collect", device, "--duration", "3", "--sweep", "3", "--settle", "0.2",
                  "-o", tel])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in Path(tel).read_text().splitlines()]
    assert len({json.dumps(x["params"]) for x in lines}) == 3 and len(lines) > 50
    r = run(cli, ["tune", tel, "-o", strat, "--pop", "12", "--generations", "6", "--seed", "1"])
    assert r.exit_code == 0, r.output
    s = json.loads(Path(strat).read_text())
    assert s["predicted_cost"] < s["default_predicted_cost"]
    r = run(cli, ["apply", device, strat, "--measure", "1", "--settle", "0.3", "-o", app])
    assert r.exit_code == 0, r.output
    res = json.loads(Path(app).read_text())
    assert res["confirmed"] and res["after"]["cost"] < res["before"]["cost"]
    assert res["after"]["params"] == s["params"]
    r = run(cli, ["report", "-t", tel, "-s", strat, "-a", app, "-o", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    md = (tmp_path / "rep" / "report.md").read_text()
    for png in ("clusters.png", "bins.png", "fitness.png", "before_after.png"):
        assert (tmp_path / "rep" / png).stat().st_size > 1000 and png in md
    assert "<table" in (tmp_path / "rep" / "report.html").read_text()


def test_tune_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    r = CliRunner().invoke(cli, ["tune", str(bad)])
    assert r.exit_code == 1 and r.output.startswith("Error:") and "bad.jsonl" in r.output
    assert "line 1 (not JSON" in r.output  # (issue 18: bad lines are skipped and named)


def test_tune_chooses_clusters_and_bins_and_says_why(tmp_path):
    """Issue 19 item 4: without --clusters/--bins, tune picks them by silhouette and prints
    why (stderr); the flags still override."""
    from test_calibrate import _records

    tel = tmp_path / "t.jsonl"
    tel.write_text("".join(json.dumps({"telemetry": r.telemetry.to_dict(),
                                       "params": r.params.to_dict()}) + "\n"
                           for r in _records()))
    r = CliRunner().invoke(cli, ["tune", str(tel), "-o", str(tmp_path / "s.json"), "--pop",
                                 "8", "--generations", "1"])
    assert r.exit_code == 0, r.output
    assert "clusters: 3 (silhouette" in r.output and "bins: " in r.output
    s = json.loads((tmp_path / "s.json").read_text())
    assert len(s["clusters"]) == 3 and s["chosen"]["clusters"]["scores"]["3"] > 0.5
    r = CliRunner().invoke(cli, ["tune", str(tel), "-o", str(tmp_path / "s2.json"), "--pop",
                                 "8", "--generations", "1", "--clusters", "2", "--bins", "6"])
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "s2.json").read_text())
    assert len(s["clusters"]) == 2 and len(s["bin_edges"]["latency_ms"]) == 7
    assert "clusters: 2 (given)" in r.output
