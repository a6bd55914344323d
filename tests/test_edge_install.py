"""`pip install .[edge]` in a fresh venv: no torch, and every edge-denoise command has --help."""

import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_edge_extra_installs_without_torch(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    src = tmp_path / "src"  # a copy, so the build never writes into the working tree
    subprocess.run(["git", "clone", "-q", str(ROOT), str(src)], check=True)
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", f"{src}[edge]"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    probe = subprocess.run([str(py), "-c", "import importlib.util as u; "
                            "print(u.find_spec('torch'), u.find_spec('sklearn'))"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert probe.stdout.split() == ["None", "None"]
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
