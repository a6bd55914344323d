"""Issue 18 items 5, 6 and 11: the command-line tools fail with one ``Error:`` line and exit
1 (never a traceback, a segfault or a native log line first) when the output cannot be
written, when a model crashes the interpreter, and when a library's message spans lines."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sandbox import need

from edge.model import default_model_path

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """``edge-denoise ARGS`` in a fresh interpreter: what a user sees on stdout and stderr
    (native log lines included, which CliRunner cannot capture)."""
    code = "from edge.cli import main; main()"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def _one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    assert "Traceback" not in r.stderr and "INFO:" not in r.stderr
    return lines[0]


@pytest.fixture
def noisy(tmp_path) -> Path:
    p = tmp_path / "in.wav"
    rng = np.random.default_rng(0)
    sf.write(p, (0.1 * rng.standard_normal(16_000 * 3)).astype(np.float32), 16_000,
             subtype="FLOAT")  # 192 kB of output: more than the small disk below holds
    return p


@pytest.fixture
def tiny_fs(tmp_path):
    """A 64 KiB tmpfs (root only: mount). Yields its path; remount with ``ro`` in a test."""
    need(os.geteuid() == 0, "mounting a tmpfs needs root")
    mnt = tmp_path / f"fs{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


# ------------------------------------------------------------------------------ item 5
def test_file_on_a_read_only_mount_is_one_error_before_any_work(noisy, tiny_fs):
    """Before: a traceback ending in ``OSError: [Errno 30] Read-only file system``."""
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    r = _cli("file", str(noisy), str(tiny_fs / "out.wav"))
    line = _one_error_line(r)
    assert "out.wav: cannot write (Read-only file system)" in line
    assert list(tiny_fs.iterdir()) == []


def test_file_on_a_full_disk_is_one_error_and_leaves_no_partial_file(noisy, tiny_fs):
    """Before: a traceback ending in ``soundfile.LibsndfileError: System error.``"""
    r = _cli("file", str(noisy), str(tiny_fs / "out.wav"))
    line = _one_error_line(r)
    assert "out.wav: cannot write" in line and "no output written" in line
    assert list(tiny_fs.iterdir()) == []  # neither out.wav nor a .part file


def test_file_into_a_missing_directory_is_one_error(noisy, tmp_path):
    from click.testing import CliRunner

    from edge.cli import cli

    r = CliRunner().invoke(cli, ["file", str(noisy), str(tmp_path / "nowhere" / "o.wav")])
    assert r.exit_code == 1 and "output directory does not exist" in r.output, r.output


# ------------------------------------------------------------------------------ item 6
def _rewritten_model(tmp_path: Path, name: str, change) -> Path:
    """The shipped model with ``change(ModelT)`` applied, and a .json whose sha256 matches
    (so only the interpreter can notice)."""
    try:
        import flatbuffers
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        need(False, "ai_edge_litert's flatbuffer schema (pip install ai-edge-litert)")
    src = default_model_path().read_bytes()
    m = copy.deepcopy(schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(src, 0)))
    change(m)
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    data = bytes(b.Output())
    out = tmp_path / f"{name}.tflite"
    out.write_bytes(data)
    meta = json.loads(default_model_path().with_suffix(".json").read_text())
    meta["tflite_sha256"] = hashlib.sha256(data).hexdigest()
    out.with_suffix(".json").write_text(json.dumps(meta))
    return out


def _no_op_inputs(m) -> None:
    for op in m.subgraphs[0].operators:
        op.inputs = []


def test_a_model_that_crashes_the_interpreter_is_a_clear_error(noisy, tmp_path):
    """Before: exit 139 (SIGSEGV) and no message. The crash is undefined behaviour inside
    the interpreter (here: with this runtime, in-process, it segfaults in allocate_tensors);
    wherever it does not crash, the same file must still be one clear error."""
    bad = _rewritten_model(tmp_path, "bad", _no_op_inputs)
    probe = "import sys; from edge.model import StepModel; StepModel(sys.argv[1])"
    raw = subprocess.run([sys.executable, "-c", probe, str(bad)], capture_output=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    r = _cli("file", str(noisy), str(tmp_path / "out.wav"), "--model", str(bad))
    line = _one_error_line(r)
    if raw.returncode < 0:
        assert f"{bad}: the interpreter crashed (SIGSEGV) loading it" in line
    else:
        assert f"{bad}: the interpreter cannot load it" in line
    assert not (tmp_path / "out.wav").exists()


def test_preflight_names_the_signal(monkeypatch, tmp_path):
    from edge import model

    monkeypatch.setattr(model.subprocess, "run",
                        lambda *a, **kw: subprocess.CompletedProcess(a, -6, "", ""))
    with pytest.raises(model.ModelError, match="crashed .SIGABRT. loading it"):
        model.preflight(tmp_path / "m.tflite")


# ------------------------------------------------------------------------------ item 11
def test_an_interpreter_error_is_one_line_without_tflite_info(noisy, tmp_path):
    """Before: ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` came first and
    the interpreter's message ended in a line break."""
    def bad_index(m):
        m.subgraphs[0].operators[3].inputs[0] = 100_000

    bad = _rewritten_model(tmp_path, "badidx", bad_index)
    r = _cli("file", str(noisy), str(tmp_path / "out.wav"), "--model", str(bad))
    line = _one_error_line(r)
    assert "Invalid tensor index 100000" in line and line.endswith(".)")


def test_the_demo_output_has_no_tflite_info_line(noisy, tmp_path):
    r = _cli("file", str(noisy), str(tmp_path / "out.wav"))
    assert r.returncode == 0, r.stderr
    assert "INFO:" not in r.stderr + r.stdout and r.stderr.strip() == ""
    assert r.stdout.count("\n") == 1 and "real-time factor" in r.stdout


def test_native_log_filter_passes_on_other_lines(capfd):
    from edge.model import native_log_filtered

    with native_log_filtered():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"WARNING: something the user should see\n")
    err = capfd.readouterr().err
    assert err == "WARNING: something the user should see\n"


def test_a_multi_line_library_message_becomes_one_error_line():
    import click
    from click.testing import CliRunner

    from edge.cliutil import CONTEXT, Group
    from edge.errors import HushlinkError

    @click.group(cls=Group, context_settings=CONTEXT)
    def cli():
        pass

    @cli.command()
    def boom():
        raise HushlinkError("model.tflite: the interpreter cannot load it (Node 3 failed.\n)")

    r = CliRunner().invoke(cli, ["boom"])
    assert r.exit_code == 1
    assert r.output == "Error: model.tflite: the interpreter cannot load it (Node 3 failed.; )\n"


def test_a_text_transport_value_in_a_bundle_config_names_the_field(tmp_path):
    """Before: ``'<=' not supported between instances of 'int' and 'str'``."""
    from host.bundle import BundleError, load_config

    cfg = tmp_path / "device.toml"
    cfg.write_text('[transport]\nbitrate_kbps = "64"\n')
    with pytest.raises(BundleError) as e:
        load_config(cfg)
    assert str(e.value) == (f"config {cfg}: transport: bitrate_kbps must be an integer, "
                            "got str '64'")
    cfg.write_text('[transport]\nfec = "1 --to udp://203.0.113.9:5004"\n')
    with pytest.raises(BundleError, match="fec must be true or false"):
        load_config(cfg)


def test_inspect_names_the_file_once(tmp_path):
    from click.testing import CliRunner

    from host.flash_cli import cli

    junk = tmp_path / "junk.hlb"
    junk.write_bytes(b"not a tar")
    r = CliRunner().invoke(cli, ["inspect", str(junk)])
    assert r.exit_code == 1 and r.output.count("junk.hlb") == 1, r.output
    r = CliRunner().invoke(cli, ["inspect", str(junk), "--trust", str(tmp_path / "no.pub")])
    assert r.exit_code == 1 and r.output.startswith("Error: cannot read public key"), r.output


# ------------------------------------------------------------------- item 4: every option
@pytest.mark.parametrize("tool, args, words", [
    ("edge", ["send", "x.wav", "--to", "udp://127.0.0.1:9", "--share", "nan"], "not a finite"),
    ("edge", ["send", "x.wav", "--to", "udp://127.0.0.1:9", "--bitrate", "64.5"],
     "not an integer"),
    ("edge", ["send", "x.wav", "--to", "udp://127.0.0.1:9", "--capacity", "-1"], "out of range"),
    ("edge", ["receive", "--listen", "127.0.0.1:0", "--duration", "inf"], "not a finite"),
    ("edge", ["live", "--duration", "nan"], "not a finite"),
    ("edge", ["file", "a.wav", "b.wav", "--threads", "0"], "out of range 1..16"),
    ("host", ["tune", "t.jsonl", "--w-latency", "-1"], "out of range 0..1000"),
    ("host", ["tune", "t.jsonl", "--s1", "nan"], "not a finite"),
    ("host", ["tune", "t.jsonl", "--pop", "2"], "out of range 4..10000"),
    ("host", ["collect", "loop://", "--duration", "inf"], "not a finite"),
    ("host", ["apply", "loop://", "s.json", "--trial", "nan"], "not a finite"),
    ("host", ["emulate", "--listen", "127.0.0.1:0", "--forward", "127.0.0.1:9",
              "--duration", "-5"], "out of range"),
])
def test_numeric_options_refuse_non_finite_and_out_of_range_values(tmp_path, monkeypatch,
                                                                  tool, args, words):
    """Before: click's float type let nan and inf through (and negative weights or
    durations were accepted)."""
    from click.testing import CliRunner

    from edge.cli import cli as edge_cli
    from host.cli import cli as host_cli

    monkeypatch.chdir(tmp_path)
    for name in ("x.wav", "a.wav", "t.jsonl", "s.json"):
        (tmp_path / name).write_text("{}")
    r = CliRunner().invoke(edge_cli if tool == "edge" else host_cli, args)
    assert r.exit_code == 2 and words in r.output, r.output


@pytest.mark.parametrize("value, words", [("1.2.3", "expected a percentage like 5%"),
                                          ("150%", "a share of packets is at most 100%")])
def test_emulator_percentages_are_checked(value, words):
    from click.testing import CliRunner

    from host.cli import cli

    r = CliRunner().invoke(cli, ["emulate", "--listen", "127.0.0.1:0", "--forward",
                                 "127.0.0.1:9", "--loss", value, "--duration", "0.1"])
    assert r.exit_code == 1 and r.output == f"Error: {value!r}: {words}\n", r.output
