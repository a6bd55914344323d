"""One behaviour across the four console scripts (issue 22, item 6): -h everywhere, --json
prints JSON, outputs checked before the work and written with the umask's mode, a send to an
unknown host fails at once, SIGUSR1 while `live` starts toggles bypass instead of killing it,
--ptp-lock without a locked PTP clock warns."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import click
import numpy as np
import pytest
from click.testing import CliRunner
from sandbox import pulse_server

from edge.audio import save_audio
from edge.cli import cli as edge_cli
from host.cli import cli as host_cli
from host.flash_cli import cli as flash_cli
from training.cli import cli as train_cli

SCRIPTS = {"edge-denoise": edge_cli, "host-calibrate": host_cli, "flash-to-device": flash_cli,
           "train-denoiser": train_cli}


def _walk(cmd: click.Command, path: tuple[str, ...] = ()):
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in sorted(cmd.commands.items()):
            yield from _walk(sub, (*path, name))


ALL = [(script, path) for script, root in SCRIPTS.items() for path, _ in _walk(root)]


@pytest.mark.parametrize(("script", "path"), ALL, ids=[" ".join((s, *p)) for s, p in ALL])
def test_every_command_answers_dash_h(script, path):
    r = CliRunner().invoke(SCRIPTS[script], [*path, "-h"], prog_name=script)
    assert r.exit_code == 0, r.output
    assert r.output.startswith("Usage:") and " ".join((script, *path)) in r.output.splitlines()[0]


def test_json_flag_prints_json_wherever_it_exists():
    """Every --json is a flag that prints to stdout (no --json PATH that writes a file)."""
    for script, root in SCRIPTS.items():
        for path, cmd in _walk(root):
            for p in cmd.params:
                if "--json" in getattr(p, "opts", ()):
                    assert getattr(p, "is_flag", False), f"{script} {' '.join(path)}: --json"


@pytest.fixture
def wav(tmp_path):
    p = tmp_path / "in.wav"
    save_audio(p, 0.1 * np.sin(np.arange(16_000) * 0.05).astype(np.float32))
    return p


def test_send_to_an_unknown_host_fails_at_once(wav):
    t0 = time.monotonic()
    r = CliRunner().invoke(edge_cli, ["send", str(wav), "--to", "udp://no-such-host.invalid:5004"])
    assert r.exit_code == 1, r.output
    assert r.output.startswith("Error: cannot resolve host 'no-such-host.invalid'")
    assert len(r.output.strip().splitlines()) == 1
    assert time.monotonic() - t0 < 0.9  # the file (1 s) was not streamed into the void


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_outputs_follow_the_umask(tmp_path, wav, mask):
    from edge.faults.cli import _atomic_write

    old = os.umask(mask)
    try:
        save_audio(tmp_path / "a.wav", np.zeros(160, np.float32))
        _atomic_write(tmp_path / "b.json", b"{}")
    finally:
        os.umask(old)
    for name in ("a.wav", "b.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask, name


@pytest.mark.parametrize("opt", ["--record", "--record-input", "--summary", "--fix-faults"])
def test_live_refuses_a_bad_output_path_before_starting(tmp_path, monkeypatch, opt):
    import edge.model

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the output path was checked")

    monkeypatch.setattr(edge.model, "StepModel", no_model)
    r = CliRunner().invoke(edge_cli, ["live", "--duration", "1", opt,
                                      str(tmp_path / "missing" / "out.wav")])
    assert r.exit_code == 1, r.output
    assert r.output.startswith("Error:") and "does not exist" in r.output, r.output


def test_lock_problem_without_a_clock(tmp_path, monkeypatch):
    from edge.clock.cli import lock_problem

    monkeypatch.setenv("HUSHLINK_RUN_DIR", str(tmp_path))
    assert "no clock instance" in lock_problem()


LIVE = """
import os, signal, sys
import edge.model
real = edge.model.StepModel
def slow_start(*a, **k):  # a SIGUSR1 while the model loads (start-up)
    os.kill(os.getpid(), signal.SIGUSR1)
    return real(*a, **k)
edge.model.StepModel = slow_start
from edge.cli import main
sys.argv = ["edge-denoise", *sys.argv[1:]]
main()
"""


def test_live_survives_sigusr1_during_start_up_and_warns_without_ptp(tmp_path):
    """SIGUSR1's default action kills; during start-up it is now a pending bypass toggle.
    --ptp-lock with no PTP clock running warns and reports no invented card rate."""
    with pulse_server(tmp_path, [f"hl_cli_{os.getpid()}"]) as (env, _log, _proc):
        env = {**env, "HUSHLINK_RUN_DIR": str(tmp_path / "run"),
               "PULSE_SOURCE": f"hl_cli_{os.getpid()}.monitor"}
        p = subprocess.run([sys.executable, "-c", LIVE, "live", "--duration", "1", "-q",
                            "--record", str(tmp_path / "out.wav"), "--ptp-lock",
                            "--metrics", "127.0.0.1:0"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    s = json.loads(p.stdout)
    assert s["bypass"] is True and s["bypass_toggles"] == 1
    assert s["ptp_lock"].startswith("off: no clock instance")
    assert s.get("media_clock_ppm") is None
    assert "--ptp-lock ignored" in p.stderr
    assert "metrics on http://127.0.0.1:" in p.stderr  # wired in (tests/test_metrics.py scrapes)


@pytest.mark.parametrize("args", [["faults", "--out", "{f}/x/m.tflite", "--minutes", "0.01"],
                                  ["faults", "--report-dir", "{f}/r", "--minutes", "0.01"],
                                  ["export", "--out", "{f}/e"]])
def test_training_refuses_an_output_under_a_file_before_training(tmp_path, args):
    """A path that can never be created (under a regular file) is refused before any work."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    args = [a.format(f=blocker) for a in args]
    t0 = time.monotonic()
    r = CliRunner().invoke(train_cli, args)
    assert r.exit_code == 1, r.output
    assert r.output.startswith("Error:") and "is a file" in r.output, r.output
    assert time.monotonic() - t0 < 30
