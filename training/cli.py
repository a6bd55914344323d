"""``train-denoiser``: training and export of the denoiser."""

from __future__ import annotations

import click

from edge import __version__
from edge.cliutil import CONTEXT, Group, not_implemented


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="train-denoiser")
def cli() -> None:
    """Train the teacher ensemble, distil the streaming student and export it to TFLite int8."""


@cli.command('prepare', context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def prepare_cmd(args) -> None:
    """Scan speech/noise folders and write a speaker-disjoint split manifest."""
    not_implemented("train-denoiser prepare", 4)


@cli.command('teacher', context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def teacher_cmd(args) -> None:
    """Train the teacher processors and learn their fusion weights."""
    not_implemented("train-denoiser teacher", 4)


@cli.command('student', context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def student_cmd(args) -> None:
    """Distil the streaming student with the adaptive a-weighted loss."""
    not_implemented("train-denoiser student", 4)


@cli.command('export', context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def export_cmd(args) -> None:
    """Export the student to an int8 TFLite step model with metadata."""
    not_implemented("train-denoiser export", 4)


@cli.command('evaluate', context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def evaluate_cmd(args) -> None:
    """Score models on the test split (PESQ, STOI, SI-SDR) with spectrograms."""
    not_implemented("train-denoiser evaluate", 4)


@cli.command('faults', context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def faults_cmd(args) -> None:
    """Train the background fault classifier."""
    not_implemented("train-denoiser faults", 10)


def main() -> None:
    cli(prog_name="train-denoiser")
