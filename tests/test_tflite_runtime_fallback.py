"""The tflite_runtime fallback, tested for real in its own venv.

tflite-runtime 2.14 (the last release, what the design calls for on devices) imports only
with numpy < 2, so it cannot live in the project venv (numpy 2). A session fixture builds
build/venv-tflrt (python -m venv; pip install tflite-runtime 'numpy<2' soundfile soxr), where
ai_edge_litert is absent: edge/model.py must fall back on its own and give the same masks.
"""

from __future__ import annotations

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

pytestmark = [pytest.mark.slow, pytest.mark.train]

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "build" / "venv-tflrt"
PACKAGES = ["tflite-runtime==2.14.0", "numpy<2", "soundfile", "soxr"]
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
            [str(py), "-c", "import tflite_runtime.interpreter, soundfile, soxr"],
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
