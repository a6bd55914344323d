"""``host-calibrate probe | collect | tune | apply | report``: thin click wrappers; the work is
in ``host.link`` (serial), ``host.calibrate`` (pipeline) and ``host.report``. Heavy imports
(scikit-learn, matplotlib) happen inside the commands so ``--help`` stays fast."""

from __future__ import annotations

import json

import click

PORT = click.argument("port", envvar="EDGE_PORT")
BAUD = click.option("--baud", "-b", type=int, default=921_600, show_default=True,
                    help="Baud rate of the serial port.")


def _weights_options(f):
    """The fitness trade-off flags (docs: host/fitness.py)."""
    for name, default, text in reversed([
        ("w-quality", 1.0, "weight of audio quality (0..1 score)"),
        ("w-latency", 0.5, "cost per 100 ms of one-way network latency"),
        ("w-buffer", 0.5, "cost per 100 ms of receiver buffer"),
        ("w-bitrate", 0.05, "cost per 100 kbps of codec bitrate"),
    ]):
        f = click.option(f"--{name}", type=float, default=default, show_default=True,
                         help=text.capitalize() + ".")(f)
    return f


def _weights(kw: dict):
    from host.fitness import Weights

    return Weights(quality=kw.pop("w_quality"), latency=kw.pop("w_latency"),
                   buffer=kw.pop("w_buffer"), bitrate=kw.pop("w_bitrate"))


@click.command("probe")
@PORT
@BAUD
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def probe_cmd(port: str, baud: int, as_json: bool) -> None:
    """Show a device's identity and versions over serial."""
    from host.link import connect

    with connect(port, baud) as dev:
        info = dev.info
        info["params"] = dev.get_params()["active"]
    if as_json:
        click.echo(json.dumps(info))
    else:
        for k, v in info.items():
            click.echo(f"{k:12s} {v}")


def main_commands() -> list[click.Command]:
    return [probe_cmd]
