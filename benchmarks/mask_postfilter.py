"""Choosing the student's mask post-filter (training/student.py) on validation mixtures.

The applied mask is ``out_floor + (1 - out_floor) * sigmoid ** mask_power``. This sweeps
both numbers for a trained student on the *validation* speakers (never the test split, which
``benchmarks/denoise.py`` reports), scoring PESQ-WB, STOI and SI-SDR, and writes
``benchmarks/results/mask_postfilter.{json,md}``. The recipe's values
(training/configs/default.toml ``[student] mask_power``, ``out_floor``) come from here.

    python benchmarks/mask_postfilter.py --work build/train/default
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_io import write_results  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default=str(ROOT / "build" / "train" / "default"),
                    help="training work dir with student.pt")
    ap.add_argument("--config", default="default",
                    help="training config whose validation split to use")
    ap.add_argument("--utterances", type=int, default=16,
                    help="validation utterances (each mixed at every SNR)")
    ap.add_argument("--powers", default="1,1.4,1.7,2.0")
    ap.add_argument("--floors", default="0.1,0.06,0.03")
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args(argv)

    import torch

    from edge.dsp import apply_mask, istft, log_power, stft
    from training.config import load_config
    from training.data import eval_mixtures, make_manifest
    from training.evaluate import summarise
    from training.metrics import score, si_sdr
    from training.progress import bar
    from training.student import load_student, post_filter

    torch.set_num_threads(1)
    cfg = load_config(a.config)
    student, _ = load_student(Path(a.work) / "student.pt")
    snrs = tuple(cfg.eval.snrs)
    manifest = make_manifest(cfg.data, Path(a.shared) / "data", cfg.seed)
    mixtures = eval_mixtures(manifest, a.utterances, snrs, split="val")
    grid = [(float(p), float(f)) for p in a.powers.split(",") for f in a.floors.split(",")]
    rows: dict[str, list[dict]] = {f"{p:g}/{f:g}": [] for p, f in grid}
    t0 = time.monotonic()
    with bar("post-filter sweep", len(mixtures), False) as update:
        for m in mixtures:
            spec = stft(m["noisy"])
            with torch.no_grad():
                gate = student.gate(torch.from_numpy(log_power(spec)[None]))[0]
            base = si_sdr(m["noisy"], m["clean"])
            for p, f in grid:
                mask = post_filter(gate, p, f).numpy()
                y = istft(apply_mask(spec, mask), len(m["noisy"]))
                s = score(y, m["clean"])
                rows[f"{p:g}/{f:g}"].append({"snr": m["snr"], **s,
                                             "si_sdr_i": s["si_sdr"] - base})
            update()
    summary = {k: summarise(v) for k, v in rows.items()}
    best = choose(summary, student.mask_floor)
    res = {"split": "val", "mixtures": len(mixtures), "snrs": snrs,
           "trained_floor": student.mask_floor, "wall_s": round(time.monotonic() - t0, 1),
           "chosen": best, "grid": summary}
    write_results(Path(a.out), "mask_postfilter", res, markdown(res))
    return 0


def choose(summary: dict, trained_floor: float) -> str:
    """The highest PESQ among the settings that keep the trained mask's STOI (PESQ alone
    rewards suppression up to where intelligibility starts to suffer)."""
    ref = summary.get(f"1/{trained_floor:g}", {}).get("all", {}).get("stoi", 0.0)
    ok = [k for k in summary if summary[k]["all"]["stoi"] >= ref] or list(summary)
    return max(ok, key=lambda k: summary[k]["all"]["pesq"])


def markdown(res: dict) -> str:
    lines = [f"Validation split: {res['mixtures']} mixtures at SNR "
             f"{', '.join(f'{s:+.0f}' for s in res['snrs'])} dB; student trained with floor "
             f"{res['trained_floor']:g} (power 1 / floor {res['trained_floor']:g} = the mask as "
             "trained). Chosen: the highest PESQ that keeps the trained mask's STOI.", "",
             "| power / out floor | PESQ-WB | STOI | SI-SDR dB | SI-SDRi dB |",
             "|---|---|---|---|---|"]
    for k, s in res["grid"].items():
        a = s["all"]
        mark = " (chosen)" if k == res["chosen"] else ""
        lines.append(f"| {k}{mark} | {a['pesq']:.3f} | {a['stoi']:.3f} | {a['si_sdr']:.2f} | "
                     f"{a['si_sdr_i']:+.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
