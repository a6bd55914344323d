"""The ``train-denoiser`` subcommands: prepare, teacher, student, export, evaluate.

Each is a thin shell over ``training.pipeline`` (which also works from Python). All take
``--config`` (a TOML file or a built-in name: default, smoke), ``KEY=VALUE`` overrides of
its keys, and ``--work`` (the directory holding manifest, checkpoints, exports and metrics;
default build/train/CONFIG). Training stages resume from their checkpoints when re-run, run
under ``torchrun`` as DDP, and record each run in WORK/runs/ (training/runs.py).
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import click

from edge.cliutil import CONTEXT


def _common(f):
    f = click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")(f)
    f = click.option("--quiet", "-q", is_flag=True,
                     help="No progress bars, no third-party logs or warnings.")(f)
    f = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(f)
    f = click.option("--work", "-w", type=click.Path(file_okay=False),
                     help="Work directory (default build/train/CONFIG).")(f)
    f = click.option("--config", "-c", default="default", show_default=True,
                     help="Config TOML file, or a name in training/configs/. KEY=VALUE "
                          "arguments override its keys (student.steps=3000).")(f)
    return f


def _device(f):
    return click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu",
                        show_default=True, help="Torch device for training.")(f)


def _speed(f):
    f = click.option("--compile", "compile_", is_flag=True,
                     help="torch.compile the trained model (measure first: README).")(f)
    f = click.option("--bf16", is_flag=True, help="bf16 autocast (CUDA only).")(f)
    return click.option("--workers", type=click.IntRange(0), default=0, show_default=True,
                        help="DataLoader worker processes mixing the batches (same batches "
                             "for any number).")(f)


def _start(config: str, work: str | None, device: str = "cpu", overrides=(),
           distributed: bool = False):
    from training import pipeline
    from training.config import load_config

    cfg = load_config(config, overrides)
    w = pipeline.work_dir(cfg, work)
    w.mkdir(parents=True, exist_ok=True)
    d = pipeline.setup_torch(cfg, device, distributed)
    return cfg, w, pipeline, d


@contextmanager
def _silenced(quiet: bool):
    """With -q: Python warnings and logging off, and file descriptor 2 pointed at /dev/null
    for the command's run, because TensorFlow Lite, XNNPACK and absl write their banners
    from C++ straight to it. Restored before click prints an error."""
    if not quiet:
        yield
        return
    import logging
    import warnings

    for k, v in (("TF_CPP_MIN_LOG_LEVEL", "3"), ("GLOG_minloglevel", "3"),
                 ("GRPC_VERBOSITY", "ERROR"), ("TORCH_CPP_LOG_LEVEL", "ERROR")):
        os.environ.setdefault(k, v)
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            os.dup2(null, 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
        logging.disable(logging.NOTSET)


def _emit(result: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result, indent=1, default=str))
        return
    for k, v in result.items():
        click.echo(f"{k}: {json.dumps(v, default=str) if isinstance(v, dict | list) else v}")


def _train(stage: str, config, work, as_json, quiet, device, overrides, workers, bf16,
           compile_, body) -> None:
    """A training stage: the process group under torchrun, a run folder (rank 0), the
    stage itself, its result on rank 0's stdout."""
    from training.loader import Runtime
    from training.runs import Run

    cfg, w, p, d = _start(config, work, device, overrides, distributed=True)
    try:
        run = Run(w, stage, cfg, overrides, d.world) if d.main else None
        rt = Runtime(d, workers, bf16, compile_, run.scalars if run else None)
        try:
            with _silenced(quiet):
                res = body(cfg, w, p, rt)
        except BaseException as e:
            if run:
                run.fail(e)
            raise
        if run:
            run.finish(res, {"teacher": ("teacher.pt",), "student": (
                "students.pt", "student.pt", "student_adaptive.pt", "student_mref.pt",
                "student_core.pt")}[stage])
            res = {**res, "run": str(run.path)}
    finally:
        from training.dist import close

        close(d)
    if d.main:
        _emit(res, as_json)


@click.command("prepare", context_settings=CONTEXT)
@_common
def prepare_cmd(config, work, as_json, quiet, overrides) -> None:
    """Scan speech/noise folders and write a speaker-disjoint split manifest."""
    cfg, w, p, _ = _start(config, work, overrides=overrides)
    with _silenced(quiet):
        res = p.prepare(cfg, w, quiet)
    _emit(res, as_json)


@click.command("teacher", context_settings=CONTEXT)
@_common
@_device
@_speed
def teacher_cmd(config, work, as_json, quiet, overrides, device, workers, bf16,
                compile_) -> None:
    """Train the teacher processors and learn their fusion weights (torchrun: DDP)."""
    _train("teacher", config, work, as_json, quiet, device, overrides, workers, bf16, compile_,
           lambda cfg, w, p, rt: p.teacher(cfg, w, quiet, rt=rt))


@click.command("student", context_settings=CONTEXT)
@_common
@_device
@_speed
@click.option("--no-teacher", is_flag=True, help="Train on m_ref only (no distillation).")
def student_cmd(config, work, as_json, quiet, overrides, device, workers, bf16, compile_,
                no_teacher) -> None:
    """Distil the streaming student with the adaptive a-weighted loss (torchrun: DDP)."""
    _train("student", config, work, as_json, quiet, device, overrides, workers, bf16, compile_,
           lambda cfg, w, p, rt: p.student(cfg, w, quiet, use_teacher=not no_teacher, rt=rt))


@click.command("export", context_settings=CONTEXT)
@_common
@click.option("--out", "-o", type=click.Path(file_okay=False),
              help="Output directory (default WORK/export).")
@click.option("--name", help="Model name (default from the config).")
@click.option("--ship", is_flag=True,
              help="Also install the int8 model as edge/models/default.tflite + .json.")
def export_cmd(config, work, as_json, quiet, overrides, out, name, ship) -> None:
    """Export the student to an int8 TFLite step model with metadata and verify it."""
    from edge.outpaths import check_output

    check_output(out, "export directory", directory=True)  # before torch and the export
    cfg, w, p, _ = _start(config, work, overrides=overrides)
    with _silenced(quiet):
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
def evaluate_cmd(config, work, as_json, quiet, overrides, utterances, model) -> None:
    """Score models on the test split (PESQ, STOI, SI-SDR) with spectrograms; a table, or
    everything with --json."""
    cfg, w, p, _ = _start(config, work, overrides=overrides)
    with _silenced(quiet):
        res = p.evaluate(cfg, w, quiet, utterances, Path(model) if model else None)
    if as_json:
        _emit(res, True)
        return
    click.echo(eval_table(res))


def eval_table(res: dict) -> str:
    """The evaluation as a markdown table: one row per system, all SNRs and then each."""
    systems = res["systems"]
    snrs = list(next(iter(systems.values()))["snr"]) if systems else []
    head = ["system", "PESQ", "STOI", "SI-SDR", "SI-SDRi"] + [f"SI-SDRi {s} dB" for s in snrs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, v in systems.items():
        a = v["all"]
        cells = [name, f"{a['pesq']:.3f}", f"{a['stoi']:.3f}", f"{a['si_sdr']:.2f}",
                 f"{a['si_sdr_i']:+.2f}"] + [f"{v['snr'][s]['si_sdr_i']:+.2f}" for s in snrs]
        lines.append("| " + " | ".join(cells) + " |")
    return (f"{res['mixtures']} test mixtures; spectrograms: "
            f"{', '.join(res['spectrograms']) or 'none'}\n\n" + "\n".join(lines))


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
