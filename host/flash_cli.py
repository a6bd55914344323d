"""``flash-to-device``: signed bundles to devices."""

from __future__ import annotations

import click

from edge import __version__
from edge.cliutil import CONTEXT, Group, Number
from edge.slots import MAX_BUNDLE_BYTES, TRIAL_TIMEOUT_S

# finite and in range (click's own float types let nan and inf through)
MAX_BUNDLE_MB = Number(float, lo=0.0, hi=MAX_BUNDLE_BYTES[1] / 2**20, lo_open=True)
TRIAL_TIMEOUT = Number(float, lo=TRIAL_TIMEOUT_S[0], hi=TRIAL_TIMEOUT_S[1], lo_open=True)


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="flash-to-device")
def cli() -> None:
    """Build, sign and deploy model and config bundles to devices, with A/B slots and rollback."""


def _fmt_status(st: dict) -> str:
    lines = [f"active slot  {st['active'] or '-'} ({st['state']}"
             + (f", rolls back in {st['revert_in_s']} s unless confirmed" if st.get("revert_in_s")
                is not None else "") + ")",
             f"version      {st.get('version') or '- (packaged model)'}",
             f"previous     {st.get('previous') or '-'}"]
    for name, s in st["slots"].items():
        desc = "empty" if s is None else f"{s['version']} (model {s['model']} {s['model_version']})"
        lines.append(f"slot {name}       {desc}")
    lines.append(f"trusted keys {', '.join(st['trusted_keys']) or 'none'}")
    lv = st.get("live")
    if lv:
        runs = (f"bundle {lv['version']}" if lv.get("version") else "the packaged model")
        lines.append(f"live service {'running' if lv['running'] else 'not running'}: {runs} "
                     f"(model sha256 {str(lv.get('sha256'))[:16]}…, hop CPU p99 "
                     f"{lv.get('hop_cpu_p99_ms')} ms of {lv.get('budget_ms')}, "
                     f"{lv.get('overruns')} overruns)")
    if st.get("free_bytes") is not None:
        lines.append(f"free space   {st['free_bytes'] / 2**20:,.1f} MiB")
    return "\n".join(lines)


def _emit(obj: dict, as_json: bool, text: str) -> None:
    import json

    click.echo(json.dumps(obj, indent=1, default=str) if as_json else text)


def _target(port: str | None, root: str | None) -> None:
    if bool(port) == bool(root):
        raise click.UsageError("give a serial PORT or --root DIR (one of them)")


_json_opt = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
_baud_opt = click.option("--baud", "-b", type=int, default=921_600, show_default=True,
                         help="Baud rate of the serial link.")
_root_opt = click.option("--root", type=click.Path(file_okay=False),
                         help="Device state directory mounted here (instead of a PORT).")


@cli.command("keygen")
@click.argument("prefix", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Replace existing key files.")
def keygen_cmd(prefix, force) -> None:
    """Create an ed25519 signing key pair: PREFIX.key (keep secret) and PREFIX.pub."""
    from host.bundle import keygen

    key, pub, kid = keygen(prefix, force=force)
    click.echo(f"private key {key} (mode 0600: keep it secret)\npublic key  {pub}\n"
               f"key id      {kid}")


@cli.command("build")
@click.option("--model", "-m", required=True, type=click.Path(dir_okay=False),
              help="NAME.tflite (with NAME.json beside it).")
@click.option("--config", "-c", type=click.Path(dir_okay=False),
              help="Device config (JSON or TOML; a [transport] table is validated).")
@click.option("--key", "-k", required=True, type=click.Path(dir_okay=False),
              help="Private signing key from keygen.")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="Bundle file to write (.hlb).")
@click.option("--version", "version", help="Bundle version (default: the model's).")
@click.option("--profile", "profiles", multiple=True,
              help="Hardware profile it fits (repeat; default: any).")
@click.option("--min-runtime", default=__version__, show_default=True,
              help="Oldest hushlink runtime that may install it.")
