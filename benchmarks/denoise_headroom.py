"""Where the denoiser's quality gap lies (issue 4): the shipped int8 model against the
oracle of its own training target, per input SNR, on mixtures of each split's speakers.

- ``oracle_irm``: the ideal ratio mask (SPEC §1's m_ref, from the clean signal) applied to
  the noisy spectrum: the best any mask on this front end can do, so the headroom left.
- ``student_int8``: the shipped model through the runtime's streaming path.

Splits: ``train`` (speakers and noises the model was trained on, here without
augmentation), ``val`` and ``test`` (unseen speakers and noises). A model that is poor on
its own training material underfits; one that is good there but poor on unseen speakers
and noises does not generalise. Same mixture recipe as benchmarks/denoise.py.

    .venv/bin/python benchmarks/denoise_headroom.py [--utterances 20]

Writes benchmarks/results/denoise_headroom.json and .md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_io import write_results  # noqa: E402

os.environ.setdefault("BENCH_NUM_THREADS", "1")

SPLITS = ("train", "val", "test")
SNRS = (-5.0, 0.0, 5.0, 10.0, 15.0)


def oracle_irm(m: dict):
    """The noisy mixture masked by its own ideal ratio mask, resynthesised."""
    from edge.dsp import apply_mask, ideal_ratio_mask, istft, stft

    x = stft(m["noisy"])
    return istft(apply_mask(x, ideal_ratio_mask(stft(m["clean"]), x)), len(m["noisy"]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--utterances", type=int, default=20)
    ap.add_argument("--model", default=str(ROOT / "edge" / "models" / "default.tflite"))
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args(argv)

    from training.config import load_config
    from training.data import eval_mixtures, make_manifest
    from training.evaluate import per_mixture, run_systems, tflite_system

    cfg = load_config("default")
    manifest = make_manifest(cfg.data, Path(a.shared) / "data", cfg.seed)
    t0 = time.monotonic()
    res = {"utterances": a.utterances, "snrs": SNRS, "model": Path(a.model).name,
           "splits": {}}
    for split in SPLITS:
        mixtures = eval_mixtures(manifest, a.utterances, SNRS, split=split)
        systems = {"noisy": lambda x: x, "student_int8": tflite_system(Path(a.model)),
                   "oracle_irm": per_mixture(oracle_irm, mixtures)}
        summary, _ = run_systems(systems, mixtures)
        res["splits"][split] = {"mixtures": len(mixtures), "systems": summary}
    res["wall_s"] = round(time.monotonic() - t0, 1)
    write_results(Path(a.out), "denoise_headroom", res, markdown(res))
    return 0


def markdown(res: dict) -> str:
    snrs = [f"{s:+.0f}" for s in res["snrs"]]
    lines = [f"Shipped model `{res['model']}` against the oracle of its training target "
             f"(ideal ratio mask), {res['utterances']} utterances per split, each at every SNR. "
             "SI-SDR improvement in dB (PESQ-WB in brackets) per input SNR:", "",
             "| split | system | " + " | ".join(f"{s} dB" for s in snrs) + " | all |",
             "|---|---|" + "---|" * (len(snrs) + 1)]
    for split, r in res["splits"].items():
        for name in [n for n in ("noisy", "student_int8", "oracle_irm") if n in r["systems"]]:
            s = r["systems"][name]
            cells = [f"{s['snr'][k]['si_sdr_i']:+.1f} ({s['snr'][k]['pesq']:.2f})"
                     for k in snrs]
            cells.append(f"{s['all']['si_sdr_i']:+.1f} ({s['all']['pesq']:.2f})")
            lines.append(f"| {split} | {name} | " + " | ".join(cells) + " |")
    lines += ["", "train: the training speakers and noises (no augmentation); val/test: unseen "
              "speakers and noises."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
