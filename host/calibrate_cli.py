"""``host-calibrate probe | collect | tune | apply | report``: thin click wrappers; the work is
in ``host.link`` (serial), ``host.calibrate`` (pipeline) and ``host.report``. Heavy imports
(scikit-learn, matplotlib) happen inside the commands so ``--help`` stays fast."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click

from edge.cliutil import Number, err_console
from edge.errors import HushlinkError
from edge.params import TransportParams

PORT = click.argument("port", envvar="EDGE_PORT")
SECONDS = Number(float, lo=0.0, hi=86_400.0, lo_open=True)  # finite: nan and inf are refused
WEIGHT = Number(float, lo=0.0, hi=1e3)
BAUD = click.option("--baud", "-b", type=int, default=921_600, show_default=True,
                    help="Baud rate of the serial port.")
# several devices at once (host/fleet.py): PORT repeated or a quoted glob, or a devices file
PORTS = click.argument("ports", metavar="PORT...", nargs=-1, envvar="EDGE_PORT")
DEVICES = click.option("--devices", "devices_file", type=click.Path(dir_okay=False),
                       help="Several devices: a devices file (TOML [[device]] tables with "
                       "port, name, baud; or lines 'PORT [NAME]').")
WORKERS = click.option("--workers", type=Number(int, 1, 256), default=16, show_default=True,
                       help="Several devices: how many at once.")
JSON_OPT = click.option("--json", "as_json", is_flag=True,
                        help="Several devices: print the per-device results as JSON.")


def _fleet(ports, devices_file):
    """The devices to work on: None for one plain PORT (the single-device command as it
    always was), else the fleet's targets."""
    from host import fleet

    if not devices_file and len(ports) == 1 and not fleet.GLOB_CHARS.search(ports[0]):
        return None
    if not ports and not devices_file:
        raise click.UsageError("give a PORT (several, a glob, or --devices FILE)")
    return fleet.targets(ports, devices_file)


def _run_fleet(what: str, devices, op, workers: int, as_json: bool, columns=(),
               source: str = "port") -> None:
    """Run ``op`` on every device with a progress row each; print the table or JSON; exit 1
    unless every device succeeded."""
    from host import fleet

    with fleet.progress(devices, enabled=not as_json) as bar:
        results = fleet.run(devices, op, workers=workers, reporter=bar.reporter,
                            on_done=bar.done)
    if as_json:
        click.echo(json.dumps(fleet.summary(results), indent=1, default=str))
    else:
        click.echo(fleet.render_table(results, columns, source=source))
    bad = fleet.failure_line(results, what)
    if bad:
        raise click.ClickException(bad)


