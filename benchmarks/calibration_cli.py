"""Calibration from the command line, measured: default vs tuned parameters on the same link.

Every part in its own process, as the README sets it up (tests/test_calibrate_split.py's
harness): `edge-denoise receive --tap` ← `host-calibrate emulate` (loss, 40 ± 15 ms) ←
`edge-denoise serve --stream-cmd "edge-denoise send CLIP --loop --params-file {params_file}"`
on a socat pty, and `host-calibrate stream start | collect | tune | apply` on the host. `apply`
measures the link before (default parameters) and after (tuned): latency, loss, bitrate,
the receiver's buffer bound and playout delay, measured C, and PESQ-WB of the looped VCTK clip
as the receiver played it (best and median of three clip-long stretches).

    .venv/bin/python benchmarks/calibration_cli.py [--quick] [--runs N]
Writes benchmarks/results/calibration_cli.json and .md. --quick: one run on the 5 % link
(about 75 s); the default: --runs on the 5 % and the 2 % link.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from test_calibrate_split import SPEECH, calibrate, split_setup  # noqa: E402

from benchmarks.results_io import write_results  # noqa: E402

SHARED = Path(os.environ.get("HUSHLINK_SHARED", ROOT.parent / "shared"))


def one_run(loss: str, seed: int) -> dict:
    clip = SHARED / "data" / SPEECH
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        t0 = time.monotonic()
        with split_setup(work, clip, loss=loss, seed=seed) as dev:
            res = calibrate(dev["port"], clip, dev["tap"], work)
        wall = time.monotonic() - t0
    a = res["apply"]
    row = {"loss": loss, "seed": seed, "wall_s": round(wall, 1), "confirmed": a["confirmed"],
           "tuned_params": res["strategy"]["params"]}
    for key in ("before", "after"):
        m = a[key]
        row[key] = {"params": m["params"], "cost": round(m["cost"], 4), **m["link"],
                    "pesq_wb": m["pesq_wb"], "pesq_wb_median": m["pesq_wb_median"],
                    "pesq_wb_stretches": m["pesq_wb_stretches"]}
    return row


def table(rows: list[dict]) -> str:
    out = ["| link | run | parameters | latency ms | loss % | bitrate kbps | buffer bound / "
           "playout delay ms | PESQ-WB best (median) | measured C |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for key, name in (("before", "default"), ("after", "tuned")):
            m = r[key]
            p = m["params"]
            out.append(
                f"| {r['loss']}, 40 ± 15 ms | seed {r['seed']} | {name}: {p['bitrate_kbps']} kbps, "
                f"buffer {p['buffer_ms']} ms, share {p['share']:g} | {m['latency_ms']:.1f} | "
                f"{m['loss_pct']:.2f} | {m['bitrate_kbps']:.1f} | {m['buffer_ms']:.0f} / "
                f"{m['delay_ms']:.0f} | {m['pesq_wb']:.2f} ({m['pesq_wb_median']:.2f}) | "
                f"{m['cost']:.3f} |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one run on the 5 %% link")
    ap.add_argument("--runs", type=int, default=2, help="runs per link (default form)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    plan = ([("5%", 3)] if args.quick else
            [(loss, 3 + i) for loss in ("5%", "2%") for i in range(args.runs)])
    rows = []
    for loss, seed in plan:
        rows.append(one_run(loss, seed))
        print(f"{loss} seed {seed}: {rows[-1]['wall_s']} s", file=sys.stderr)
    write_results(args.out, "calibration_cli", {"runs": rows, "quick": args.quick},
                  table(rows))


if __name__ == "__main__":
    main()
