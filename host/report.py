"""``host-calibrate report``: markdown + HTML with PNG plots of one calibration run
(clusters, K bins, fitness per generation, before/after telemetry). matplotlib, Agg backend."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import numpy as np

from edge import validate
from host import calibrate, fitness

LABELS = {"latency_ms": "latency (ms)", "loss_pct": "loss (%)", "jitter_ms": "jitter (ms)",
          "bandwidth_util": "bandwidth use", "snr_db": "SNR (dB)"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> str:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=90, bbox_inches="tight")
    os.replace(tmp, path)
    _plt().close(fig)
    return path.name


def plot_clusters(X: np.ndarray, labels: np.ndarray, centres: np.ndarray, path: Path) -> str:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (i, j) in zip(axes, [(0, 1), (0, 2)], strict=True):
        ax.scatter(X[:, i], X[:, j], c=labels, s=8, cmap="tab10", alpha=0.6)
        ax.scatter(centres[:, i], centres[:, j], c="k", marker="x", s=80, label="centres")
        ax.set_xlabel(LABELS[calibrate.FIELDS[i]])
        ax.set_ylabel(LABELS[calibrate.FIELDS[j]])
    axes[0].legend()
    fig.suptitle("k-means clusters of the monitoring parameters")
    return _save(fig, path)


def plot_bins(X: np.ndarray, edges: dict, path: Path) -> str:
    plt = _plt()
    fig, axes = plt.subplots(1, len(calibrate.FIELDS), figsize=(15, 3))
    for j, (ax, f) in enumerate(zip(axes, calibrate.FIELDS, strict=True)):
        ax.hist(X[:, j], bins=30, color="0.6")
        for e in edges[f]:
            ax.axvline(e, color="C3", lw=1)
        ax.set_xlabel(LABELS[f])
    fig.suptitle("K uniform bins (red: edges)")
    return _save(fig, path)


def plot_fitness(history: list[dict], path: Path) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    gens = np.arange(1, len(history) + 1)
    ax.plot(gens, [h["best"] for h in history], label="best C")
    ax.plot(gens, [h["mean"] for h in history], label="mean C")
    ax.plot(gens, [h["s1"] for h in history], "--", lw=0.8, label="S1")
    ax.plot(gens, [h["s2"] for h in history], "--", lw=0.8, label="S2")
    ax.set_xlabel("generation")
    ax.set_ylabel("C (lower is better)")
    ax.legend()
    return _save(fig, path)


def plot_before_after(res: dict, path: Path) -> str:
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3))
    for key, color in (("before", "C0"), ("after", "C2")):
        recs = res[key]["telemetry"]
        t = np.arange(len(recs))
        for ax, f in zip(axes, ("latency_ms", "loss_pct", "late"), strict=True):
            ax.plot(t, [r.get(f, 0) for r in recs], color=color,
                    label=f"{key}: C={res[key]['cost']:.3f}")
            ax.set_title(LABELS.get(f, "late packets/s"))
            ax.set_xlabel("s")
    axes[0].legend()
    return _save(fig, path)


def load_apply_result(path: Path) -> dict:
    """An ``apply`` output, checked: before/after each with a finite cost and a list of
    telemetry objects (numbers or null), and a boolean verdict."""
    try:
        res = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise calibrate.CalibrationError(f"cannot read {path}: {e.strerror}") from None
    except (ValueError, RecursionError) as e:
        raise calibrate.CalibrationError(f"{path}: not an apply result (not JSON: "
                                         f"{type(e).__name__})") from None

    def bad(why: str):
        return calibrate.CalibrationError(f"{path}: not an apply result ({why})")

    if not isinstance(res, dict) or not isinstance(res.get("confirmed"), bool):
        raise bad("no boolean 'confirmed'")
    for key in ("before", "after"):
        part = res.get(key)
        if not isinstance(part, dict) or not isinstance(part.get("telemetry"), list):
            raise bad(f"{key!r} must be an object with a telemetry list")
        validate.number(f"{key}.cost", part.get("cost"), error=bad)
        for i, r in enumerate(part["telemetry"]):
            if not isinstance(r, dict) or not all(
                    v is None or (isinstance(v, int | float) and not isinstance(v, bool))
                    for v in r.values()):
                raise bad(f"{key}.telemetry[{i}] must be an object of numbers")
    return res


def write_report(telemetry: Path, strategy: Path, apply_result: Path | None, out: Path,
                 on_skip=None) -> Path:
    """Write ``out/report.md``, ``out/report.html`` and the PNGs; returns the markdown path.
    Every input is checked before anything is written; ``on_skip(message)`` hears about
    malformed telemetry lines (skipped)."""
    strat = calibrate.load_strategy(strategy)
    records = calibrate.load_records(telemetry, on_skip=on_skip)
    res = load_apply_result(apply_result) if apply_result is not None else None
    out.mkdir(parents=True, exist_ok=True)
    w = fitness.Weights(**strat["weights"])
    model, X, centres, labels, bins, edges = calibrate.build_model(
        records, len(strat["clusters"]), len(strat["bin_edges"]["latency_ms"]) - 1, w,
        strat.get("seed", 0))
    imgs = {"clusters": plot_clusters(X, labels, centres, out / "clusters.png"),
            "bins": plot_bins(X, strat["bin_edges"], out / "bins.png"),
            "fitness": plot_fitness(strat["history"], out / "fitness.png")}
    lines = ["# Calibration report", "",
             f"{len(records)} telemetry records; fitness weights {w.to_dict()}; seed "
             f"{strat.get('seed')}; GA {strat['ga']}.", "", "## Strategy", "",
             "| | bitrate kbps | protocol | buffer ms | share | predicted C |",
             "|---|---|---|---|---|---|"]
    for name, p, c in (("default", strat["default_params"], strat["default_predicted_cost"]),
                       ("tuned", strat["params"], strat["predicted_cost"])):
        lines.append(f"| {name} | {p['bitrate_kbps']} | {p['protocol']} | {p['buffer_ms']} | "
                     f"{p['share']} | {c:.4f} |")
    lines += ["", "## Clusters (link conditions)", "",
              "| weight | " + " | ".join(calibrate.FIELDS) + " | bins (0-based) |",
              "|---" * (len(calibrate.FIELDS) + 2) + "|"]
    for c in strat["clusters"]:
        vals = " | ".join(f"{c['centre'][f]:.2f}" for f in calibrate.FIELDS)
        lines.append(f"| {c['weight']:.2f} | {vals} | {c['bins']} |")
    lines += ["", f"![clusters]({imgs['clusters']})", "", "## K bins", "",
              f"![bins]({imgs['bins']})", "", "## Fitness per generation", "",
              f"![fitness]({imgs['fitness']})", ""]
    if res is not None:
        imgs["before_after"] = plot_before_after(res, out / "before_after.png")
        verdict = "confirmed" if res["confirmed"] else "reverted"
        lines += ["## Before / after apply (measured live)", "",
                  f"C before {res['before']['cost']:.4f}, after {res['after']['cost']:.4f}: "
                  f"{verdict}.", "", f"![before/after]({imgs['before_after']})", ""]
    md = "\n".join(lines)
    _write(out / "report.md", md)
    _write(out / "report.html", _html(md))
    return out / "report.md"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _html(md: str) -> str:
    """A minimal markdown → HTML for the subset written above (headings, tables, images)."""
    body, table = [], False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                continue
            if not table:
                body.append("<table border=1 cellpadding=4>")
                table = True
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            continue
        if table:
            body.append("</table>")
            table = False
        if line.startswith("!["):
            src = line[line.index("(") + 1:-1]
            body.append(f'<p><img src="{html.escape(src)}"></p>')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    if table:
        body.append("</table>")
    return ("<!doctype html><meta charset=utf-8><title>Calibration report</title>\n"
            + "\n".join(body) + "\n")
