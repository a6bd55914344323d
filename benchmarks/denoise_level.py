"""Level sweep on the cross-corpus split: what the input level costs hushlink's models.

The 5 dB cross-corpus mixtures (training/crosscorpus.py, clean speech at -25 dBFS) scaled by
x0.125 .. x4, each denoised by the shipped int8 model (and any ``--model``), scored by SI-SDR
improvement. Twice: the scaled input as float, which asks whether the output depends on the
level, and clipped to +-1, which is what a device whose converter clips receives (at x4 about
1 % of these samples clip: distortion a mask cannot remove, and that lowers the input's own
SI-SDR too). Writes benchmarks/results/denoise_level.{json,md}.

    python benchmarks/denoise_level.py [--model build/models/v1.4.0.tflite]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_io import write_results  # noqa: E402

GAINS = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)


def level_sweep(system, mixtures: list[dict]) -> dict:
    """Mean SI-SDR improvement per input gain, as float and clipped to +-1."""
    from training.metrics import si_sdr

    out: dict = {"float": {}, "clipped": {}}
    for g in GAINS:
        for kind in out:
            d = []
            for m in mixtures:
                x = (m["noisy"] * g).astype(np.float32)
                if kind == "clipped":
                    x = np.clip(x, -1, 1)
                y = np.asarray(system(x), np.float32)[:len(x)]
                d.append(si_sdr(y, m["clean"]) - si_sdr(x, m["clean"]))
            out[kind][f"x{g:g}"] = round(float(np.mean(d)), 3)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-category", type=int, default=3)
    ap.add_argument("--corpus", default=str(ROOT / "build" / "corpus"))
    ap.add_argument("--model", action="append", default=[],
                    help="int8 .tflite to sweep besides the shipped one (repeatable)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args(argv)

    from training.crosscorpus import cross_corpus_mixtures
    from training.evaluate import tflite_system

    five = [m for m in cross_corpus_mixtures(Path(a.corpus), a.per_category)
            if m["snr"] == 5.0]
    clip = float(np.mean([np.mean(np.abs(m["noisy"] * GAINS[-1]) > 1) for m in five]))
    res: dict = {"mixtures": len(five), "clipped_fraction_at_max_gain": round(clip, 5),
                 "models": {}}
    for p in [ROOT / "edge" / "models" / "default.tflite", *map(Path, a.model)]:
        md = json.loads(p.with_suffix(".json").read_text())
        sweep = level_sweep(tflite_system(p), five)
        res["models"][f"hushlink_{md.get('version', p.stem)}_int8"] = {
            **sweep, "model": os.path.relpath(p, ROOT),
            "cost_db": {k: round(max(v.values()) - min(v.values()), 3)
                        for k, v in sweep.items()}}
    lines = [f"Level sweep, {len(five)} cross-corpus mixtures at 5 dB: SI-SDR improvement (dB) "
             f"per input gain; `float`: the scaled input as is (level invariance), `clipped`: "
             f"clipped to ±1 as a converter would ({100 * clip:.2f} % of samples clip at "
             f"x{GAINS[-1]:g}). Cost: best minus worst gain.", "",
             "| model | input | " + " | ".join(f"x{g:g}" for g in GAINS) + " | cost |",
             "|---|---|" + "---|" * (len(GAINS) + 1)]
    for n, r in res["models"].items():
        for kind in ("float", "clipped"):
            lines.append(f"| {n} | {kind} | "
                         + " | ".join(f"{r[kind][f'x{g:g}']:+.2f}" for g in GAINS)
                         + f" | {r['cost_db'][kind]:.2f} |")
    write_results(Path(a.out), "denoise_level", res, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
