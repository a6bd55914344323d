"""``host-calibrate dashboard``."""

from __future__ import annotations

import click


@click.command("dashboard")
@click.option("--state-dir", type=click.Path(file_okay=False), default="build/system",
              show_default=True, help="The running system's state directory (`system up`).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8765, show_default=True, help="Port to listen on.")
@click.option("--fake", type=click.IntRange(1, 16), metavar="N",
              help="Show N simulated devices instead of a system (demos, tests).")
def dashboard_cmd(state_dir, host, port, fake) -> None:
    """Serve a live web dashboard of the system's devices (until Ctrl-C)."""
    from host.dashboard.app import serve
    from host.dashboard.sources import FakeSource, SystemSource

    source = FakeSource(fake) if fake else SystemSource(state_dir)
    try:
        serve(source, host, port, print_fn=lambda msg: click.echo(msg, err=True))
    except OSError as e:  # the port is taken, or the address is not this machine's
        source.close()
        raise click.ClickException(f"cannot serve on {host}:{port}: {e.strerror or e}") from None