def _weights_options(f):
    """The fitness trade-off flags (docs: host/fitness.py)."""
    for name, default, text in reversed([
        ("w-quality", 1.0, "weight of audio quality (0..1 score)"),
        ("w-latency", 0.5, "cost per 100 ms of one-way network latency"),
        ("w-buffer", 0.5, "cost per 100 ms of receiver buffer"),
        ("w-bitrate", 0.05, "cost per 100 kbps of codec bitrate"),
    ]):
        f = click.option(f"--{name}", type=WEIGHT, default=default, show_default=True,
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




# ---------------------------------------------------------------- plain functions

def _atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def newest_t(dev) -> float:
    """Time stamp of the device's newest telemetry record (0 when it has none)."""
    r = dev.call("get_telemetry", {"window": 0.0})
    if not r.get("source"):
        raise CalibrationIOError("the device has no telemetry source (start `edge-denoise serve "
                                 "--telemetry FILE` next to the receiver)")
    return float(r["rows"][-1][r["fields"].index("t")]) if r["rows"] else 0.0


class CalibrationIOError(HushlinkError):
    pass


def stream_status(dev) -> dict | None:
    """The device's stream state, or None from an agent that predates ``stream_status``."""
    from host.link import RemoteError

    try:
        return dev.call("stream_status")
    except RemoteError as e:
        if e.code == "unknown_method":
            return None
        raise


def require_stream(dev) -> None:
    """Refuse to measure a link on which the device's own stream is stopped."""
    st = stream_status(dev)
    if st is not None and st["configured"] and not st["running"]:
        raise CalibrationIOError("the device's stream is not running: start it with "
                                 "`host-calibrate stream start PORT`")


def start_stream(dev, wait_s: float = 10.0) -> dict:
    """Start the device's stream; with ``wait_s`` > 0 wait until its telemetry shows packets
    arriving. Returns the first live telemetry record (or {} without waiting)."""
    from host.linkcheck import is_live

    since = newest_t(dev) if wait_s > 0 else 0.0
    if not dev.start_stream().get("running"):
        raise CalibrationIOError("the stream command exited at once (see serve's log)")
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        time.sleep(0.25)
        st = stream_status(dev)
        if st is not None and not st["running"]:
            raise CalibrationIOError("the stream command exited (see serve's log)")
        live = [t.to_dict() for t in dev.telemetry(window=1e9, since=since)]
        live = [r for r in live if is_live(r)]
        if live:
            return live[0]
    if wait_s > 0:
        raise CalibrationIOError(f"the stream runs, but no packets were reported in {wait_s:g} "
                                 "s: is the receiver running and reachable?")
    return {}


def measure(dev, seconds: float, tick=None) -> tuple[list[dict], dict]:
    """Telemetry records that arrive during the next ``seconds``, and the params active."""
    since = newest_t(dev)
    end = time.monotonic() + seconds
    recs: list[dict] = []
    next_pull = time.monotonic() + 5.0
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(left, 0.25))
        if tick:
            tick()
        if time.monotonic() >= next_pull:  # pull as we go: the device's ring is bounded
            recs += [t.to_dict() for t in dev.telemetry(window=1e9, since=since)]
            since = recs[-1]["t"] if recs else since
            next_pull = time.monotonic() + 5.0
    recs += [t.to_dict() for t in dev.telemetry(window=1e9, since=since)]
    return recs, dev.get_params()["active"]


def sweep_candidates(n: int, current: dict, seed: int, pins: dict | None = None) -> list[dict]:
    """``n`` parameter sets: the current one, then seeded uniform draws over the ranges
    (with ``pins`` held fixed)."""
    import numpy as np

    from host import ga

    rng = np.random.default_rng(seed)
    out = [current]
    base = TransportParams.from_dict(current)
    while len(out) < n:
        out.append(ga.to_params(rng.uniform(ga.LO, ga.HI), base).replace(**(pins or {}))
                   .to_dict())
    return out[:n]


def collect(dev, duration: float, *, sweep: int = 0, settle: float = 2.0, seed: int = 0,
            pins: dict | None = None, progress=None) -> list[dict]:
    """Pull telemetry for ``duration`` s; with ``sweep`` = N, N parameter sets in turn (each
    on trial, so the device reverts by itself if the host vanishes), then the original set
    restored. Returns ``{"telemetry": ..., "params": ...}`` lines."""
    from host.linkcheck import is_live

    out: list[dict] = []
    skipped = [0]

    def take(recs, params):  # seconds without packets are no measurement: drop them
        require_stream(dev)
        live = [r for r in recs if is_live(r)]
        skipped[0] += len(recs) - len(live)
        if not live:
            raise CalibrationIOError(f"no packets arrived while measuring {params}: is the "
                                     "stream running (`host-calibrate stream start PORT`)?")
        return [{"telemetry": r, "params": params} for r in live]

    require_stream(dev)
    if sweep <= 1:
        out = take(*measure(dev, duration, progress))
    else:
        original = dev.get_params()["active"]
        dwell = duration / sweep
        try:
            for cand in sweep_candidates(sweep, original, seed, pins):
                dev.set_params(cand)
                dev.apply(timeout_s=dwell + settle + 30)
                time.sleep(min(settle, dwell / 2))
                out += take(*measure(dev, max(dwell - settle, dwell / 2), progress))
        finally:
            dev.set_params(original)
            dev.apply(timeout_s=0)
    if skipped[0]:
        err_console.print(f"collect: skipped {skipped[0]} second(s) without packets")
    return out


