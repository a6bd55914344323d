"""Full-band benchmark (issue 22, item 2): 48 kHz noisy speech through `edge-denoise file`'s
path, before (16 kHz path: everything above 8 kHz removed) and now (upper band kept with the
gain extended from the model's mask), with the shipped model.

Material: the denoiser benchmark's held-out test mixtures (unseen speakers and noises) at
0 and 5 dB. The team corpus is 16 kHz only, so the band above 8 kHz is synthesised for both
speech and noise: band-limited (8-20 kHz) noise carrying the frame envelope of each signal's
own 4-8 kHz band, at half its level (fricatives and hiss continue upwards). That
tests what the path does with an upper band; it is not recorded 48 kHz speech.

Scores against the 48 kHz clean reference: SI-SDR (full band) and the 8-20 kHz energy of the
output relative to the clean and to the noisy input (dB), plus the upper band's own SNR.

    .venv/bin/python benchmarks/fullband.py [--utterances 12] [--quick]

Writes benchmarks/results/fullband.json and fullband.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.results_io import write_results  # noqa: E402

R = 48_000
HOP = 480  # 10 ms at 48 kHz


def band(x: np.ndarray, lo: float, hi: float, rate: int = R) -> np.ndarray:
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1 / rate)
    spec[(f < lo) | (f >= hi)] = 0
    return np.fft.irfft(spec, len(x))


def extend(x16: np.ndarray, rng: np.random.Generator, level: float = 0.5) -> np.ndarray:
    """48 kHz version of a 16 kHz signal plus a synthetic 8-20 kHz band that follows the
    frame envelope of its 4-8 kHz band at ``level`` times its RMS."""
    from edge.audio import resample

    x = resample(x16, 16_000, R).astype(np.float64)
    ref = band(x, 4_000, 8_000)
    n = len(x) // HOP * HOP
    env = np.sqrt(np.mean(ref[:n].reshape(-1, HOP) ** 2, axis=1))
    env = np.interp(np.arange(len(x)), np.arange(len(env)) * HOP + HOP / 2, env)
    hi = band(rng.standard_normal(len(x)), 8_000, 20_000)
    hi /= np.sqrt(np.mean(hi ** 2))
    return (x + level * env * hi).astype(np.float32)


def si_sdr(est: np.ndarray, ref: np.ndarray) -> float:
    a = np.dot(est, ref) / np.dot(ref, ref)
    return float(10 * np.log10(np.sum((a * ref) ** 2) / np.sum((a * ref - est) ** 2)))


def energy(x: np.ndarray) -> float:
    return float(np.sum(np.asarray(x, np.float64) ** 2)) + 1e-20


def live_full_band(noisy: np.ndarray, model, bypass: bool = False) -> np.ndarray:
    """The live loop's full band (edge/fullband.py FullBandStream) over a 48 kHz signal fed
    as a capture device would, its delay removed: (n,) -> (n,)."""
    from edge.denoise import Denoiser
    from edge.live import LiveLoop, LoopConfig
    from edge.sinks import CallbackSink
    from edge.sources import FileSource

    got: list[np.ndarray] = []
    loop = LiveLoop(FileSource(noisy.astype(np.float32), R, 480, speed=50.0),
                    Denoiser(model, bypass=bypass), [CallbackSink(got.append, rate=R)],
                    LoopConfig(queue_blocks=100_000))
    s = loop.run()
    d = int(round(s["full_band_delay_ms"] * R / 1000))
    y = np.concatenate(got)[d:]
    return np.pad(y, (0, max(0, len(noisy) - len(y))))[:len(noisy)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--utterances", type=int, default=12)
    ap.add_argument("--quick", action="store_true", help="4 utterances at 5 dB (~30 s)")
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get(
        "HUSHLINK_SHARED", ROOT.parent / "shared")))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()

    from edge.audio import resample
    from edge.denoise import Denoiser
    from edge.fullband import denoise_channel
    from edge.model import StepModel
    from training.config import load_config
    from training.data import eval_mixtures, make_manifest

    n_utt, snrs = (4, (5.0,)) if args.quick else (args.utterances, (0.0, 5.0))
    cfg = load_config("default")
    mixes = eval_mixtures(make_manifest(cfg.data, args.shared / "data", cfg.seed), n_utt, snrs)
    model = StepModel(None, num_threads=1)
    den, byp = Denoiser(model), Denoiser(model, bypass=True)
    rng = np.random.default_rng(0)
    rows, wall, audio_s, bypass_exact, live_bypass_exact = [], 0.0, 0.0, True, True
    for m in mixes:
        clean = extend(m["clean"], rng)
        noisy = clean + extend(m["noisy"] - m["clean"], rng)
        t0 = time.perf_counter()
        full = denoise_channel(noisy, R, den)
        wall += time.perf_counter() - t0
        audio_s += len(noisy) / R
        old = resample(den.process(resample(noisy, R, 16_000)), 16_000, R)[:len(noisy)]
        live = live_full_band(noisy, model)
        bypass_exact &= bool(np.array_equal(denoise_channel(noisy, R, byp), noisy))
        lb = live_full_band(noisy, model, bypass=True)
        tail = 1700  # the delay line (672) and up to two 10 ms blocks still inside at the end
        live_bypass_exact &= bool(np.array_equal(lb[:-tail], noisy[:-tail]))
        hc, hn = band(clean, 8_000, 20_000), band(noisy, 8_000, 20_000)
        row = {"id": m["id"], "snr": m["snr"]}
        for name, y in (("noisy", noisy), ("16k_path", old), ("full_band", full),
                        ("live_full_band", live)):
            hy = band(y, 8_000, 20_000)
            row[name] = {"si_sdr": round(si_sdr(y, clean), 2),
                         "hf_vs_clean_db": round(10 * np.log10(energy(hy) / energy(hc)), 2),
                         "hf_vs_noisy_db": round(10 * np.log10(energy(hy) / energy(hn)), 2),
                         "hf_snr_db": round(10 * np.log10(energy(hc) / energy(hy - hc)), 2)}
        rows.append(row)

    def mean(sys_, key, snr=None):
        v = [r[sys_][key] for r in rows if snr is None or r["snr"] == snr]
        return round(float(np.mean(v)), 2)

    described = {**model.describe(), "path": os.path.relpath(model.path, ROOT)}  # portable
    res = {"mixtures": len(rows), "snrs": list(snrs), "model": described,
           "bypass_bit_exact": bypass_exact, "live_bypass_bit_exact": live_bypass_exact,
           "full_band_rtf": round(wall / audio_s, 4),
           "summary": {s: {k: mean(s, k) for k in ("si_sdr", "hf_vs_clean_db",
                                                   "hf_vs_noisy_db", "hf_snr_db")}
                       for s in ("noisy", "16k_path", "full_band", "live_full_band")},
           "rows": rows}
    lines = ["| system | SI-SDR dB | 8-20 kHz vs clean dB | 8-20 kHz vs noisy dB | "
             "8-20 kHz SNR dB |", "|---|---:|---:|---:|---:|"]
    for s, label in (("noisy", "noisy input (= bypass)"), ("16k_path", "16 kHz path (before)"),
                     ("full_band", "full band, `file`"),
                     ("live_full_band", "full band, live loop")):
        d = res["summary"][s]
        lines.append(f"| {label} | {d['si_sdr']} | {d['hf_vs_clean_db']} | "
                     f"{d['hf_vs_noisy_db']} | {d['hf_snr_db']} |")
    lines.append(f"\n{len(rows)} mixtures at {', '.join(f'{s:g}' for s in snrs)} dB, 48 kHz "
                 f"(upper band synthesised, see the docstring); bypass bit-exact: "
                 f"{bypass_exact} (`file`), {live_bypass_exact} (live loop, delay removed, "
                 f"the last 35 ms aside: still inside the loop at the end); `file` full-band "
                 f"real-time factor {res['full_band_rtf']} "
                 "(one thread, model + 2 soxr passes).\n")
    write_results(args.out, "fullband_quick" if args.quick else "fullband", res,
                  "\n".join(lines))


if __name__ == "__main__":
    main()
