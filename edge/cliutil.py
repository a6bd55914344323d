"""What the four command-line tools share: error translation, stubs, progress on stderr."""

from __future__ import annotations

import click
from rich.console import Console

from edge import validate
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
        except HushlinkError as e:  # one line, whatever the message held (a library's error)
            raise click.ClickException(validate.one_line(str(e))) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


def not_implemented(what: str, issue: int) -> None:
    """A stub for a subcommand that a later issue fills in: says so and exits non-zero."""
    raise click.ClickException(f"{what}: not implemented yet (tracked in issue #{issue})")


class Number(click.ParamType):
    """A finite number within a range, for options: ``type=Number(float, lo=0, lo_open=True)``.
    click's FloatRange lets ``nan`` through (every comparison with NaN is false) and
    accepts ``inf``; this refuses both."""

    def __init__(self, kind: type = float, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False):
        self.kind, self.lo, self.hi, self.lo_open = kind, lo, hi, lo_open
        self.name = "integer" if kind is int else "float"

    def convert(self, value, param, ctx):
        if isinstance(value, str):
            try:
                value = int(value, 10) if self.kind is int else float(value)
            except ValueError:
                self.fail(f"{value!r} is not {'an integer' if self.kind is int else 'a number'}",
                          param, ctx)
        try:
            return validate.number("", value, kind=self.kind, lo=self.lo, hi=self.hi,
                                   lo_open=self.lo_open)
        except validate.InvalidValue as e:
            self.fail(str(e), param, ctx)


def param_type(name: str) -> Number:
    """The click type of a numeric transport parameter, with its range from edge/params.py."""
    from edge.params import RANGES

    kind, lo, hi, lo_open = RANGES[name]
    return Number(kind, lo, hi, lo_open)