def measure_link(dev, seconds: float, weights, tick=None, probe=None) -> dict:
    """The real link over the next ``seconds``: live telemetry, its means, C measured from
    it, and (with ``probe``) PESQ-WB of the reference clip as the receiver played it."""
    from host.fitness import measured_cost
    from host.linkcheck import is_live, summarize

    recs, params = measure(dev, seconds, tick)
    live = [r for r in recs if is_live(r)]
    if not live:
        raise CalibrationIOError(f"no packets arrived in {seconds:g} s: is the stream running "
                                 "(`host-calibrate stream start PORT`)?")
    out = {"params": params, "cost": measured_cost(live, params, weights), "telemetry": live,
           "link": summarize(recs)}
    if probe is not None:
        out.update(probe(seconds))
    return out


def apply_strategy(dev, params: dict, weights, *, seconds: float = 10.0, settle: float = 2.0,
                   trial_s: float = 120.0, keep_worse: bool = False, tick=None, probe=None,
                   pesq_tolerance: float = 0.1) -> dict:
    """Measure the real link with the current params, push ``params`` on trial, measure it
    again, and confirm when the measured C did not get worse and (with ``probe``) PESQ-WB did
    not drop by more than ``pesq_tolerance``; else revert."""
    require_stream(dev)
    before = measure_link(dev, seconds, weights, tick, probe)
    dev.set_params(params)
    dev.apply(timeout_s=trial_s)
    try:
        time.sleep(settle)
        require_stream(dev)
        after = measure_link(dev, seconds, weights, tick, probe)
    except BaseException:
        dev.revert()
        raise
    better = after["cost"] <= before["cost"] and (
        "pesq_wb" not in after or after["pesq_wb"] >= before["pesq_wb"] - pesq_tolerance)
    if better or keep_worse:
        dev.confirm()
    else:
        dev.revert()
    return {"before": before, "after": after, "confirmed": better or keep_worse,
            "weights": weights.to_dict()}


# ---------------------------------------------------------------- commands

def _progress():
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.completed:.0f}/{task.total:.0f}"), TimeRemainingColumn(),
                    console=err_console, transient=True)


@click.command("collect")
@PORTS
@BAUD
@DEVICES
@click.option("--duration", "-d", type=SECONDS, default=60.0, show_default=True,
              help="Seconds of telemetry to pull.")
@click.option("--out", "-o", type=click.Path(dir_okay=False), default="telemetry.jsonl",
              show_default=True, help="Output: JSON lines {telemetry, params}. Several devices: "
              "{device} in it is the device's name (else appended: telemetry-NAME.jsonl).")
@click.option("--sweep", type=Number(int, 0, 1000), default=0,
              help="Try N parameter sets in turn (first: the current one); the original set "
              "is restored at the end.")
@click.option("--settle", type=Number(float, 0.0, 3600.0), default=2.0, show_default=True,
              help="Seconds to wait after each parameter change before measuring.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sweep.")
@click.option("--pin", "pins", multiple=True, metavar="KEY=VALUE",
              help="Keep a parameter fixed during the sweep, e.g. --pin protocol=udp.")
@WORKERS
@JSON_OPT
def collect_cmd(ports, baud, devices_file, duration, out, sweep, settle, seed, pins, workers,
                as_json) -> None:
    """Pull link telemetry from a device (or many at once) while its stream runs."""
    from host.link import connect

    pinned = _parse_pins(pins)
    devices = _fleet(ports, devices_file)
    if devices is not None:
        return _collect_fleet(devices, baud, duration, out, sweep, settle, seed, pinned, workers,
                              as_json)
    with connect(ports[0], baud) as dev, _progress() as prog:
        task = prog.add_task("collecting", total=duration)
        t0 = time.monotonic()
        lines = collect(dev, duration, sweep=sweep, settle=settle, seed=seed,
                        pins=pinned, progress=lambda: prog.update(task, completed=min(
                            duration, time.monotonic() - t0)))
    click.echo(_write_collected(lines, duration, Path(out)))


