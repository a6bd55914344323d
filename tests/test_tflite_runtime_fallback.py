"""The tflite_runtime backend, tested for real in its own venv.

tflite-runtime 2.14 (the last release, the documented alternative backend for devices: extra
``[edge-tflite]``) imports only with numpy < 2, so it cannot live in the project venv
(numpy 2). A session fixture builds build/venv-tflrt (python -m venv; pip install the
``edge-tflite`` extra's requirements from setup.cfg), where ai_edge_litert is absent:
edge/model.py must fall back on its own, and the shipped models must give the same outputs
on both backends.
"""

from __future__ import annotations

import configparser
import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.denoise import Denoiser
from edge.model import StepModel

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "build" / "venv-tflrt"


def edge_tflite_requirements() -> list[str]:
    """The ``edge-tflite`` extra of setup.cfg (what a device installs for this backend)."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return [line.strip() for line in cfg["options.extras_require"]["edge-tflite"].splitlines()
            if line.strip()]  # one requirement a line, markers included


PACKAGES = edge_tflite_requirements()
SCRIPT = r"""
import json, sys
import numpy as np
import edge.model as em
from edge.denoise import Denoiser
m = em.StepModel(sys.argv[1])
feats = np.load(sys.argv[2])
x = np.load(sys.argv[3])
np.save(sys.argv[4], Denoiser(m).process(x))
np.save(sys.argv[5], m.masks(feats))
print(json.dumps({"backend": m.backend, "numpy": np.__version__,
                  "test_vector_err": m.check_test_vector(),
                  "ai_edge_litert": __import__("importlib.util").util.find_spec("ai_edge_litert")
                  is not None}))
