"""``host-calibrate system up|down|status|impair`` (host/system/stack.py does the work)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edge.cliutil import CONTEXT, Group

STATE = click.option("--state-dir", type=click.Path(file_okay=False), default="build/system",
                     show_default=True, help="Where the running system keeps its manifest, "
                     "logs, ptys and device state.")


def _log(msg: str) -> None:
    click.echo(f"system: {msg}", err=True)


@click.group("system", cls=Group, context_settings=CONTEXT)
def system_group() -> None:
    """Run a host and N simulated devices on this machine (network namespaces, root)."""


@system_group.command("up")
@STATE
@click.option("--devices", "-n", type=click.IntRange(1, 8), default=2, show_default=True,
              help="How many simulated devices.")
@click.option("--prefix", default="hls", show_default=True,
              help="Namespace and interface name prefix (2-6 letters).")
@click.option("--data", type=click.Path(file_okay=False), default="../shared/data",
              show_default=True, help="Corpus the devices' recordings are mixed from "
              "(speech + noise); a synthetic voice when absent.")
@click.option("--dashboard-port", type=int, default=8765, show_default=True,
              help="Serve the dashboard on 127.0.0.1:PORT (0: no dashboard).")
@click.option("--timeout", type=float, default=90.0, show_default=True,
              help="Seconds to wait for every part to be healthy.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def up_cmd(state_dir, devices, prefix, data, dashboard_port, timeout, as_json) -> None:
    """Bring the system up and wait until it is healthy (returns; `down` stops it)."""
    import re
    from dataclasses import asdict

    from host.system.stack import up

    if not re.fullmatch(r"[a-z][a-z0-9]{1,5}", prefix):
        raise click.UsageError("--prefix: 2-6 lower-case letters or digits, a letter first")
    m = up(Path(state_dir), devices, prefix=prefix, data=Path(data),
           dashboard_port=dashboard_port or None, timeout_s=timeout, log=_log)
    if as_json:
        click.echo(json.dumps(asdict(m)))
        return
    click.echo(f"system up: {len(m.devices)} devices, {len(m.procs)} processes, state in "
               f"{m.root}")
    for d in m.devices:
        click.echo(f"  device {d['index']}: netns {d['ns']} {d['ip']}, serial {d['tty_host']}")
    if m.dashboard:
        click.echo(f"  dashboard: {m.dashboard}")


@system_group.command("down")
@STATE
@click.option("--prefix", help="Also delete namespaces of this prefix (default: the "
              "manifest's).")
def down_cmd(state_dir, prefix) -> None:
    """Stop every process, delete the namespaces and the state directory (idempotent)."""
    from host.system.stack import down

    r = down(Path(state_dir), prefix=prefix, log=_log)
    left = {k: v for k, v in r["left"].items() if v}
    if left:
        raise click.ClickException(f"left behind: {json.dumps(left)}")
    click.echo(f"system down: {len(r['stopped'])} processes stopped, "
               f"{len(r['namespaces'])} namespaces deleted, nothing left behind")


@system_group.command("status")
@STATE
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def status_cmd(state_dir, as_json) -> None:
    """Each process (running, or its exit status and log), each device's PTP and stream.

    Exits 1 when a process has crashed."""
    from host.system.stack import health, load

    h = health(load(Path(state_dir)))
    if as_json:
        click.echo(json.dumps(h))
    else:
        for p in h["processes"]:
            extra = "" if p["state"] == "running" else \
                f" exit {p['rc']}: {' | '.join(p['log_tail'])}"
            click.echo(f"{p['name']:16s} {p['state']:8s} pid {p['pid']}{extra}")
        for d in h["devices"]:
            click.echo(f"device {d['index']}: ptp {d['ptp_port']} offset {d['ptp_offset_ns']} "
                       f"ns, live heartbeat {d['live_age_s']} s ago, telemetry "
                       f"{d['telemetry_age_s']} s ago")
    if h["crashed"]:
        raise click.ClickException(f"crashed: {', '.join(h['crashed'])}")


@system_group.command("impair")
@STATE
@click.option("--device", "-d", type=int, required=True, help="Device number (1..N).")
@click.option("--loss", type=float, default=0.0, show_default=True,
              help="Drop this % of the device's stream packets at the host.")
@click.option("--rate", "rate_kbit", type=float, default=0.0, show_default=True,
              help="Cap the device's uplink at this many kbit/s (0: no cap).")
def impair_cmd(state_dir, device, loss, rate_kbit) -> None:
    """Impair one device's link (replaces its previous impairment; --loss 0 clears)."""
    from host.system.stack import impair

    click.echo(json.dumps(impair(Path(state_dir), device, loss_pct=loss, rate_kbit=rate_kbit)))


@system_group.command("demo")
@click.option("--devices", "-n", type=click.IntRange(2, 4), default=2, show_default=True,
              help="How many simulated devices.")
@click.option("--quick", is_flag=True, help="Shorter measurements (about half the time).")
@click.option("--data", type=click.Path(file_okay=False), default="../shared/data",
              show_default=True, help="Corpus the devices' recordings are mixed from.")
@click.option("--state-dir", type=click.Path(file_okay=False), default="build/system-demo",
              show_default=True, help="The demo's system (removed at the end).")
@click.option("--prefix", default="hlsdm", show_default=True,
              help="Namespace and interface name prefix.")
@click.option("--loss", type=click.FloatRange(0, 50), default=5.0, show_default=True,
              help="Device 1's impairment: % of its packets dropped at the host.")
@click.option("--rate", "rate_kbit", type=click.FloatRange(8, 10_000), default=72.0,
              show_default=True, help="Device 1's impairment: uplink cap, kbit/s (tbf, which "
              "counts IP/UDP headers: the default 64 kbit/s stream needs ~81, 50 needs ~67).")
@click.option("--out", type=click.Path(file_okay=False), default="benchmarks/results",
              show_default=True, help="Where system_demo.json and .md go.")
def demo_cmd(devices, quick, data, state_dir, prefix, loss, rate_kbit, out) -> None:
    """Up, impair, calibrate, fleet push with a canary, hum and its repair, down; a report.

    Tears down on failure and Ctrl-C too; exits 1 when a step did not show what it should."""
    from rich.console import Console

    from host.system.demo import Demo, ok, rich_table, table

    con = Console()
    res = Demo(Path(state_dir).resolve(), devices=devices, quick=quick,
               data=Path(data) if Path(data).is_dir() else None, prefix=prefix,
               loss_pct=loss, rate_kbit=rate_kbit, console=con).run()
    md = table(res)
    con.print(rich_table(md))
    con.print(md.strip().splitlines()[-1], highlight=False)
    _write(Path(out), res, md)
    bad = ok(res)
    if bad:
        raise click.ClickException("system demo: " + "; ".join(bad))
    click.echo(f"system demo: green -> {Path(out) / 'system_demo.md'}")


def _write(out: Path, res: dict, md: str) -> None:
    """As benchmarks/results_io.py: the numbers and the README's table side by side."""
    out.mkdir(parents=True, exist_ok=True)
    here = f"{Path.cwd()}/"  # results hold repo-relative paths (ports, messages)
    (out / "system_demo.json").write_text(json.dumps(res, indent=1, default=str)
                                          .replace(here, ""))
    (out / "system_demo.md").write_text(md)
