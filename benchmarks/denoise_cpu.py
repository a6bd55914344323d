"""CPU per second of audio, hushlink against DeepFilterNet3 and RNNoise, measured in one run.

The cross-corpus benchmark times each system once, beside everything else a shared machine is
doing; a ratio is only worth its name when both sides are measured together. This runs every
system over the same minute of cross-corpus mixtures (or ../shared/data noise when no corpus is
built), in interleaved rounds, one thread, and reports the median of the rounds' process CPU
time per second of audio and the ratio to DeepFilterNet3 per round. ``hushlink (FFT path)`` is
the hop loop as it was before ``edge.dsp.FrameDft`` (numpy FFT per hop), kept here to show
what the matrix transform saves.

    python benchmarks/denoise_cpu.py [--seconds 60 --rounds 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_io import write_results  # noqa: E402


def _audio(seconds: float, corpus: Path) -> np.ndarray:
    from training.crosscorpus import cross_corpus_mixtures

    mixtures = cross_corpus_mixtures(corpus, per_category=1)
    x = np.concatenate([m["noisy"] for m in mixtures])
    return x[:int(seconds * 16_000)].astype(np.float32)


def _fft_path(model):
    """The pre-FrameDft hop loop: stft_step -> log_power -> step -> apply_mask -> istft_step."""
    from edge.dsp import (
        apply_mask,
        init_analysis_state,
        init_synthesis_state,
        istft_step,
        log_power,
        stft_step,
    )

    fe = model.front_end

    def process(x: np.ndarray) -> np.ndarray:
        a, s, st = init_analysis_state(fe), init_synthesis_state(fe), model.init_state()
        out = []
        for i in range(len(x) // fe.hop):
            spec, a = stft_step(x[i * fe.hop:(i + 1) * fe.hop], a, fe)
            mask, st = model.step(log_power(spec, fe), st)
            y, s = istft_step(apply_mask(spec, mask), s, fe)
            out.append(y)
        return np.concatenate(out)

    return process


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--corpus", default=str(ROOT / "build" / "corpus"))
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args(argv)

    from benchmarks.denoise import make_peer
    from edge.denoise import Denoiser
    from edge.model import StepModel

    x = _audio(a.seconds, Path(a.corpus))
    seconds = len(x) / 16_000
    systems = {"hushlink v2.0.0 int8": Denoiser(StepModel(num_threads=1)).process,
               "hushlink (FFT path)": _fft_path(StepModel(num_threads=1))}
    for name in ("dfn3", "rnnoise"):
        systems[name] = make_peer(name, Path(a.shared)).process
    for fn in systems.values():  # warm-up: first-call allocations and caches
        fn(x[:16_000])
    cpu: dict[str, list[float]] = {n: [] for n in systems}
    for _ in range(a.rounds):
        for name, fn in systems.items():
            t0 = time.process_time()
            fn(x)
            cpu[name].append((time.process_time() - t0) / seconds)
    ref = cpu["dfn3"]
    def row(v: list[float]) -> dict:
        ratios = [t / r for t, r in zip(v, ref, strict=True)]
        return {"cpu_s_per_s": round(float(np.median(v)), 5), "rounds": [round(t, 5) for t in v],
                "of_dfn3": round(float(np.median(ratios)), 4)}

    res = {"seconds": round(seconds, 1), "rounds": a.rounds,
           "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), one thread",
           "load_average": [round(v, 1) for v in os.getloadavg()],
           "systems": {n: row(v) for n, v in cpu.items()}}
    lines = [f"CPU per second of audio: {res['seconds']} s of cross-corpus mixtures, "
             f"{a.rounds} interleaved rounds, median; {res['machine']}, load average "
             f"{res['load_average'][0]}.", "",
             "| system | CPU s/s | of DeepFilterNet3's (per-round ratio, median) |",
             "|---|---|---|"]
    for n, r in res["systems"].items():
        lines.append(f"| {n} | {r['cpu_s_per_s']:.4f} | {100 * r['of_dfn3']:.1f} % |")
    write_results(Path(a.out), "denoise_cpu", res, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