def _write_collected(lines: list[dict], duration: float, out: Path) -> str:
    if not lines:
        raise CalibrationIOError(f"no telemetry arrived in {duration:g} s: is the stream "
                                 "running (`host-calibrate stream start PORT`)?")
    _atomic_text(out, "".join(json.dumps(x) + "\n" for x in lines))
    return (f"{len(lines)} records, {len({json.dumps(x['params']) for x in lines})} "
            f"parameter set(s) -> {out}")


def _collect_fleet(devices, baud, duration, out, sweep, settle, seed, pins, workers,
                   as_json) -> None:
    from host import fleet
    from host.link import connect

    def op(t, rep) -> dict:
        path = fleet.out_path(out, t.name)
        rep.stage("collecting")
        with connect(t.port, t.baud or baud) as dev:
            t0 = time.monotonic()
            lines = collect(dev, duration, sweep=sweep, settle=settle, seed=seed, pins=pins,
                            progress=lambda: rep.progress(min(duration, time.monotonic() - t0),
                                                          duration))
        _write_collected(lines, duration, path)
        return {"records": len(lines), "param_sets": len({json.dumps(x["params"])
                                                          for x in lines}), "out": str(path)}

    _run_fleet("collect", devices, op, workers, as_json,
               [("records", lambda r: r.detail.get("records", "-")),
                ("output", lambda r: r.detail.get("out", "-"))])


def _warn(message: str) -> None:
    """A warning on stderr, one line (e.g. the malformed lines a telemetry file held)."""
    err_console.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)


def _parse_pins(pins) -> dict:
    out = {}
    for item in pins:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.UsageError(f"--pin {item!r}: expected KEY=VALUE")
        default = getattr(TransportParams(), key, None)
        if default is None:
            raise click.UsageError(f"--pin {key}: not a transport parameter")
        if isinstance(default, bool):
            out[key] = value.lower() in ("1", "true", "yes", "on")
        else:
            try:
                out[key] = type(default)(value)
            except ValueError:
                raise click.UsageError(f"--pin {item!r}: bad value") from None
    return out


@click.command("tune")
@click.argument("telemetry", nargs=-1, required=True,
                type=click.Path(dir_okay=False, exists=True))
@click.option("--out", "-o", type=click.Path(dir_okay=False), default="strategy.json",
              show_default=True, help="Where to write the strategy. Several telemetry files "
              "(one per device): {device} in it is the file's name without 'telemetry-' and "
              "the suffix (else appended: strategy-NAME.json).")
@click.option("--clusters", type=Number(int, 1, 100), help="k-means clusters (default: chosen "
              "from the data by silhouette over 2-6; one when there is no structure).")
@click.option("--bins", "k_bins", type=Number(int, 1, 100), help="K uniform bins per "
              "monitoring parameter (default: chosen from the data by silhouette over 2-8).")
@click.option("--pop", type=Number(int, 4, 10_000), default=24, show_default=True,
              help="GA population.")
@click.option("--generations", type=Number(int, 0, 10_000), default=20, show_default=True,
              help="GA generations.")
@click.option("--s1", type=Number(float), help="Fixed threshold S1 (default: 1/3 quantile of C).")
@click.option("--s2", type=Number(float), help="Fixed threshold S2 (default: 2/3 quantile of C).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed (deterministic).")
@click.option("--pin", "pins", multiple=True, metavar="KEY=VALUE",
              help="Fix a parameter, e.g. --pin protocol=udp (repeatable).")
@click.option("--capacity", type=Number(float, lo=0.0, hi=1e8, lo_open=True), default=None,
              help="Link capacity, kbit/s, overriding the one the receiver measured.")
