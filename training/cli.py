"""``train-denoiser``: training and export of the denoiser."""

from __future__ import annotations

import click

from edge import __version__
from edge.cliutil import CONTEXT, Group, not_implemented


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="train-denoiser")
def cli() -> None:
    """Train the teacher ensemble, distil the streaming student and export it to TFLite int8."""


@cli.command('faults', context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def faults_cmd(args) -> None:
    """Train the background fault classifier."""
    not_implemented("train-denoiser faults", 10)


def _denoiser_commands() -> None:
    # issue 4: torch is imported inside the commands, so --help stays fast
    from training import commands

    for c in (commands.prepare_cmd, commands.teacher_cmd, commands.student_cmd,
              commands.export_cmd, commands.evaluate_cmd):
        cli.add_command(c)


_denoiser_commands()


def main() -> None:
    cli(prog_name="train-denoiser")
