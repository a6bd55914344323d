"""``edge-denoise faults`` and ``train-denoiser faults`` end to end, including bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from edge.cli import cli
from training.faults_synth import Synth, inject

MODEL = os.environ.get("HUSHLINK_FAULT_MODEL")


@pytest.fixture(scope="module")
def faulty_wav(shared_data, tmp_path_factory):
    """5 s of held-out speech at 48 kHz stereo with mains hum from 1.0 to 3.0 s."""
    prog = Synth("test", 5.0, shared=shared_data.parent).programme(np.random.default_rng(3))
    x, _ = inject(prog, "hum", 16_000, 48_000, seed=1, f0=50.0, snr_db=0.0)
    import soxr
    x48 = soxr.resample(x, 16_000, 48_000)
    p = tmp_path_factory.mktemp("faults") / "in.wav"
    sf.write(p, np.stack([x48, x48], axis=1), 48_000, subtype="PCM_16")
    return p


def _args(*a):
    return list(a) + (["--model", MODEL] if MODEL else [])


def test_detect_fix_report(faulty_wav, tmp_path):
    out, js, rep = tmp_path / "fixed.wav", tmp_path / "ev.json", tmp_path / "report.html"
    r = CliRunner().invoke(cli, _args("faults", str(faulty_wav), "--events", str(js), "--fix",
                                      str(out), "--report", str(rep)))
    assert r.exit_code == 0, r.output
    assert "hum" in r.output
    doc = json.loads(js.read_text())
    hum = [e for e in doc["events"] if e["kind"] == "hum"]
    assert hum and abs(hum[0]["params"]["f0_hz"] - 50.0) < 0.1
    assert abs(hum[0]["start_s"] - 1.0) <= 0.05 and abs(hum[0]["end_s"] - 3.0) <= 0.05
    info = sf.info(out)
    assert info.samplerate == 48_000 and info.frames == sf.info(faulty_wav).frames
    assert "<img" in rep.read_text() and (tmp_path / "report_waveform.png").stat().st_size
    assert (tmp_path / "report_spectrogram.png").stat().st_size
    for flag in ("--json", "--print-json"):  # --json prints, as everywhere; the old spelling
        r = CliRunner().invoke(cli, _args("faults", str(faulty_wav), flag))
        assert r.exit_code == 0 and json.loads(r.output)["events"]


@pytest.mark.parametrize("case", ["missing", "not-audio", "same-out", "bad-strategy",
                                  "bad-model", "no-dir"])
def test_bad_input_gives_one_line_errors(faulty_wav, tmp_path, case):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"definitely not audio")
    strat = tmp_path / "s.toml"
    strat.write_text("[hum]\nsteps = [{ op = 'explode' }]\n")
    args = {"missing": ["faults", str(tmp_path / "nope.wav")],
            "not-audio": ["faults", str(junk)],
            "same-out": ["faults", str(faulty_wav), "--fix", str(faulty_wav)],
            "bad-strategy": ["faults", str(faulty_wav), "--strategies", str(strat)],
            "bad-model": ["faults", str(faulty_wav), "--model", str(junk)],
            "no-dir": ["faults", str(faulty_wav), "--fix", str(tmp_path / "x" / "y.wav")]}[case]
    r = CliRunner().invoke(cli, args if case == "bad-model" else _args(*args))
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "x").exists()


def test_training_loop_smoke(shared_data):
    """A few optimiser steps on a handful of synthetic clips: the loss is finite and falls."""
    import torch

    from edge.faults.features import n_features
    from training.faults_train import FaultTrainConfig, make_set, train
    torch.set_num_threads(1)
    cfg = FaultTrainConfig(train_clips=6, clip_seconds=2.0, batch=8, max_steps=12,
                           minutes=1.0, block=32, step=24, hidden=8)
    clips, X, Y = make_set("train", cfg.train_clips, 0, cfg)
    assert X.shape == (6, 201, n_features()) and Y.shape == (6, 201, 7)
    logs: list[str] = []
    net = train(cfg, X, Y, logs.append)
    fl, cl = net(torch.from_numpy(X[:2, :32]))
    assert fl.shape == (2, 32, 7) and cl.shape == (2, 7) and torch.isfinite(fl).all()
    assert "trained 12 steps" in logs[-1]
