"""``edge-denoise``: the on-device runtime's commands."""

from __future__ import annotations

import click

from edge import __version__
from edge.cliutil import CONTEXT, Group
from edge.clock.cli import clock_group
from edge.faults.cli import faults_command
from edge.live_cli import file_command, live_command, virtual_mic_command
from edge.transport import cli as transport_cli


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="edge-denoise")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"],
                                               case_sensitive=False),
              envvar="HUSHLINK_LOG_LEVEL",
              help="Log to stderr with time and level from this level on (services: info).")
def cli(log_level) -> None:
    """Denoise speech on the device, keep its clock on PTP time, stream it, answer the host."""
    if log_level:
        from edge.logs import setup

        setup(log_level)


cli.add_command(file_command)  # edge/live_cli.py (issue 5)
cli.add_command(live_command)
cli.add_command(virtual_mic_command)  # edge/soundserver.py (issue 22)


cli.add_command(clock_group)  # edge/clock/cli.py (issue 6)


cli.add_command(transport_cli.send_cmd)
cli.add_command(transport_cli.receive_cmd)


@cli.command()
@click.option("--port", "-p", "port", envvar="EDGE_PORT", default="/dev/ttyGS0",
              show_default=True, help="Serial device or pyserial URL (socket://, loop://).")
@click.option("--baud", "-b", type=int, default=921_600, show_default=True, help="Baud rate.")
@click.option("--state-dir", type=click.Path(file_okay=False), default="/var/lib/hushlink",
              show_default=True, help="Device id, active parameters, uploaded files.")
@click.option("--profile", default="generic-linux", show_default=True,
              help="Hardware profile name reported to the host.")
@click.option("--telemetry", "telemetry_path", type=click.Path(dir_okay=False),
              help="JSON-lines telemetry log of the receiver (Telemetry.to_dict per line).")
@click.option("--fault-events", "events_path", type=click.Path(dir_okay=False),
              help="JSON-lines fault-event log of `edge-denoise live --fix-faults` (get_events).")
@click.option("--stream-cmd", help="Command run by start_stream; {bitrate_kbps}, {protocol}, "
              "{buffer_ms}, {share}, {fec}, {loss_hint_pct} are replaced; with "
              "{params_file} it follows parameter changes itself (else it is restarted).")
@click.option("--plugin", "plugins", multiple=True, help="Extra handler module to import.")
@click.option("--pace", is_flag=True, help="Pace writes at the baud rate (ptys ignore it).")
def serve(port, baud, state_dir, profile, telemetry_path, events_path, stream_cmd, plugins,
          pace) -> None:
    """Answer the host over the serial control link (until Ctrl-C)."""
    import signal

    from edge.agent import Agent, FileTelemetry
    from edge.logs import reporter
    from edge.paramfollow import stream_for
    from edge.profile import DeviceProfile

    DeviceProfile.by_name(profile)  # a bad profile is an error now, not on the host's hello
    agent = Agent(port, baud, state_dir=state_dir, profile=profile,
                  log=reporter("edge.agent", "edge-denoise serve"),
                  telemetry=FileTelemetry(telemetry_path) if telemetry_path else None,
                  stream=stream_for(stream_cmd, state_dir),
                  plugins=tuple(plugins), pace=pace,
                  events=FileTelemetry(events_path, parse=dict) if events_path else None)
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    try:
        agent.serve_forever()
    finally:
        if agent.stream is not None:
            agent.stream.stop()


cli.add_command(faults_command)  # edge/faults/cli.py (issue 10)


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info(path: str, as_json: bool) -> None:
    """Check an audio file and show what hushlink will read from it."""
    import json

    from edge.audio import load_audio

    clip = load_audio(path)
    out = {"path": path, "source_rate": clip.source_rate, "channels": clip.source_channels,
           "subtype": clip.source_subtype, "seconds": round(clip.seconds, 3),
           "peak": round(float(abs(clip.samples).max()), 4)}
    if as_json:
        click.echo(json.dumps(out))
    else:
        for k, v in out.items():
            click.echo(f"{k:12s} {v}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def profiles(as_json: bool) -> None:
    """List the built-in hardware profiles."""
    import json

    from edge.profile import DeviceProfile, names

    rows = [DeviceProfile.by_name(n) for n in names()]
    if as_json:
        click.echo(json.dumps([{"name": p.name, "description": p.description} for p in rows]))
    else:
        for p in rows:
            click.echo(f"{p.name:18s} {p.description}")


def main() -> None:
    cli(prog_name="edge-denoise")