@WORKERS
@JSON_OPT
@_weights_options
def tune_cmd(telemetry, out, clusters, k_bins, pop, generations, s1, s2, seed, pins, workers,
             as_json, capacity, **kw) -> None:
    """Cluster, discretise and search parameters with the genetic algorithm (per file)."""
    from host import calibrate, ga

    if (clusters is not None and clusters < 1) or (k_bins is not None and k_bins < 1) \
            or pop < 4 or generations < 0:
        raise click.UsageError("need --clusters >= 1, --bins >= 1, --pop >= 4, "
                               "--generations >= 0")
    if s1 is not None and s2 is not None and not s1 < s2:
        raise click.UsageError("need S1 < S2")
    weights = _weights(kw)
    pinned = _parse_pins(pins)
    cfg = ga.GAConfig(pop=pop, generations=generations, s1=s1, s2=s2, seed=seed)

    def run_tune(records, on_generation):
        return calibrate.tune(records, n_clusters=clusters, k_bins=k_bins, weights=weights,
                              cfg=cfg, pins=pinned, on_generation=on_generation,
                              capacity_kbps=capacity)

    if len(telemetry) > 1:
        return _tune_fleet(telemetry, out, run_tune, seed, cfg, workers, as_json)
    records = calibrate.load_records(telemetry[0], on_skip=_warn)
    with _progress() as prog:
        task = prog.add_task("genetic algorithm", total=generations)
        res = run_tune(records, lambda g, _: prog.update(task, completed=g + 1))
    _atomic_text(Path(out), json.dumps(res.to_dict(seed, cfg), indent=1) + "\n")
    for what, c in res.choices.items():
        click.echo(f"{what}: {c.value} ({c.reason})", err=True)
    caps = sorted({round(c.capacity_kbps, 1) for c in res.model.conditions})
    how = ("given" if capacity else "measured by probe trains"
           if any(r.telemetry.capacity_kbps > 0 for r in records) else
           "inferred from bandwidth use: no capacity in the telemetry")
    click.echo(f"capacity: {', '.join(f'{c:g}' for c in caps)} kbps ({how})", err=True)
    click.echo(f"{_strategy_line(res)} -> {out}")


def _strategy_line(res) -> str:
    p = res.params
    return (f"strategy: bitrate {p.bitrate_kbps} kbps, {p.protocol}, buffer {p.buffer_ms} ms, "
            f"share {p.share:g}; predicted C {res.predicted_cost:.4f} "
            f"(default {res.default_cost:.4f})")


def _tune_fleet(files, out, run_tune, seed, cfg, workers, as_json) -> None:
    """One strategy per device's telemetry file, the files tuned side by side."""
    from host import calibrate, fleet

    def name(f: str) -> str:
        stem = Path(f).stem
        return stem.removeprefix("telemetry-") or stem

    devices = [fleet.Target(name(f), f) for f in dict.fromkeys(files)]
    if len({t.name for t in devices}) < len(devices):
        raise click.UsageError("two telemetry files have the same name: the strategies would "
                               "overwrite each other")

    def op(t, rep) -> dict:
        path = fleet.out_path(out, t.name)
        rep.stage("genetic algorithm")
        rep.progress(0, cfg.generations)
        skipped = []
        records = calibrate.load_records(
            t.port, on_skip=lambda m: (skipped.append(m), _warn(f"{t.name}: {m}")))
        res = run_tune(records, lambda g, _: rep.progress(g + 1, cfg.generations))
        _atomic_text(path, json.dumps(res.to_dict(seed, cfg), indent=1) + "\n")
        return {"out": str(path), "strategy": _strategy_line(res).removeprefix("strategy: "),
                "skipped_lines": len(skipped)}

    _run_fleet("tune", devices, op, workers, as_json,
               [("strategy", lambda r: r.detail.get("strategy", "-")),
                ("output", lambda r: r.detail.get("out", "-"))], source="telemetry")


@click.command("apply")
@PORTS
@click.argument("strategy", type=click.Path(dir_okay=False))
@BAUD
@DEVICES
@click.option("--measure", "seconds", type=SECONDS, default=10.0, show_default=True,
              help="Seconds of telemetry measured before and after.")
