import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from edge import __version__
from edge.cli import cli as edge_cli
from host.cli import cli as host_cli
from host.flash_cli import cli as flash_cli
from training.cli import cli as train_cli

CLIS = {"edge-denoise": edge_cli, "host-calibrate": host_cli, "flash-to-device": flash_cli,
        "train-denoiser": train_cli}


@pytest.mark.parametrize("name", CLIS)
def test_help_and_version(name):
    r = CliRunner().invoke(CLIS[name], ["--help"])
    assert r.exit_code == 0 and "Usage:" in r.output
    for cmd in CLIS[name].commands:
        sub = CliRunner().invoke(CLIS[name], [cmd, "--help"])
        assert sub.exit_code == 0, (cmd, sub.output)
        assert "Usage:" in sub.output
    v = CliRunner().invoke(CLIS[name], ["--version"])
    assert v.exit_code == 0 and __version__ in v.output


@pytest.mark.parametrize("name", CLIS)
def test_console_scripts_installed(name):
    exe = Path(sys.executable).parent / name  # the venv's bin, where pip put the entry point
    assert exe.is_file()
    h = subprocess.run([str(exe), "-h"], capture_output=True, text=True)
    assert h.returncode == 0 and "Usage:" in h.stdout


def test_stubs_refuse_to_pretend():
    stubs = [(cli, cmd) for cli in CLIS.values() for cmd, c in cli.commands.items()
             if c.callback.__code__.co_names.count("not_implemented")]
    for cli, cmd in stubs:
        r = CliRunner().invoke(cli, [cmd])
        assert r.exit_code == 1 and "not implemented yet" in r.output


@pytest.mark.parametrize("kind", ["missing", "text", "empty", "nan"])
def test_bad_audio_is_one_line_error(tmp_path, kind):
    p = tmp_path / "in.wav"
    if kind == "text":
        p.write_text("hello")
    elif kind == "empty":
        sf.write(p, np.zeros(0, dtype=np.float32), 16_000)
    elif kind == "nan":
        sf.write(p, np.full(100, np.nan, dtype=np.float32), 16_000, subtype="FLOAT")
    r = subprocess.run([sys.executable, "-m", "edge", "info", str(p)], capture_output=True,
                       text=True)
    assert r.returncode == 1
    assert r.stderr.startswith("Error:") and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr


def test_info_and_profiles(tmp_path, tone):
    sf.write(tmp_path / "t.wav", tone, 16_000)
    r = CliRunner().invoke(edge_cli, ["info", str(tmp_path / "t.wav"), "--json"])
    assert r.exit_code == 0 and '"seconds": 1.0' in r.output
    r = CliRunner().invoke(edge_cli, ["profiles"])
    assert r.exit_code == 0 and "rpi5" in r.output
