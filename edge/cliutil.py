"""What the four command-line tools share: error translation, stubs, progress on stderr."""

from __future__ import annotations

import click
from rich.console import Console

from edge.errors import HushlinkError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

# Progress and status go to stderr; results (and --json) to stdout.
err_console = Console(stderr=True)


class Group(click.Group):
    """A click group that turns expected failures into one-line errors (exit 1), never a
    traceback, and Ctrl-C into exit 130."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HushlinkError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


def not_implemented(what: str, issue: int) -> None:
    """A stub for a subcommand that a later issue fills in: says so and exits non-zero."""
    raise click.ClickException(f"{what}: not implemented yet (tracked in issue #{issue})")
