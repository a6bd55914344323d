"""Calibration benchmark: search quality, serial throughput, and a full calibration cycle.

1. Search: GA vs random search vs grid search at the same number of fitness evaluations, on
   the fitness model (host.calibrate.LinkModel) fitted to telemetry. The telemetry is 300
   seeded records of three link conditions (good wired / lossy Wi-Fi / congested cellular)
   whose late-packet counts follow exp(−buffer/(2·jitter)), measured under a few buffer
   settings: the fit has to recover the jitter scale and the clusters. Reported over 10 seeds:
   best C reached, evaluations until within 1% of the best C any method found.
2. Serial throughput: `edge-denoise serve --pace` in a subprocess on one end of a socat pty
   pair, the host client (also paced) uploading a file on the other. A pty moves ~50 MB/s
   whatever the baud, so both ends pace their writes to the UART line rate (10 bits per byte);
   the fraction is file bytes/s over baud/10.
3. Full cycle: collect (24 s, sweep of 4 parameter sets, UDP pinned) + tune (24 × 20 GA) +
   apply (8 s before, 8 s after) against an agent on a pty whose telemetry is the real RTP/Opus
   receiver's, streaming through the user-space emulator at 8% loss, 60 ± 20 ms
   (tests/test_calibrate_e2e.py's device).

    .venv/bin/python benchmarks/calibration.py [--quick]
Writes benchmarks/results/calibration.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from edge.params import Telemetry, TransportParams  # noqa: E402
from host import calibrate, ga  # noqa: E402

CONDITIONS = [  # latency ms, loss %, jitter ms, utilisation, share of time
    (25, 0.3, 4, 0.3, 0.5), (70, 8.0, 20, 0.5, 0.3), (140, 3.0, 45, 0.9, 0.2)]


def synthetic_records(seed: int, n: int = 300) -> list[calibrate.Record]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        lat, loss, jit, util, _ = rng.choices(CONDITIONS, [c[4] for c in CONDITIONS])[0]
        p = TransportParams(buffer_ms=rng.choice([100, 200, 300]),
                            bitrate_kbps=rng.choice([64, 96]))
        j = jit * rng.uniform(0.85, 1.15)
        late = int(round(50 * np.exp(-p.buffer_ms / (2.0 * j))))
        t = Telemetry(t=float(i), latency_ms=lat * rng.uniform(0.9, 1.1),
                      loss_pct=loss * rng.uniform(0.7, 1.3), jitter_ms=j,
                      bandwidth_util=util * p.bitrate_kbps / 64 * rng.uniform(0.9, 1.1),
                      snr_db=rng.uniform(20, 30), late=late, bitrate_kbps=p.bitrate_kbps)
        out.append(calibrate.Record(t, p))
    return out


def grid(n: int) -> np.ndarray:
    """About n grid points: bitrate × protocol × buffer × share (7 × 2 × 6 × 6 = 504)."""
    k = max(2, round((n / 2) ** (1 / 3)))
    axes = [np.linspace(ga.LO[0], ga.HI[0], k + 1), [0.0, 1.0],
            np.linspace(ga.LO[2], ga.HI[2], k), np.linspace(ga.LO[3], ga.HI[3], k)]
    pts = np.array(np.meshgrid(*axes, indexing="ij")).reshape(4, -1).T
    return ga.clip(pts[:n])


def search_benchmark(seeds: range, pop: int, gens: int) -> dict:
    budget = pop * (gens + 1)
    rows = {"ga": [], "random": [], "grid": []}
    for seed in seeds:
        recs = synthetic_records(seed)
        res = calibrate.tune(recs, cfg=ga.GAConfig(pop=pop, generations=gens, seed=seed))
        model = res.model
        traces = {"ga": res.ga.trace}
        rng = np.random.default_rng(seed)
        for name, pts in (("random", ga.clip(rng.uniform(ga.LO, ga.HI, (budget, 4)))),
                          ("grid", grid(budget))):
            c = [model.cost_genes(g) for g in pts]
            traces[name] = list(np.minimum.accumulate(c))
        best = min(t[-1] for t in traces.values())
        for name, tr in traces.items():
            tol = 0.01 * abs(best)
            hit = next((i + 1 for i, v in enumerate(tr) if v <= best + tol), None)
            rows[name].append({"seed": seed, "best": tr[-1], "evals": len(tr),
                               "evals_to_1pct": hit, "default": res.default_cost})
    out = {}
    for name, r in rows.items():
        hits = [x["evals_to_1pct"] for x in r if x["evals_to_1pct"] is not None]
        out[name] = {"evaluations": r[0]["evals"],
                     "best_mean": float(np.mean([x["best"] for x in r])),
                     "default_mean": float(np.mean([x["default"] for x in r])),
                     "within_1pct_runs": f"{len(hits)}/{len(r)}",
                     "evals_to_1pct_median": float(np.median(hits)) if hits else None,
                     "runs": r}
    return out


def throughput(baud: int, nbytes: int) -> dict:
    from test_link_util import AgentProc, PtyPair

    from host.link import connect

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        pair = PtyPair(d, f"bench{os.getpid()}")
        agent = AgentProc(pair.a, d / "state", "--baud", str(baud), "--pace")
        try:
            src = d / "blob.bin"
            src.write_bytes(random.Random(0).randbytes(nbytes))
            with connect(pair.b, baud, pace=True, timeout=2.0) as dev:
                t0 = time.perf_counter()
                dev.upload(src, "blob.bin")
                dt = time.perf_counter() - t0
        finally:
            agent.stop()
            pair.stop()
    line = baud / 10
    return {"baud": baud, "bytes": nbytes, "seconds": dt, "bytes_per_s": nbytes / dt,
            "line_bytes_per_s": line, "fraction_of_line_rate": nbytes / dt / line}


def full_cycle(collect_s: float, measure_s: float) -> dict:
    from test_calibrate_e2e import real_link_device

    from host import calibrate_cli
    from host.fitness import Weights
    from host.link import connect

    pins = {"protocol": "udp"}  # the emulator relays UDP
    with tempfile.TemporaryDirectory() as d, real_link_device(Path(d)) as url:
        time.sleep(3.0)  # let the stream and its telemetry start
        t0 = time.perf_counter()
        with connect(url) as dev:
            lines = calibrate_cli.collect(dev, collect_s, sweep=4, settle=1.5, pins=pins)
        t1 = time.perf_counter()
        path = Path(d) / "c.jsonl"
        path.write_text("".join(json.dumps(x) + "\n" for x in lines))
        res = calibrate.tune(calibrate.load_records(path), pins=pins)
        t2 = time.perf_counter()
        with connect(url) as dev:
            ap = calibrate_cli.apply_strategy(dev, res.params.to_dict(), Weights(),
                                              seconds=measure_s, settle=2.0)
        t3 = time.perf_counter()
    mean = lambda key, f: float(np.mean([r[f] for r in ap[key]["telemetry"]]))  # noqa: E731
    return {"collect_s": t1 - t0, "tune_s": t2 - t1, "apply_s": t3 - t2, "total_s": t3 - t0,
            "records": len(lines), "strategy": res.params.to_dict(),
            "predicted_cost": res.predicted_cost, "default_predicted_cost": res.default_cost,
            "live_cost_before": ap["before"]["cost"], "live_cost_after": ap["after"]["cost"],
            "confirmed": ap["confirmed"],
            "live": {k: {f: mean(k, f) for f in ("latency_ms", "loss_pct", "late",
                                                  "concealed", "jitter_ms")}
                     for k in ("before", "after")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer seeds, shorter runs")
    args = ap.parse_args()
    seeds = range(3) if args.quick else range(10)
    res = {"search": search_benchmark(seeds, pop=24, gens=20),
           "throughput": [throughput(115_200, 32_768 if args.quick else 65_536),
                          throughput(921_600, 131_072 if args.quick else 393_216)],
           "cycle": full_cycle(12.0 if args.quick else 24.0, 4.0 if args.quick else 8.0),
           "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "calibration.json").write_text(json.dumps(res, indent=1) + "\n")
    md = ["# Calibration benchmark", "",
          "## Search at equal fitness evaluations (10 seeds; C lower is better)", "",
          "| method | evaluations | mean best C | mean C of defaults | runs within 1% of best "
          "| median evaluations to within 1% |", "|---|---|---|---|---|---|"]
    for name, r in res["search"].items():
        md.append(f"| {name} | {r['evaluations']} | {r['best_mean']:.4f} | "
                  f"{r['default_mean']:.4f} | {r['within_1pct_runs']} | "
                  f"{r['evals_to_1pct_median']} |")
    md += ["", "## Serial throughput (chunked upload, paced pty)", "",
           "| baud | bytes | seconds | bytes/s | fraction of line rate |", "|---|---|---|---|---|"]
    for t in res["throughput"]:
        md.append(f"| {t['baud']} | {t['bytes']} | {t['seconds']:.2f} | {t['bytes_per_s']:.0f} "
                  f"| {100 * t['fraction_of_line_rate']:.1f}% |")
    c = res["cycle"]
    p = c["strategy"]
    md += ["", "## Full cycle: real RTP/Opus transport through the emulator (8% loss, "
           "60 ± 20 ms), agent on a pty", "",
           "| collect s | tune s | apply s | total s | live C default → tuned | confirmed |",
           "|---|---|---|---|---|---|",
           f"| {c['collect_s']:.1f} | {c['tune_s']:.1f} | {c['apply_s']:.1f} | "
           f"{c['total_s']:.1f} | {c['live_cost_before']:.3f} → {c['live_cost_after']:.3f} | "
           f"{c['confirmed']} |", "",
           f"Tuned: {p['bitrate_kbps']} kbps, {p['protocol']}, buffer {p['buffer_ms']} ms, "
           f"share {p['share']}. Live means (default → tuned): "
           + ", ".join(f"{f} {c['live']['before'][f]:.2f} → {c['live']['after'][f]:.2f}"
                       for f in c["live"]["before"]) + ".", ""]
    (out / "calibration.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
