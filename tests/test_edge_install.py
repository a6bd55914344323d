"""`pip install .[edge]` in a fresh venv, on this Python and on the oldest one supported (3.10):
no torch, every edge-denoise command has --help, and `edge-denoise file` with the shipped
model gives what it gives on this interpreter."""

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sandbox import need

ROOT = Path(__file__).resolve().parents[1]
OLDEST = "3.10"  # setup.cfg python_requires; JetPack 6 ships it


def find_python(version: str) -> str | None:
    """An interpreter for ``version``: $HUSHLINK_PYTHON<XY>, a working ``python<version>`` on
    PATH, else pyenv's build of it (pyenv's shim answers only for the selected versions)."""
    env = os.environ.get(f"HUSHLINK_PYTHON{version.replace('.', '')}")
    candidates = [env] if env else []
    candidates.append(shutil.which(f"python{version}"))
    if shutil.which("pyenv"):
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip()
        candidates += sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"))
    for exe in filter(None, candidates):
        r = subprocess.run([exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                           capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip() == version:
            return exe
    return None


@pytest.mark.slow
@pytest.mark.timeout(1800)  # pip downloads ~100 MB per venv: 8.5 min here at times, ~2 usually
@pytest.mark.parametrize("version", ["current", OLDEST])
def test_edge_extra_installs_without_torch(tmp_path, version):
    from edge.audio import load_audio, save_audio
    from edge.denoise import Denoiser
    from edge.model import StepModel

    python = sys.executable if version == "current" else find_python(version)
    need(python is not None, f"no Python {version} (pyenv install {version}, or set "
                             f"HUSHLINK_PYTHON{version.replace('.', '')})")
    env_dir = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(env_dir)], check=True)
    py = env_dir / "bin" / "python"
    src = tmp_path / "src"  # a copy, so the build never writes into the working tree
    subprocess.run(["git", "clone", "-q", str(ROOT), str(src)], check=True)
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", f"{src}[edge]"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    probe = subprocess.run([str(py), "-c", "import importlib.util as u, sys; "
                            "print(u.find_spec('torch'), u.find_spec('sklearn'), "
                            "'%d.%d' % sys.version_info[:2])"],
                           capture_output=True, text=True, cwd=tmp_path)
    want = "{}.{}".format(*sys.version_info[:2]) if version == "current" else version
    assert probe.stdout.split() == ["None", "None", want]
    data = subprocess.run([str(py), "-c", "from importlib.resources import files as f; print(*("
                           "(f(p) / n).is_file() for p, n in [('edge', 'models/default.tflite'), "
                           "('edge', 'faults/strategies.toml'), ('hardware', 'rpi5.toml'), "
                           "('hardware', 'hushlink-live.service')]))"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert data.stdout.split() == ["True"] * 4, data.stderr  # package data is installed
    exe = env_dir / "bin" / "edge-denoise"
    top = subprocess.run([str(exe), "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert top.returncode == 0
    commands = [line.split()[0] for line in top.stdout.split("Commands:")[1].splitlines()
                if line.startswith("  ") and line.split()]
    assert "file" in commands and "live" in commands
    for cmd in commands:
        h = subprocess.run([str(exe), cmd, "--help"], capture_output=True, text=True, cwd=tmp_path)
        assert h.returncode == 0 and "Usage:" in h.stdout, (cmd, h.stderr)

    # the shipped model over 3 s of a chirp in noise, there and here
    t = np.arange(3 * 16_000) / 16_000
    rng = np.random.default_rng(0)
    x = (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t)
         + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    save_audio(tmp_path / "in.wav", x, subtype="FLOAT")
    r = subprocess.run([str(exe), "file", "in.wav", "out.wav"], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    there = load_audio(tmp_path / "out.wav").samples
    here = Denoiser(StepModel()).process(x)
    err = np.sum((there - here) ** 2)
    # measured: bit-identical on 3.10 (numpy 2.2.6) and 3.11 (numpy 2.x), ai-edge-litert 2.3.0
    assert err == 0 or 10 * np.log10(np.sum(here ** 2) / err) > 60, err
    assert np.std(there - x) > 1e-3  # the model ran (not a bypass)
