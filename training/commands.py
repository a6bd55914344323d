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


@click.command("corpus", context_settings=CONTEXT)
@click.option("--mirrors", type=click.Path(file_okay=False, path_type=Path),
              envvar="HUSHLINK_MIRRORS", default="build/mirrors", show_default=True,
              help="Folder of git mirrors of the source repositories (OWNER+NAME each).")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path),
              default="build/corpus", show_default=True, help="The corpus cache to build.")
@click.option("--commercial-only", is_flag=True,
              help="Leave out sources whose licence forbids or does not state commercial use.")
@click.option("--check", is_flag=True,
              help="Rebuild in memory and compare with the committed manifest; write nothing.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def corpus_cmd(mirrors, out, commercial_only, check, quiet, as_json) -> None:
    """Build the larger corpus and the cross-corpus split from pinned repositories."""
    from rich.console import Console
    from rich.progress import Progress

    from training import corpus

    sources = corpus.load_sources()
    with Progress(disable=quiet, transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task("corpus", total=None)

        def progress(n, total, name):
            bar.update(task, completed=n, total=total, description=name)

        rep = corpus.build(sources, mirrors, None if check else out, commercial_only,
                           progress)
    if check:
        diffs = corpus.check(rep.rows)
        if diffs:
            raise click.ClickException(f"{len(diffs)} differences from {corpus.MANIFEST}: "
                                       + "; ".join(diffs[:5]))
        _emit({"check": "identical to the committed manifest", **rep.summary()}, as_json)
        return
    corpus.write_manifest(out / "manifest.csv", rep.rows)
    if not commercial_only:
        corpus.write_manifest(corpus.MANIFEST, rep.rows)
    _emit({"out": str(out), **rep.summary()}, as_json)
