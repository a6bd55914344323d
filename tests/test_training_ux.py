"""Training UX (issue 21): config overrides on the command line, loader workers that give
the same batches, run folders with TensorBoard curves, -q, the evaluate table, and
``train-denoiser faults`` leaving the shipped model alone without --ship."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

torch = pytest.importorskip("torch")

from sandbox import need  # noqa: E402

from training.cli import cli  # noqa: E402
from training.config import ConfigError, load_config, to_toml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_overrides_set_any_key_and_are_type_checked():
    cfg = load_config("default", ["student.steps=3000", "data.snr_db=[-5, 20]",
                                  "export.name=mine", "student.out_floor=0.02", "seed=7"])
    assert cfg.student.steps == 3000 and cfg.data.snr_db == (-5, 20)
    assert (cfg.export.name, cfg.student.out_floor, cfg.seed) == ("mine", 0.02, 7)
    assert load_config("default").student.steps != 3000  # the file itself is untouched
    for bad, why in (("student.stepz=3", "unknown key(s) stepz"),
                     ("student.steps=3.5", "steps must be int, got float"),
                     ("student.steps=many", "steps must be int, got str"),
                     ("nosuch.key=1", "unknown key(s) nosuch"),
                     ("student=1", "[student] must be a table"),
                     ("student.steps", "expected KEY=VALUE"),
                     ("student.p_state_reset=2.0", "p_state_reset is a share")):
        with pytest.raises(ConfigError) as e:
            load_config("smoke", [bad])
        assert why in str(e.value), (bad, str(e.value))


def test_override_errors_are_one_line_on_the_cli(tmp_path):
    res = CliRunner().invoke(cli, ["prepare", "-c", "smoke", "-w", str(tmp_path),
                                   "student.stepz=3"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.strip().splitlines() == [res.output.strip()]
    assert "unknown key(s) stepz" in res.output


@pytest.mark.parametrize("name", ["default", "smoke", "quick", "v2"])
def test_config_as_run_reads_back_the_same(tmp_path, name):
    cfg = load_config(name, ["student.steps=11"])
    p = tmp_path / "c.toml"
    p.write_text(to_toml(cfg))
    assert load_config(p) == cfg


@pytest.fixture
def tiny_corpus(tmp_path) -> Path:
    """Three speakers of noise-like 'speech' and two noises: enough for a Mixer."""
    rng = np.random.default_rng(0)
    for spk in ("a", "b", "c", "d", "e"):
        for i in range(2):
            p = tmp_path / "speech" / spk / f"{i}.wav"
            p.parent.mkdir(parents=True, exist_ok=True)
            sf.write(p, (0.1 * rng.standard_normal(24_000)).astype(np.float32), 16_000)
    for i in range(3):
        p = tmp_path / "noise" / "n" / f"{i}.wav"
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(p, (0.1 * rng.standard_normal(20_000)).astype(np.float32), 16_000)
    return tmp_path


def test_loader_workers_give_the_same_batches_as_the_training_process(tiny_corpus):
    from training.data import Mixer, make_manifest
    from training.dist import Dist
    from training.loader import Runtime, batches

    cfg = load_config("smoke", [f"data.data_root={tiny_corpus}"])
    mixer = Mixer(make_manifest(cfg.data, tiny_corpus, 0), "train", cfg.data)
    old = [mixer.batch(np.random.default_rng([0, 3, s]), 2) for s in range(2, 5)]  # as before
    for workers in (0, 2):
        got = list(batches(mixer, 0, 3, 2, 2, 5, Runtime(workers=workers)))
        assert len(got) == 3
        for a, b in zip(old, got, strict=True):
            assert all(np.array_equal(a[k], b[k]) for k in a)
    r1 = list(batches(mixer, 0, 3, 2, 2, 3, Runtime(Dist(rank=1, world=2), workers=1)))
    assert not np.array_equal(r1[0]["noisy"], old[0]["noisy"])  # rank 1: other mixtures


def test_run_folder_holds_config_commit_metrics_curves(tmp_path):
    from training.runs import Run

    cfg = load_config("smoke", ["student.steps=9"])
    run = Run(tmp_path, "student", cfg, ["student.steps=9"])
    for step in range(1, 6):
        run.scalars("student", step, {"loss_adaptive": 1.0 / step, "lr": 0.001})
    (tmp_path / "students.pt").write_bytes(b"ck")
    run.finish({"chosen": "adaptive"}, ("students.pt", "student.pt"))
    p = run.path
    assert p.parent == tmp_path / "runs" and p.name.endswith("-student")
    assert load_config(p / "config.toml") == cfg
    meta = json.loads((p / "meta.json").read_text())
    assert meta["overrides"] == ["student.steps=9"] and meta["world_size"] == 1
    if (ROOT / ".git").exists():  # a git checkout (not an unpacked sdist)
        assert len(meta["commit"]) == 40 and isinstance(meta["dirty"], bool)
    assert json.loads((p / "metrics.json").read_text()) == {"chosen": "adaptive"}
    assert (p / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (p / "checkpoints" / "students.pt").read_bytes() == b"ck"
    assert Run(tmp_path, "student", cfg).path != p  # a second run gets its own folder
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        need(False, "tensorboard not installed (the train extra)")
    ev = EventAccumulator(str(p / "tb"))
    ev.Reload()
    assert [s.value for s in ev.Scalars("student/loss_adaptive")] == pytest.approx(
        [1.0, 0.5, 1 / 3, 0.25, 0.2])


def test_quiet_silences_what_libraries_write_to_stderr(capfd):
    import logging
    import warnings

    from training.commands import _silenced

    with _silenced(True):
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        warnings.warn("a library's warning", UserWarning, stacklevel=1)
        logging.getLogger("absl").warning("a library's log line")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


def test_evaluate_prints_a_table():
    from training.commands import eval_table

    row = {"all": {"pesq": 1.5, "stoi": 0.8, "si_sdr": 8.0, "si_sdr_i": 3.0},
           "snr": {"+0": {"si_sdr_i": 5.0}, "+10": {"si_sdr_i": 1.0}}}
    t = eval_table({"mixtures": 4, "systems": {"noisy": row, "student_int8": row},
                    "spectrograms": []})
    lines = t.splitlines()
    assert lines[2].startswith("| system | PESQ | STOI | SI-SDR | SI-SDRi | SI-SDRi +0 dB")
    assert lines[4] == "| noisy | 1.500 | 0.800 | 8.00 | +3.00 | +5.00 | +1.00 |"


def test_faults_training_never_overwrites_the_shipped_model_without_ship(tmp_path,
                                                                        monkeypatch):
    from training import faults_train

    shipped = ROOT / "edge" / "models" / "faults.tflite"
    before = shipped.stat().st_mtime_ns
    res = CliRunner().invoke(cli, ["faults", "-o", str(shipped)])
    assert res.exit_code == 1 and "pass --ship" in res.output and "Traceback" not in res.output
    assert shipped.stat().st_mtime_ns == before

    seen = []

    def fake_run(cfg, out, report_dir, log, checkpoint, d):  # no 8-minute training here
        seen.append(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b"model")
        out.with_suffix(".json").write_text("{}")
        return {"macro_f1": 0.9, "frame_accuracy": 0.9, "event_macro_f1": 0.9,
                "float_macro_f1": 0.9}

    monkeypatch.setattr(faults_train, "run", fake_run)
    res = CliRunner().invoke(cli, ["faults", "--report-dir", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert seen == [tmp_path / "r" / "faults.tflite"]  # the default is the report folder
    assert shipped.stat().st_mtime_ns == before

    fake_ship = tmp_path / "models" / "faults.tflite"
    fake_ship.parent.mkdir()
    monkeypatch.setattr(faults_train, "SHIPPED", fake_ship)
    res = CliRunner().invoke(cli, ["faults", "--report-dir", str(tmp_path / "r"), "--ship"])
    assert res.exit_code == 0, res.output
    assert fake_ship.read_bytes() == b"model" and json.loads(res.output)["shipped"]
    assert shipped.stat().st_mtime_ns == before
