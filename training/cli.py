"""``train-denoiser``: training and export of the denoiser."""

from __future__ import annotations

import click

from edge import __version__
from edge.cliutil import CONTEXT, Group


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="train-denoiser")
def cli() -> None:
    """Train the teacher ensemble, distil the streaming student and export it to TFLite int8."""


@cli.command('faults', context_settings={"ignore_unknown_options": True,
                                          "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def faults_cmd(args) -> None:
    """Train the background fault classifier, export it to int8 TFLite, evaluate it."""
    from training.faults_train import faults_cmd as real  # lazy: torch only when used

    real.main(list(args), prog_name="train-denoiser faults", standalone_mode=False)


def _denoiser_commands() -> None:
    # issue 4: torch is imported inside the commands, so --help stays fast
    from training import commands

    for c in (commands.corpus_cmd, commands.prepare_cmd, commands.teacher_cmd, commands.student_cmd,
              commands.export_cmd, commands.evaluate_cmd):
        cli.add_command(c)


_denoiser_commands()


def main() -> None:
    cli(prog_name="train-denoiser")


if __name__ == "__main__":  # torchrun ... -m training.cli student ...
    main()
