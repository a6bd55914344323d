"""The ``train-denoiser`` subcommands: prepare, teacher, student, export, evaluate.

Each is a thin shell over ``training.pipeline`` (which also works from Python). All take
``--config`` (a TOML file or a built-in name: default, smoke) and ``--work`` (the directory
holding manifest, checkpoints, exports and metrics; default build/train/CONFIG). Training
stages resume from their checkpoints when re-run.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from edge.cliutil import CONTEXT


def _common(f):
    f = click.option("--quiet", "-q", is_flag=True, help="No progress bars.")(f)
    f = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(f)
    f = click.option("--work", "-w", type=click.Path(file_okay=False),
                     help="Work directory (default build/train/CONFIG).")(f)
    f = click.option("--config", "-c", default="default", show_default=True,
                     help="Config TOML file, or a name in training/configs/.")(f)
    return f


def _device(f):
    return click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu",
                        show_default=True, help="Torch device for training.")(f)


def _start(config: str, work: str | None, device: str = "cpu"):
    from training import pipeline
    from training.config import load_config

    cfg = load_config(config)
    w = pipeline.work_dir(cfg, work)
    w.mkdir(parents=True, exist_ok=True)
    pipeline.setup_torch(cfg, device)
    return cfg, w, pipeline


def _emit(result: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result, indent=1, default=str))
        return
    for k, v in result.items():
        click.echo(f"{k}: {json.dumps(v, default=str) if isinstance(v, dict | list) else v}")


@click.command("prepare", context_settings=CONTEXT)
@_common
def prepare_cmd(config, work, as_json, quiet) -> None:
    """Scan speech/noise folders and write a speaker-disjoint split manifest."""
    cfg, w, p = _start(config, work)
    _emit(p.prepare(cfg, w, quiet), as_json)


@click.command("teacher", context_settings=CONTEXT)
@_common
@_device
def teacher_cmd(config, work, as_json, quiet, device) -> None:
    """Train the teacher processors and learn their fusion weights."""
    cfg, w, p = _start(config, work, device)
    _emit(p.teacher(cfg, w, quiet, device), as_json)


@click.command("student", context_settings=CONTEXT)
@_common
@_device
@click.option("--no-teacher", is_flag=True, help="Train on m_ref only (no distillation).")
def student_cmd(config, work, as_json, quiet, device, no_teacher) -> None:
    """Distil the streaming student with the adaptive a-weighted loss."""
    cfg, w, p = _start(config, work, device)
    _emit(p.student(cfg, w, quiet, use_teacher=not no_teacher, device=device), as_json)


@click.command("export", context_settings=CONTEXT)
@_common
@click.option("--out", "-o", type=click.Path(file_okay=False),
              help="Output directory (default WORK/export).")
@click.option("--name", help="Model name (default from the config).")
@click.option("--ship", is_flag=True,
              help="Also install the int8 model as edge/models/default.tflite + .json.")
def export_cmd(config, work, as_json, quiet, out, name, ship) -> None:
    """Export the student to an int8 TFLite step model with metadata and verify it."""
    cfg, w, p = _start(config, work)
    res = p.export(cfg, w, Path(out) if out else None, name, quiet)
    if ship:
        from training.export import copy_model

        src = Path(res["dir"]) / f"{res['name']}.tflite"
        res["shipped"] = str(copy_model(src, p.ROOT / "edge" / "models", "default"))
    _emit(res, as_json)


@click.command("evaluate", context_settings=CONTEXT)
@_common
@click.option("--utterances", "-n", type=int, help="Test utterances (default from config).")
@click.option("--model", "-m", type=click.Path(dir_okay=False),
              help="int8 .tflite to score (default WORK/export/NAME.tflite).")
def evaluate_cmd(config, work, as_json, quiet, utterances, model) -> None:
    """Score models on the test split (PESQ, STOI, SI-SDR) with spectrograms."""
    cfg, w, p = _start(config, work)
    _emit(p.evaluate(cfg, w, quiet, utterances, Path(model) if model else None), as_json)
