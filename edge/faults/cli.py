"""``edge-denoise faults``: detect, measure and fix background audio faults in a file."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import click
import numpy as np

from edge.audio import PROCESSING_RATE, load_audio, same_file, save_audio
from edge.errors import HushlinkError
from edge.faults.events import Event, EventConfig
from edge.outpaths import atomic_temp

SR = PROCESSING_RATE
REFINED = {"hum", "dc", "dropout", "clipping"}  # edges that measurement makes exact


def analyse(x: np.ndarray, model=None, cfg: EventConfig = EventConfig(), coarse: bool = True
            ) -> tuple[list[Event], dict]:
    """(n,) 16 kHz float32 -> (measured events, clip-level probabilities). ``coarse``: the
    pre-check (edge.faults.precheck) must pass too."""
    from edge.faults.detect import TFLiteFaultModel, detect
    from edge.faults.measure import confirmed, measure
    from edge.faults.precheck import precheck

    det = detect(x, model or TFLiteFaultModel(), cfg)
    out = []
    for ev in det.events:
        a, b = round(ev.start_s * SR), round(ev.end_s * SR)
        if coarse and not precheck(ev.kind, x, a, b):
            continue  # the coarse stage finds nothing of the kind there
        p = measure(ev.kind, x, a, b, SR)
        if not confirmed(ev.kind, p, ev.confidence):
            continue  # the measurement contradicts it (no zeros, no tone, no offset ...)
        s = p["start"] if ev.kind in REFINED else ev.start_s * SR
        e = p["end"] if ev.kind in REFINED | {"howl"} else ev.end_s * SR
        out.append(Event(ev.kind, s / SR, e / SR, ev.confidence, p))
    return out, det.clip


def _atomic_write(path: Path, data: bytes) -> None:
    if not path.parent.exists():
        raise HushlinkError(f"{path.parent}: output directory does not exist")
    fd, tmp = atomic_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


COLOURS = {"hum": "tab:red", "clipping": "tab:orange", "hiss": "tab:gray",
           "dropout": "tab:purple", "dc": "tab:brown", "rumble": "tab:green",
           "howl": "tab:pink"}


def write_report(path: Path, x: np.ndarray, y: np.ndarray | None, events: list[Event],
                 clip: dict, source: str) -> None:
    """HTML report with waveform and spectrogram PNGs (events shaded) written beside it."""
    try:
        import matplotlib
    except ImportError:
        raise HushlinkError("--report needs matplotlib: pip install 'hushlink[host]'") from None
    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    pngs = {}
    t = np.arange(len(x)) / SR
    for name in ("waveform", "spectrogram"):
        rows = [("input", x)] + ([("fixed", y)] if y is not None else [])
        fig, axes = plt.subplots(len(rows), 1, figsize=(11, 2.6 * len(rows)), squeeze=False)
        for ax, (label, sig) in zip(axes[:, 0], rows, strict=True):
            if name == "waveform":
                ax.plot(t, sig, lw=0.4, color="k")
                ax.set_ylim(-1.05, 1.05)
            else:
                ax.specgram(sig, NFFT=512, Fs=SR, noverlap=384, cmap="magma", vmin=-130)
            for ev in events:
                ax.axvspan(ev.start_s, ev.end_s, color=COLOURS.get(ev.kind, "b"), alpha=0.25)
                ax.text(ev.start_s, ax.get_ylim()[1], ev.kind, fontsize=7, va="top")
            ax.set_ylabel(label)
        axes[-1, 0].set_xlabel("time (s)")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        pngs[name] = buf.getvalue()
    stem = path.with_suffix("")
    rows = "".join(
        f"<tr><td>{e.kind}</td><td>{e.start_s:.3f}</td><td>{e.end_s:.3f}</td>"
        f"<td>{e.confidence:.2f}</td><td>{_short_params(e.params)}</td></tr>" for e in events)
    html = ["<!doctype html><meta charset='utf-8'><title>hushlink faults</title>",
            f"<h1>Fault report: {source}</h1>",
            f"<p>{len(events)} event(s); clip-level probabilities: {clip}</p>",
            "<table border=1 cellpadding=3><tr><th>fault</th><th>start s</th><th>end s</th>"
            f"<th>confidence</th><th>measured</th></tr>{rows}</table>"]
    for name, data in pngs.items():
        png = Path(f"{stem}_{name}.png")
        _atomic_write(png, data)
        b64 = base64.b64encode(data).decode()
        html.append(f"<h2>{name}</h2><img alt='{name}' src='data:image/png;base64,{b64}'>")
    _atomic_write(path, "\n".join(html).encode())


def _short_params(p: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in p.items() if k not in ("start", "end", "runs"))


def run_faults(inp: str, json_path: str | None = None, fix_path: str | None = None,
               report_path: str | None = None, model: str | None = None,
               strategies: str | None = None, channel: int | None = None) -> dict:
    """The command as a function: returns the JSON document it prints/writes."""
    from edge.faults.detect import TFLiteFaultModel
    from edge.faults.events import events_to_json
    from edge.faults.mixer import fix
    from edge.faults.strategies import Strategies

    for out in (fix_path, json_path, report_path):
        if out and same_file(out, inp):
            raise HushlinkError(f"{out}: output would overwrite the input")
    strat = Strategies.load(strategies)  # a bad strategy file fails before the work
    m = TFLiteFaultModel(model)
    clip = load_audio(inp, channel=channel)
    x = clip.samples
    events, clip_probs = analyse(x, m)
    y = None
    if fix_path:
        y = fix(x, events, strat)
        save_audio(fix_path, y, SR, out_rate=clip.source_rate, subtype=clip.source_subtype)
    doc = json.loads(events_to_json(events, input=str(inp), seconds=round(clip.seconds, 3),
                                    model=m.info.name, clip=clip_probs))
    if json_path:
        _atomic_write(Path(json_path), (json.dumps(doc, indent=1) + "\n").encode())
    if report_path:
        write_report(Path(report_path), x, y, events, clip_probs, str(inp))
    return doc


@click.command("faults")
@click.argument("inp", metavar="IN", type=click.Path(dir_okay=False))
@click.option("--events", "json_path", type=click.Path(dir_okay=False),
              help="Write the events (with measured parameters) as JSON here.")
@click.option("--fix", "fix_path", type=click.Path(dir_okay=False),
              help="Write the repaired audio here (same rate as IN).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False),
              help="Write an HTML report with waveform/spectrogram PNGs (needs matplotlib).")
@click.option("--model", type=click.Path(dir_okay=False),
              help="Fault model .tflite (default: the shipped edge/models/faults.tflite).")
@click.option("--strategies", type=click.Path(dir_okay=False),
              help="Strategy list TOML (default: edge/faults/strategies.toml).")
@click.option("--channel", type=int, help="Use this channel instead of the downmix.")
@click.option("--json", "print_json", is_flag=True,
              help="Print the events as JSON to stdout (as --json does in every command).")
@click.option("--print-json", "print_json", is_flag=True, hidden=True)  # the old spelling
def faults_command(inp, json_path, fix_path, report_path, model, strategies, channel,
                   print_json) -> None:
    """Detect and fix background audio faults (hum, clipping, dropouts ...)."""
    doc = run_faults(inp, json_path, fix_path, report_path, model, strategies, channel)
    if print_json:
        click.echo(json.dumps(doc, indent=1))
        return
    if not doc["events"]:
        click.echo(f"{inp}: no faults found ({doc['seconds']} s)")
    for e in doc["events"]:
        extra = _short_params(e["params"])
        click.echo(f"{e['kind']:9s} {e['start_s']:8.3f} - {e['end_s']:8.3f} s  "
                   f"p={e['confidence']:.2f}  {extra}")
    for what, p in (("events", json_path), ("fixed audio", fix_path), ("report", report_path)):
        if p:
            click.echo(f"{what}: {p}", err=True)
