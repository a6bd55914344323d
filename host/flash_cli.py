"""``flash-to-device``: signed bundles to devices."""

from __future__ import annotations

import click

from edge import __version__
from edge.cliutil import CONTEXT, Group, not_implemented


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="flash-to-device")
def cli() -> None:
    """Build, sign and deploy model and config bundles to devices, with A/B slots and rollback."""


@cli.command('keygen', context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def keygen_cmd(args) -> None:
    """Create an ed25519 signing key pair."""
    not_implemented("flash-to-device keygen", 9)


@cli.command('build', context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def build_cmd(args) -> None:
    """Build and sign a bundle from a model and a config."""
    not_implemented("flash-to-device build", 9)


@cli.command('inspect', context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def inspect_cmd(args) -> None:
    """Show and verify a bundle's manifest and signature."""
    not_implemented("flash-to-device inspect", 9)


@cli.command('init', context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def init_cmd(args) -> None:
    """Initialise a device state directory with the keys it trusts."""
    not_implemented("flash-to-device init", 9)


@cli.command('push', context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def push_cmd(args) -> None:
    """Send a bundle to a device, install it in the inactive slot and switch."""
    not_implemented("flash-to-device push", 9)


@cli.command('status', context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def status_cmd(args) -> None:
    """Show a device's slots, active bundle and trial state."""
    not_implemented("flash-to-device status", 9)


@cli.command('rollback', context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def rollback_cmd(args) -> None:
    """Switch a device back to its previous slot."""
    not_implemented("flash-to-device rollback", 9)


def main() -> None:
    cli(prog_name="flash-to-device")