"""


@pytest.fixture(scope="session")
def tflrt_python() -> Path:
    """build/venv-tflrt/bin/python with tflite-runtime 2.14 and numpy<2 (built once)."""
    VENV.parent.mkdir(exist_ok=True)
    py = VENV / "bin" / "python"
    with open(VENV.parent / ".venv-tflrt.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ok = py.exists() and subprocess.run(
            [str(py), "-c", "import tflite_runtime.interpreter, soundfile, soxr, scipy, cbor2"],
            capture_output=True).returncode == 0
        if not ok:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
            r = subprocess.run([str(py), "-m", "pip", "install", "-q",
                                "--disable-pip-version-check", *PACKAGES],
                               capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                pytest.fail(f"could not build {VENV}: {r.stderr[-2000:]}")
    return py


@pytest.fixture(scope="module")
def test_model(tmp_path_factory) -> Path:
    from stepmodels import build_test_model

    return build_test_model(tmp_path_factory.getbasetemp() / "stepmodel")


@pytest.mark.train  # the fixture model is exported with torch + litert-torch
def test_tflite_runtime_fallback_matches_ai_edge_litert(tflrt_python, test_model, tmp_path):
    rng = np.random.default_rng(1)
    feats = rng.uniform(-23, 0, (50, 161)).astype(np.float32)
    t = np.arange(16_000) / 16_000
    x = (0.2 * np.sin(2 * np.pi * 300 * t) + 0.05 * rng.standard_normal(len(t))
         ).astype(np.float32)
    np.save(tmp_path / "feats.npy", feats)
    np.save(tmp_path / "x.npy", x)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HUSHLINK_INTERPRETER", None)
    r = subprocess.run([str(tflrt_python), "-c", SCRIPT, str(test_model),
                        str(tmp_path / "feats.npy"), str(tmp_path / "x.npy"),
                        str(tmp_path / "y.npy"), str(tmp_path / "masks.npy")],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["backend"] == "tflite_runtime" and out["numpy"].startswith("1.")
    assert out["ai_edge_litert"] is False  # it really fell back; nothing forced it
    assert out["test_vector_err"] <= 0.05

    ref = StepModel(test_model)
    assert ref.backend == "ai_edge_litert"
    masks = np.load(tmp_path / "masks.npy")
    step = ref.mask_t.scale or 1 / 256  # one quantisation step of the mask
    assert np.max(np.abs(masks - ref.masks(feats))) <= 2 * step
    y = np.load(tmp_path / "y.npy")
    y_ref = Denoiser(ref).process(x)
    assert np.max(np.abs(y - y_ref)) <= 0.02 * np.max(np.abs(x))


SHIPPED = r"""
import json, sys
import numpy as np
from edge.denoise import Denoiser
from edge.dsp import log_power, stft
from edge.faults.detect import TFLiteFaultModel, frame_probs
from edge.model import StepModel
x, xf = np.load(sys.argv[1]), np.load(sys.argv[2])
m, fm = StepModel(), TFLiteFaultModel()  # the shipped default.tflite and faults.tflite
feats = log_power(stft(x, m.front_end), m.front_end)
i = fm.info
probs, _ = frame_probs(xf, fm, i.block, i.step, len(i.kinds), i.n_mels, i.time_features)
np.save(sys.argv[3], m.masks(feats))
np.save(sys.argv[4], Denoiser(m).process(x))
np.save(sys.argv[5], probs)
print(json.dumps({"backends": [m.backend, fm.backend], "numpy": np.__version__}))
"""


def test_shipped_models_give_the_same_outputs_on_both_backends(tflrt_python, shared_data,
                                                               tmp_path):
    """Issue 19 item 6: the shipped denoiser and fault classifier, run on real features (8 s
    of VCTK speech in cafe noise at 5 dB; held-out speech with hum and clipping) under
    tflite_runtime 2.14 (the [edge-tflite] extra) and ai_edge_litert, agree: masks within
    0.01 on average and 0.2 at worst (the int8 GRU state carries a rounding difference
    along; measured 0.0037 / 0.108), denoised audio within 30 dB (measured 35.5 dB), fault
    probabilities within 0.06 (measured 0.039; one int8 output step is 1/256)."""
    from stepmodels import mix

    from edge.audio import load_audio
    from training.faults_synth import Synth, inject

    speech = sorted((shared_data / "speech/vctk/p230").glob("*.flac"))
    x = mix(np.concatenate([load_audio(p).samples for p in speech])[:8 * 16_000],
            load_audio(shared_data / "noise/freesound_cc0/cafe.flac").samples, 5.0)
    prog = Synth("test", 5.0, shared=shared_data.parent).programme(np.random.default_rng(3))
    xf, _ = inject(prog, "hum", 16_000, 48_000, seed=1)
    xf, _ = inject(xf, "clipping", 56_000, 72_000, seed=1, mode="hard", level=0.3)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "xf.npy", xf)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HUSHLINK_INTERPRETER", None)
    out = {}
    for name, py in (("litert", sys.executable), ("tflrt", str(tflrt_python))):
        files = [str(tmp_path / f"{k}_{name}.npy") for k in ("m", "y", "p")]
        r = subprocess.run([py, "-c", SHIPPED, str(tmp_path / "x.npy"), str(tmp_path / "xf.npy"),
                            *files], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        out[name] = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["litert"]["backends"] == ["ai_edge_litert"] * 2
    assert out["tflrt"]["backends"] == ["tflite_runtime"] * 2
    m_a, m_b = (np.load(tmp_path / f"m_{n}.npy") for n in ("litert", "tflrt"))
    y_a, y_b = (np.load(tmp_path / f"y_{n}.npy") for n in ("litert", "tflrt"))
    p_a, p_b = (np.load(tmp_path / f"p_{n}.npy") for n in ("litert", "tflrt"))
    assert m_a.shape == m_b.shape and m_a.shape[0] >= len(x) // 160 and m_a.shape[1] == 161
    assert np.mean(np.abs(m_a - m_b)) <= 0.01 and np.max(np.abs(m_a - m_b)) <= 0.2
    assert 10 * np.log10(np.sum(y_a ** 2) / np.sum((y_a - y_b) ** 2)) >= 30
    assert p_a.shape == p_b.shape and np.max(np.abs(p_a - p_b)) <= 0.06
