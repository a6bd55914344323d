"""The whole training pipeline end to end on the smoke config (CI): prepare -> teacher ->
student -> export (real int8 TFLite via litert-torch) -> load in the runtime's interpreter ->
evaluate, through the ``train-denoiser`` CLI. A tiny, useless model; the point is that every
stage runs, writes what it promises and the exported model matches PyTorch."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("litert_torch")

from training.cli import cli  # noqa: E402


@pytest.fixture(scope="module")
def work(tmp_path_factory, shared_data):
    return tmp_path_factory.mktemp("smoke")


def _run(args):
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


@pytest.mark.slow
def test_pipeline_end_to_end(work):
    base = ["-c", "smoke", "-w", str(work), "-q"]
    out = json.loads(_run(["prepare", *base, "--json"]).stdout)
    assert out["speech"]["train"]["speakers"] > out["speech"]["test"]["speakers"] > 0
    m = json.loads((work / "manifest.json").read_text())
    split_of = {}
    for e in m["speech"]:  # speaker-disjoint
        assert split_of.setdefault(e["speaker"], e["split"]) == e["split"]

    t = json.loads(_run(["teacher", *base, "--json"]).stdout)
    assert len(t["weights"]) == 3 and abs(sum(t["weights"]) - 1) < 1e-3
    assert (work / "teacher.pt").is_file()

    s = json.loads(_run(["student", *base, "--json"]).stdout)
    assert {"adaptive", "mref"} <= set(s) and s["params"] <= 100_000

    e = json.loads(_run(["export", *base, "--json"]).stdout)
    assert e["float32"]["max_abs_err"] < 1e-3  # float TFLite == PyTorch
    assert e["int8"]["max_abs_err"] < 0.25 and e["int8"]["mean_abs_err"] < 0.03

    from edge.denoise import Denoiser
    from edge.model import StepModel

    model = StepModel(work / "export" / "smoke.tflite")
    md = model.metadata
    assert md.quantization == "int8" and md.front_end["n_bins"] == 161
    assert model.check_test_vector() <= 0.05
    x = np.random.default_rng(0).standard_normal(16_000).astype(np.float32) * 0.1
    y = Denoiser(model).process(x)
    assert y.shape == x.shape and np.all(np.isfinite(y))

    ev = json.loads(_run(["evaluate", *base, "--json"]).stdout)
    assert {"noisy", "teacher", "student_int8"} <= set(ev["systems"])
    assert all((work / "eval").glob("spectrogram_*.png"))
    assert len(list((work / "eval").glob("spectrogram_*.png"))) >= 1
    metrics = json.loads((work / "metrics.json").read_text())
    assert {"teacher", "student", "export", "evaluate"} <= set(metrics)


@pytest.mark.slow
def test_resume_skips_finished_steps(work):
    """A finished student checkpoint is not retrained: re-running resumes at the last step."""
    assert (work / "students.pt").is_file(), "runs after test_pipeline_end_to_end"
    before = (work / "students.pt").stat().st_mtime_ns
    res = CliRunner().invoke(cli, ["student", "-c", "smoke", "-w", str(work), "-q"],
                             catch_exceptions=False)
    assert res.exit_code == 0
    assert (work / "students.pt").stat().st_mtime_ns == before  # nothing retrained


def test_errors_are_one_line(tmp_path):
    res = CliRunner().invoke(cli, ["teacher", "-c", "smoke", "-w", str(tmp_path), "-q"])
    assert res.exit_code == 1 and "Error:" in res.output and "prepare" in res.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[student]\nhiden = 3\n")
    res = CliRunner().invoke(cli, ["prepare", "-c", str(bad), "-w", str(tmp_path)])
    assert res.exit_code == 1 and "unknown key(s) hiden" in res.output