@click.option("--settle", type=Number(float, 0.0, 3600.0), default=2.0, show_default=True,
              help="Seconds after apply before measuring.")
@click.option("--trial", type=Number(float, 0.0, 3600.0, lo_open=True), default=120.0,
              show_default=True,
              help="The device reverts by itself unless confirmed within this many seconds.")
@click.option("--keep-worse", is_flag=True, help="Confirm even if the live C got worse.")
@click.option("--reference", type=click.Path(dir_okay=False, exists=True),
              help="The clip the device streams in a loop: score the received audio (PESQ-WB).")
@click.option("--tap", type=click.Path(dir_okay=False),
              help="The receiver's audio tap (`edge-denoise receive --tap FILE`).")
@click.option("--pesq-tolerance", type=Number(float, 0.0, 4.5), default=0.1, show_default=True,
              help="Revert when PESQ-WB drops by more than this.")
@click.option("--out", "-o", type=click.Path(dir_okay=False), default="apply.json",
              show_default=True, help="Before/after measurements (for `report`). Several "
              "devices: {device} in it (and in STRATEGY) is the device's name (else appended).")
@WORKERS
@JSON_OPT
def apply_cmd(ports, strategy, baud, devices_file, seconds, settle, trial, keep_worse,
              reference, tap, pesq_tolerance, out, workers, as_json) -> None:
    """Push a strategy, measure the real link before and after, confirm or revert (on one
    device or many at once)."""
    from host.fitness import Weights
    from host.link import connect
    from host.linkcheck import AudioProbe

    if bool(reference) != bool(tap):
        raise click.UsageError("--reference and --tap go together")
    devices = _fleet(ports, devices_file)
    for t in devices or [None]:
        p = strategy.replace("{device}", t.name) if t else strategy
        if not Path(p).is_file():
            raise click.BadParameter(f"File {p!r} does not exist.", param_hint="'STRATEGY'")
    kw = dict(seconds=seconds, settle=settle, trial_s=trial, keep_worse=keep_worse,
              pesq_tolerance=pesq_tolerance)
    if devices is not None:
        if reference:
            raise click.UsageError("--reference/--tap score one receiver: use them with one "
                                   "device")
        return _apply_fleet(devices, strategy, baud, out, kw, workers, as_json)
    params, weights = _load_strategy(strategy)
    probe = AudioProbe(reference, tap) if reference else None
    with connect(ports[0], baud) as dev, _progress() as prog:
        task = prog.add_task("measuring before/after", total=2 * seconds + settle)
        t0 = time.monotonic()
        res = apply_strategy(dev, params, Weights(**weights), probe=probe,
                             tick=lambda: prog.update(task, completed=time.monotonic() - t0),
                             **kw)
    res["strategy"] = params
    _atomic_text(Path(out), json.dumps(res) + "\n")
    for key in ("before", "after"):
        m = res[key]
        click.echo(f"{key:6s} {_link_line(m)}")
    verdict = "confirmed" if res["confirmed"] else "reverted (the measured link got worse)"
    click.echo(f"{verdict} -> {out}")


def _load_strategy(path: str) -> tuple[dict, dict]:
    from host.calibrate import load_strategy

    strat = load_strategy(path, full=False)
    return TransportParams.from_dict(strat["params"]).to_dict(), strat["weights"]


