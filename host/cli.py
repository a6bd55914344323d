"""``host-calibrate``: calibration of the device's transport from the host."""

from __future__ import annotations

import click

from edge import __version__
from edge.cliutil import CONTEXT, Group
from host import calibrate_cli, emulate
from host.dashboard import cli as dashboard_cli
from host.system import cli as system_cli


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="host-calibrate")
def cli() -> None:
    """Tune a device's transport parameters from its measured link telemetry."""


cli.add_command(calibrate_cli.probe_cmd)
cli.add_command(calibrate_cli.collect_cmd)
cli.add_command(calibrate_cli.tune_cmd)
cli.add_command(calibrate_cli.apply_cmd)
cli.add_command(calibrate_cli.report_cmd)
cli.add_command(calibrate_cli.stream_group)


cli.add_command(emulate.emulate_cmd)
cli.add_command(system_cli.system_group)  # host/system (issue 20)
cli.add_command(dashboard_cli.dashboard_cmd)  # host/dashboard (issue 20)


def main() -> None:
    cli(prog_name="host-calibrate")
