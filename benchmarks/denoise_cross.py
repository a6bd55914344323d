"""Denoiser benchmark on the cross-corpus split (SPEC §3): the material no training example
touches (training/crosscorpus.py), with every peer in the same run.

Systems: the noisy input; RNNoise, WebRTC NS, SpeexDSP, noisereduce, DTLN, GTCRN (the shared
peers runner) and DeepFilterNet3 (benchmarks/dfn3.py); hushlink's shipped int8 model and any
other int8 models given with ``--model``; float students of a training work dir
(``--work``: the core-only vs core + terms ablation).

Metrics per system, over all mixtures, per input SNR (-5..20 dB) and per noise category:
PESQ-WB, STOI, ESTOI, SI-SDR and its improvement; DNSMOS P.835 SIG/BAK/OVRL (each category's
outputs back to back, one 9 s window after another); CPU seconds per second of audio on one
thread; the mean over the worst third of categories (what trials are ranked by, beside the
mean). The level sweep on the same split is benchmarks/denoise_level.py.

    .venv/bin/python benchmarks/denoise_cross.py [--per-category 3] [--model X.tflite ...]

Peer scores are cached (build/bench/cross-cache.json) by mixture set: their outputs do not
change. Writes benchmarks/results/denoise_cross.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("BENCH_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from benchmarks.denoise import make_peer, timed_systems  # noqa: E402
from benchmarks.results_io import write_results  # noqa: E402

PEERS = ("rnnoise", "webrtc", "speex", "noisereduce", "dtln", "gtcrn", "dfn3")
KEYS = ("pesq", "stoi", "estoi", "si_sdr", "si_sdr_i")


def worst_third(summary: dict, key: str, higher_is_better: bool = True) -> float:
    """Mean of ``key`` over the worst third of noise categories."""
    vals = sorted(v[key] for v in summary["category"].values())
    if not higher_is_better:
        vals = vals[::-1]
    k = max(1, len(vals) // 3)
    return round(float(np.mean(vals[:k])), 3)


def dnsmos_by_category(outputs: list[np.ndarray], mixtures: list[dict]) -> dict:
    from training.metrics import DNSMOS_SECONDS, dnsmos

    cats = sorted({m["category"] for m in mixtures})
    out = {}
    for c in cats:
        y = np.concatenate([o for o, m in zip(outputs, mixtures, strict=True)
                            if m["category"] == c])
        out[c] = dnsmos(y, hop_s=DNSMOS_SECONDS)
    out["all"] = {k: round(float(np.mean([out[c][k] for c in cats])), 3)
                  for k in ("sig", "bak", "ovrl")}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-category", type=int, default=3,
                    help="utterances per noise category (each at every SNR)")
    ap.add_argument("--corpus", default=str(ROOT / "build" / "corpus"))
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--model", action="append", default=[],
                    help="int8 .tflite to score besides the shipped one (repeatable)")
    ap.add_argument("--work", action="append", default=[],
                    help="training work dir whose float students to score (repeatable)")
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--cache", default=str(ROOT / "build" / "bench" / "cross-cache.json"))
    a = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from training.crosscorpus import cross_corpus_mixtures
    from training.evaluate import continuous, run_systems, tflite_system, torch_student_system

    mixtures = cross_corpus_mixtures(Path(a.corpus), a.per_category)
    audio_s = sum(len(m["noisy"]) for m in mixtures) / 16_000
    print(f"cross-corpus: {len(mixtures)} mixtures ({audio_s / 60:.1f} min), "
          f"{len({m['speaker'] for m in mixtures})} unseen speakers, "
          f"{len({m['category'] for m in mixtures})} noise categories", file=sys.stderr)

    key = f"{len(mixtures)}:{sum(float(np.sum(m['noisy'])) for m in mixtures):.6f}"
    cache_p = Path(a.cache)
    cache = json.loads(cache_p.read_text()) if cache_p.is_file() else {}
    cache = cache if cache.get("key") == key else {"key": key, "systems": {}}
    systems: dict = {}
    info: dict = {}
    order = ["noisy", *[p for p in a.peers.split(",") if p]]
    for name in order:
        if name in cache["systems"]:
            continue
        if name == "noisy":
            systems[name], info[name] = (lambda x: x), {}
            continue
        try:
            peer = make_peer(name, Path(a.shared))
        except Exception as e:  # a missing optional package: say so, score the rest
            print(f"peer {name} unavailable: {e}", file=sys.stderr)
            continue
        systems[name], info[name] = peer.process, {"latency_ms": getattr(peer, "delay_ms",
                                                                         None)}
    models = [ROOT / "edge" / "models" / "default.tflite", *map(Path, a.model)]
    ours = []
    for p in models:
        md = json.loads(p.with_suffix(".json").read_text())
        name = f"hushlink_{md.get('version', p.stem)}_int8"
        systems[name] = tflite_system(p)
        systems[f"{name}_continuous"] = continuous(tflite_system(p), mixtures)
        info[name] = {"params": md["params"], "file_bytes": p.stat().st_size,
                      "latency_ms": md["algorithmic_latency_ms"], "model": os.path.relpath(p, ROOT)}
        info[f"{name}_continuous"] = {**info[name], "note": "one stream, never reset"}
        ours.append((name, p))
        order += [name, f"{name}_continuous"]
    from training.student import load_student

    for w in map(Path, a.work):
        for n in ("adaptive", "core", "mref"):
            if (w / f"student_{n}.pt").is_file():
                s, _ = load_student(w / f"student_{n}.pt")
                name = f"{w.name}_{n}_float"
                systems[name], info[name] = torch_student_system(s), {"params": s.n_params()}
                order.append(name)

    systems, timed = timed_systems(systems, time.process_time)  # CPU, all threads
    t0 = time.monotonic()
    summary, kept = run_systems(systems, mixtures, keep=len(mixtures), extended=True)
    for name in summary:
        if not name.endswith("_continuous"):
            info[name]["cpu_s_per_s"] = round(timed.get(name, 0.0) / audio_s, 5)
        summary[name]["dnsmos"] = dnsmos_by_category(kept[name], mixtures)
        summary[name]["info"] = info[name]
        if name in PEERS or name == "noisy":
            cache["systems"][name] = summary[name]
    cache_p.parent.mkdir(parents=True, exist_ok=True)
    cache_p.write_text(json.dumps(cache))
    rows = {n: summary.get(n) or cache["systems"].get(n) for n in order}
    rows = {n: r for n, r in rows.items() if r is not None}
    for r in rows.values():
        r["worst_third"] = {k: worst_third(r, k) for k in ("pesq", "estoi", "si_sdr_i")}
    res = {"mixtures": len(mixtures), "audio_minutes": round(audio_s / 60, 2),
           "speakers": len({m["speaker"] for m in mixtures}),
           "categories": sorted({m["category"] for m in mixtures}),
           "snrs": sorted({m["snr"] for m in mixtures}),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), one thread",
           "wall_s": round(time.monotonic() - t0, 1),
           "systems": rows}
    write_results(Path(a.out), "denoise_cross", res, markdown(res))
    return 0


def _f(v, spec="0.3f"):
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


def markdown(res: dict) -> str:
    sy = res["systems"]
    lines = [f"Cross-corpus split: {res['mixtures']} mixtures ({res['audio_minutes']} min), "
             f"{res['speakers']} speakers of a corpus no training example uses, "
             f"{len(res['categories'])} noise categories (held-out categories, unseen "
             f"recordings, babble and a competing talker from other unseen speakers), SNR "
             f"{', '.join(f'{s:+.0f}' for s in res['snrs'])} dB; {res['machine']}.", "",
             "| system | PESQ-WB | STOI | ESTOI | SI-SDR dB | SI-SDRi dB | DNSMOS SIG | BAK | "
             "OVRL | worst-third PESQ | worst-third SI-SDRi | CPU s/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, s in sy.items():
        a, d, w = s["all"], s["dnsmos"]["all"], s["worst_third"]
        lines.append(f"| {n} | {_f(a['pesq'])} | {_f(a['stoi'])} | {_f(a['estoi'])} | "
                     f"{_f(a['si_sdr'], '.2f')} | {_f(a['si_sdr_i'], '+.2f')} | "
                     f"{_f(d['sig'], '.2f')} | {_f(d['bak'], '.2f')} | {_f(d['ovrl'], '.2f')} | "
                     f"{_f(w['pesq'])} | {_f(w['si_sdr_i'], '+.2f')} | "
                     f"{_f(s['info'].get('cpu_s_per_s'), '.4f')} |")
    snrs = list(next(iter(sy.values()))["snr"])
    for key, title, spec in (("si_sdr_i", "SI-SDR improvement (dB) per input SNR", "+.2f"),
                             ("pesq", "PESQ-WB per input SNR", ".3f")):
        lines += ["", f"{title}:", "", "| system | " + " | ".join(f"{s} dB" for s in snrs)
                  + " |", "|---|" + "---|" * len(snrs)]
        for n, s in sy.items():
            lines.append(f"| {n} | " + " | ".join(_f(s["snr"][k][key], spec) for k in snrs)
                         + " |")
    cats = res["categories"]
    lines += ["", "SI-SDR improvement (dB) per noise category (PESQ-WB in brackets):", "",
              "| system | " + " | ".join(cats) + " |", "|---|" + "---|" * len(cats)]
    for n, s in sy.items():
        lines.append(f"| {n} | " + " | ".join(
            f"{_f(s['category'][c]['si_sdr_i'], '+.1f')} ({_f(s['category'][c]['pesq'], '.2f')})"
            for c in cats) + " |")
    lines += ["", "DNSMOS: each category's outputs back to back, scored on consecutive 9 s "
              "windows (the DNS Challenge P.835 model inside the speechmos wheel), the mean "
              "over categories. CPU s/s: process CPU time per second of audio on one thread. "
              "`*_continuous`: the model run over all mixtures as one never-reset stream."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