def build_cmd(model, config, key, output, version, profiles, min_runtime) -> None:
    """Build and sign a bundle from a model and a config."""
    from host.bundle import build

    m = build(model, key, output, config=config, version=version, profiles=tuple(profiles),
              min_runtime=min_runtime)
    click.echo(f"{output}: bundle {m['version']} (model {m['model']['name']} "
               f"{m['model']['version']}), signed by key {m['key_id']}")


@cli.command("inspect")
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.option("--trust", multiple=True, type=click.Path(dir_okay=False),
              help="Public key(s) the signature must come from.")
@_json_opt
def inspect_cmd(bundle, trust, as_json) -> None:
    """Show and verify a bundle's manifest and signature."""
    from host.bundle import inspect

    info = inspect(bundle, tuple(trust))
    text = "\n".join(f"{k:13s} {v}" for k, v in info.items() if k not in ("files", "config"))
    text += "\nfiles\n" + "\n".join(f"  {f['path']:14s} {f['size']:>10,} B  {f['sha256']}"
                                    for f in info["files"])
    _emit(info, as_json, text)


@cli.command("init")
@click.option("--root", required=True, type=click.Path(file_okay=False),
              help="Device state directory (the agent's --state-dir).")
@click.option("--trust", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="Public key to trust (repeat for several).")
@click.option("--max-bundle-mb", type=MAX_BUNDLE_MB,
              help="Largest bundle accepted, MiB (default 256).")
@click.option("--trial-timeout", type=TRIAL_TIMEOUT,
              help="Seconds a switched bundle may stay unconfirmed (default 120, at most a day).")
@click.option("--profile", help="The device's hardware profile (bundles must fit it).")
def init_cmd(root, trust, max_bundle_mb, trial_timeout, profile) -> None:
    """Initialise a device state directory with the keys it trusts."""
    from host.flash import init_root

    ids = init_root(root, list(trust),
                    max_bundle_bytes=None if max_bundle_mb is None
                    else max(1, int(max_bundle_mb * 2**20)),
                    trial_timeout_s=trial_timeout, profile=profile)
    click.echo(f"{root}: trusts key(s) {', '.join(ids)}")


_devices_opt = click.option("--devices", "devices_file", type=click.Path(dir_okay=False),
                            help="A devices file: TOML [[device]] tables (port, name, baud) or "
                            "lines 'PORT [NAME]'.")


@cli.command("push")
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.option("--port", "-p", "ports", multiple=True, envvar="EDGE_PORT",
              help="Serial device or pyserial URL; repeat, or a quoted glob ('/dev/ttyUSB*'), "
              "for several devices at once.")
@_devices_opt
@_root_opt
@_baud_opt
@click.option("--allow-downgrade", is_flag=True, help="Install an older version than the active.")
@click.option("--no-confirm", is_flag=True,
              help="Leave the bundle on trial (it rolls back unless confirmed in time).")
@click.option("--trial-timeout", type=TRIAL_TIMEOUT,
              help="Seconds to confirm before rollback (at most a day).")
@click.option("--profile", help="With --root: the device's hardware profile (default: the one "
              "given to init).")
@click.option("--canary", type=Number(int, lo=0), default=0, show_default=True,
              help="Several devices: push to the first N, and to the rest only once they are "
              "healthy; stop starting devices at the first failure.")
@click.option("--workers", type=Number(int, lo=1, hi=256), default=16, show_default=True,
              help="Several devices: how many to push to at once.")