def _apply_fleet(devices, strategy, baud, out, kw, workers, as_json) -> None:
    from host import fleet
    from host.fitness import Weights
    from host.link import connect

    def op(t, rep) -> dict:
        params, weights = _load_strategy(strategy.replace("{device}", t.name))
        path = fleet.out_path(out, t.name)
        total = 2 * kw["seconds"] + kw["settle"]
        rep.stage("measuring before/after")
        with connect(t.port, t.baud or baud) as dev:
            t0 = time.monotonic()
            res = apply_strategy(dev, params, Weights(**weights),
                                 tick=lambda: rep.progress(time.monotonic() - t0, total), **kw)
        res["strategy"] = params
        _atomic_text(path, json.dumps(res) + "\n")
        return {"confirmed": res["confirmed"], "cost_before": round(res["before"]["cost"], 4),
                "cost_after": round(res["after"]["cost"], 4), "params": params,
                "out": str(path)}

    def verdict(r) -> str:
        if r.status != fleet.OK:
            return "-"
        d = r.detail
        return (f"{'confirmed' if d['confirmed'] else 'reverted'} (C {d['cost_before']:.4f} "
                f"-> {d['cost_after']:.4f})")

    _run_fleet("apply", devices, op, workers, as_json,
               [("strategy", verdict), ("output", lambda r: r.detail.get("out", "-"))])


def _link_line(m: dict) -> str:
    link = m["link"]
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    pesq = (f", PESQ-WB {m['pesq_wb']:.2f} (best of {len(m['pesq_wb_stretches'])} stretches, "
            f"median {m['pesq_wb_median']:.2f})" if "pesq_wb" in m else "")
    return (f"latency {fmt(link['latency_ms'], '.1f')} ms, loss {fmt(link['loss_pct'], '.2f')} %, "
            f"bitrate {fmt(link['bitrate_kbps'], '.1f')} kbps, playout delay "
            f"{fmt(link['delay_ms'], '.0f')} ms (bound {fmt(link['buffer_ms'], '.0f')}){pesq}; "
            f"measured C {m['cost']:.4f}")


@click.group("stream")
def stream_group() -> None:
    """Start, stop or show the device's audio stream (`serve --stream-cmd`)."""


@stream_group.command("start")
@PORT
@BAUD
@click.option("--wait", type=SECONDS, default=10.0, show_default=True,
              help="Seconds to wait until the telemetry shows packets arriving (0: no wait).")
def stream_start_cmd(port, baud, wait) -> None:
    """Start the device's stream and wait until packets arrive."""
    from host.link import connect

    with connect(port, baud) as dev:
        first = start_stream(dev, wait)
    click.echo("stream running" + (f": latency {first['latency_ms']:.1f} ms, "
                                   f"{first['bitrate_kbps']:.1f} kbps" if first else ""))


@stream_group.command("stop")
@PORT
@BAUD
def stream_stop_cmd(port, baud) -> None:
    """Stop the device's stream."""
    from host.link import connect

    with connect(port, baud) as dev:
        dev.stop_stream()
    click.echo("stream stopped")


@stream_group.command("status")
@PORT
@BAUD
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def stream_status_cmd(port, baud, as_json) -> None:
    """Show whether the device's stream runs, and its active parameters."""
    from host.link import connect

    with connect(port, baud) as dev:
        st = stream_status(dev)
    if st is None:
        raise CalibrationIOError("the device's agent does not report its stream (update it)")
    if as_json:
        click.echo(json.dumps(st))
    else:
        state = "running" if st["running"] else "stopped"
        click.echo(f"stream {state if st['configured'] else 'not configured'}; "
                   f"params {st['params']}")


@click.command("report")
@click.option("--telemetry", "-t", type=click.Path(dir_okay=False, exists=True), required=True,
              help="The collect file.")
@click.option("--strategy", "-s", type=click.Path(dir_okay=False, exists=True), required=True,
              help="The tune output.")
@click.option("--apply", "-a", "apply_path", type=click.Path(dir_okay=False, exists=True),
              help="The apply output (before/after telemetry).")
@click.option("--out", "-o", type=click.Path(file_okay=False), default="report",
              show_default=True, help="Directory for report.md, report.html and PNG plots.")
def report_cmd(telemetry, strategy, apply_path, out) -> None:
    """Write a report with plots of a calibration run."""
    from host.report import write_report

    md = write_report(Path(telemetry), Path(strategy), Path(apply_path) if apply_path else None,
                      Path(out), on_skip=_warn)
    click.echo(f"report -> {md}")
