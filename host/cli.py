"""``host-calibrate``: calibration of the device's transport from the host."""

from __future__ import annotations

import click

from edge import __version__
from edge.cliutil import CONTEXT, Group, not_implemented
from host import calibrate_cli


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="host-calibrate")
def cli() -> None:
    """Tune a device's transport parameters from its measured link telemetry."""


cli.add_command(calibrate_cli.probe_cmd)


@cli.command('collect', context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def collect_cmd(args) -> None:
    """Pull link telemetry from a device while its stream runs."""
    not_implemented("host-calibrate collect", 8)


@cli.command('tune', context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def tune_cmd(args) -> None:
    """Cluster, discretise and search parameters with the genetic algorithm."""
    not_implemented("host-calibrate tune", 8)


@cli.command('apply', context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def apply_cmd(args) -> None:
    """Push a strategy to the device, verify it live, confirm or revert."""
    not_implemented("host-calibrate apply", 8)


@cli.command('report', context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def report_cmd(args) -> None:
    """Write a report with plots of a calibration run."""
    not_implemented("host-calibrate report", 8)


@cli.command('emulate', context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def emulate_cmd(args) -> None:
    """Relay UDP/TCP with seeded loss, delay, jitter, reordering and rate limits."""
    not_implemented("host-calibrate emulate", 7)


def main() -> None:
    cli(prog_name="host-calibrate")