@click.option("--pace", is_flag=True, hidden=True, help="Pace writes at the baud (ptys).")
@_json_opt
def push_cmd(bundle, ports, devices_file, root, baud, allow_downgrade, no_confirm,
             trial_timeout, profile, canary, workers, pace, as_json) -> None:
    """Send a bundle to a device (or many), install it in the inactive slot and switch."""
    from edge.cliutil import err_console
    from host import flash, fleet

    if root and (ports or devices_file):
        raise click.UsageError("give serial PORTs / --devices or --root DIR (one of them)")
    if not root and (devices_file or len(ports) > 1
                     or (ports and fleet.GLOB_CHARS.search(ports[0]))):
        return _push_fleet(bundle, fleet.targets(ports, devices_file), baud, workers, canary,
                           as_json, allow_downgrade=allow_downgrade, confirm=not no_confirm,
                           trial_timeout_s=trial_timeout, pace=pace)
    port = ports[0] if ports else None  # one device: the single-device output
    _target(port, root)
    log = (lambda msg: None) if as_json else (lambda msg: err_console.print(msg))
    if root:
        out = flash.push_root(bundle, root, profile=profile, allow_downgrade=allow_downgrade,
                              confirm=not no_confirm, trial_timeout_s=trial_timeout, log=log)
    else:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        with Progress(TextColumn("upload"), BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), TimeRemainingColumn(), console=err_console,
                      transient=True) as bar:
            task = bar.add_task("upload", total=None)
            out = flash.push_serial(
                bundle, port, baud, allow_downgrade=allow_downgrade, confirm=not no_confirm,
                trial_timeout_s=trial_timeout, pace=pace, log=log,
                progress=lambda done, total: bar.update(task, completed=done, total=total))
    state = out["state"]
    text = (f"bundle {out['version']} active in slot {out['slot']} ({state}); health check: "
            f"max error {out['health']['max_error']} on {out['health']['backend']}")
    live = out.get("live")
    if live:
        text += "\nlive service: " + (live["detail"] if live.get("running") else live["note"])
    _emit(out, as_json, text)


def _push_fleet(bundle, devices, baud, workers, canary, as_json, **kw) -> None:
    """``push`` to several devices at once: a progress row each, then a result table."""
    from pathlib import Path

    from host import flash, fleet

    if not Path(bundle).is_file():  # one clear error, not the same one per device
        raise click.ClickException(f"cannot read bundle {bundle}")

    def op(t: fleet.Target, rep: fleet.Reporter) -> dict:
        return flash.push_serial(bundle, t.port, t.baud or baud, progress=rep.progress,
                                 stage=rep.stage, rollback_on_failure=True, **kw)

    with fleet.progress(devices, enabled=not as_json) as bar:
        results = fleet.run(devices, op, workers=workers, canary=canary,
                            reporter=bar.reporter, on_done=bar.done)

    def bundle_col(r: fleet.Result) -> str:
        d = r.detail
        if r.status == fleet.OK:
            return f"{d['version']} in slot {d['slot']} ({d['state']})"
        if r.status == fleet.ROLLED_BACK:
            return f"{d.get('version') or 'packaged'} (tried {d.get('tried')})"
        return "-"

    out = fleet.summary(results)
    out["bundle"] = str(bundle)
    _emit(out, as_json, fleet.render_table(results, [("active bundle", bundle_col)]))
    bad = fleet.failure_line(results, "push")
    if bad:
        raise click.ClickException(bad)


@cli.command("status")
@click.argument("port", required=False)
@_root_opt
@_baud_opt
@_json_opt
def status_cmd(port, root, baud, as_json) -> None:
    """Show a device's slots, active bundle and trial state."""
    from host import flash

    _target(port, root)
    st = flash.status_root(root) if root else flash.status_serial(port, baud)
    _emit(st, as_json, _fmt_status(st))


@cli.command("rollback")
@click.argument("port", required=False)
@_root_opt
@_baud_opt
def rollback_cmd(port, root, baud) -> None:
    """Switch a device back to its previous slot."""
    from host import flash

    _target(port, root)
    r = flash.rollback_root(root) if root else flash.rollback_serial(port, baud)
    click.echo(f"active: slot {r['slot'] or '-'} ({r['version'] or 'packaged model'})")


@cli.command("confirm")
@click.argument("port", required=False)
@_root_opt
@_baud_opt
def confirm_cmd(port, root, baud) -> None:
    """Confirm a bundle on trial (after checking it starts healthy)."""
    from host import flash

    _target(port, root)
    r = flash.confirm_root(root) if root else flash.confirm_serial(port, baud)
    live = r.get("live")
    click.echo(f"confirmed: bundle {r['version']} in slot {r['slot']}"
               + (f"; live service: {live['detail']}" if live and live.get("running") else ""))


def main() -> None:
    cli(prog_name="flash-to-device")
