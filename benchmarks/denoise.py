"""Denoiser benchmark (issue 4): hushlink's teacher, float and int8 students against peers on
the speaker-disjoint test split at SNR -5, 0, 5, 10, 15 dB.

Quality: PESQ-WB, STOI, SI-SDR (and its improvement over the noisy input), per SNR and over
all. Cost: parameters, MACs per second, model file size, per-hop latency of the int8 model
in the TFLite interpreter (one thread) with and without the STFT/iSTFT, and every system's
real-time factor over the whole test set (one thread).

Test mixtures: the test speakers of the default recipe's split (recomputed from the config,
seed 0), each utterance mixed with a held-out noise at every SNR, no augmentation.

    .venv/bin/python benchmarks/denoise.py [--utterances 24] [--work build/train/default]

Writes benchmarks/results/denoise.json and denoise.md.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_io import write_results  # noqa: E402

os.environ.setdefault("BENCH_NUM_THREADS", "1")

import numpy as np  # noqa: E402

PEERS = ("rnnoise", "webrtc", "speex", "noisereduce", "dtln", "dtln_q", "gtcrn", "dfn3")
# peers that are causal streaming models: also scored as one stream over all mixtures
STREAMING_PEERS = ("rnnoise", "dtln", "gtcrn")
PEER_INFO = {  # published sizes (peers/README.md, papers); hop in ms, algorithmic latency ms
    "rnnoise": {"params": 88_000, "hop_ms": 10, "latency_ms": 30},
    "webrtc": {"hop_ms": 10, "latency_ms": 10},
    "speex": {"hop_ms": 10, "latency_ms": 10},
    "noisereduce": {"latency_ms": None},
    "dtln": {"params": 988_000, "hop_ms": 8, "latency_ms": 32},
    "dtln_q": {"params": 988_000, "hop_ms": 8, "latency_ms": 32},
    "gtcrn": {"params": 48_200, "macs_per_s": 33_000_000, "hop_ms": 16, "latency_ms": 32},
    "dfn3": {"params": 2_310_000, "hop_ms": 10, "latency_ms": 40},
}


def load_peers_module(shared: Path):
    spec = importlib.util.spec_from_file_location("hushlink_peers", shared / "peers" / "peers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_peer(name: str, shared: Path):
    """A peer by name: DeepFilterNet3 from its wheel (benchmarks/dfn3.py), the others from
    the shared peers runner."""
    if name == "dfn3":
        from benchmarks.dfn3 import DeepFilterNet3

        return DeepFilterNet3()
    return load_peers_module(shared).make(name)


def timed_systems(systems: dict, clock) -> tuple[dict, dict[str, float]]:
    """The systems wrapped to add up each one's ``clock()`` seconds into the returned dict."""
    timed: dict[str, float] = {}

    def wrap(name, fn):
        def run(x):
            t0 = clock()
            y = fn(x)
            timed[name] = timed.get(name, 0.0) + clock() - t0
            return y
        return run
    return {name: wrap(name, fn) for name, fn in systems.items()}, timed


def hop_latency(model_path: Path, hops: int = 1000, rounds: int = 7) -> dict:
    """Wall time per 10 ms hop on one thread: model only, and the whole
    Denoiser.process_hop (stft_step -> log_power -> model -> apply_mask -> istft_step).

    The shared cores swing by 1.5x from minute to minute, so the two are timed in
    interleaved rounds; reported: the median over rounds of each round's median (and the
    quietest round's), p99 over all hops."""
    from edge.denoise import Denoiser
    from edge.model import StepModel

    m = StepModel(model_path, num_threads=1)
    d = Denoiser(m)
    rng = np.random.default_rng(0)
    x = (0.05 * rng.standard_normal((hops, d.hop))).astype(np.float32)
    feats = (rng.standard_normal((hops, m.n_bins)) - 5).astype(np.float32)
    times = {"model_step": [], "hop_incl_stft": []}
    state = m.init_state()
    for i in range(200):  # warm-up
        d.process_hop(x[i])
        state = m.step(feats[i], state)[1]
    for _ in range(rounds):
        for name in times:
            t = np.empty(hops)
            for i in range(hops):
                t0 = time.perf_counter()
                if name == "model_step":
                    state = m.step(feats[i], state)[1]
                else:
                    d.process_hop(x[i])
                t[i] = time.perf_counter() - t0
            times[name].append(t)
    out = {}
    for name, ts in times.items():
        meds = [float(np.median(t)) * 1e3 for t in ts]
        out[name] = {"median_ms": round(float(np.median(meds)), 4),
                     "best_round_ms": round(min(meds), 4),
                     "p99_ms": round(float(np.percentile(np.concatenate(ts), 99)) * 1e3, 4)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--utterances", type=int, default=24)
    ap.add_argument("--work", default=str(ROOT / "build" / "train" / "default"),
                    help="training work dir with teacher.pt and student_*.pt (optional)")
    ap.add_argument("--model", default=str(ROOT / "edge" / "models" / "default.tflite"))
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--cache", default=str(ROOT / "build" / "bench" / "denoise-cache.json"),
                    help="per-system scores of earlier runs on the same mixtures are reused "
                         "for peers (their output does not change); hushlink systems are "
                         "always re-scored")
    ap.add_argument("--peers-only", action="store_true", help="score the peers only (cache)")
    a = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from training.config import load_config
    from training.data import eval_mixtures, make_manifest
    from training.evaluate import (
        continuous,
        run_systems,
        teacher_system,
        tflite_system,
        torch_student_system,
    )
    from training.student import load_student
    from training.teacher import load_teacher

    cfg = load_config("default")
    snrs = (-5.0, 0.0, 5.0, 10.0, 15.0)
    manifest = make_manifest(cfg.data, Path(a.shared) / "data", cfg.seed)
    mixtures = eval_mixtures(manifest, a.utterances, snrs)
    audio_s = sum(len(m["noisy"]) for m in mixtures) / 16_000
    print(f"{len(mixtures)} mixtures ({audio_s / 60:.1f} min) from "
          f"{len({m['speaker'] for m in mixtures})} test speakers", file=sys.stderr)

    systems, info = {"noisy": lambda x: x}, {"noisy": {}}
    key = f"{len(mixtures)}:{sum(float(np.sum(m['noisy'])) for m in mixtures):.6f}"
    cache_p = Path(a.cache)
    cache = json.loads(cache_p.read_text()) if cache_p.is_file() else {}
    cache = cache if cache.get("key") == key else {"key": key, "systems": {}}
    cached = cache["systems"]
    peer_rows = []  # the peers' rows, fresh then continuous, in the order they are cached
    for name in [p for p in a.peers.split(",") if p]:
        names = [name] + ([f"{name}_continuous"] if name in STREAMING_PEERS else [])
        peer_rows += names
        if all(n in cached for n in names):
            continue
        try:
            peer = make_peer(name, Path(a.shared))
        except Exception as e:  # a missing optional package: report, don't fail the run
            print(f"peer {name} unavailable: {e}", file=sys.stderr)
            continue
        systems[name] = peer.process
        info[name] = dict(PEER_INFO.get(name, {}))
        if name in STREAMING_PEERS:  # the same peer as one stream, like our continuous row
            systems[f"{name}_continuous"] = continuous(peer.process, mixtures)
            info[f"{name}_continuous"] = {**info[name], "note": "one stream, never reset"}
    work = Path(a.work)
    if a.peers_only:
        pass
    elif (work / "teacher.pt").is_file():
        t = load_teacher(work / "teacher.pt", cfg)
        systems["teacher"] = teacher_system(t)
        info["teacher"] = {"params": sum(p.numel() for p in t.parameters()),
                           "latency_ms": None, "note": "offline, bidirectional"}
    for n in ("mref", "adaptive"):
        if not a.peers_only and (work / f"student_{n}.pt").is_file():
            s, _ = load_student(work / f"student_{n}.pt")
            key = "student_float" if n == "adaptive" else "student_mref_float"
            systems[key] = torch_student_system(s)
            info[key] = {"params": s.n_params(), "macs_per_s": s.macs_per_hop() * 100,
                         "hop_ms": 10, "latency_ms": 20}
            if n == "adaptive" and (s.mask_power, s.out_floor) != (1.0, s.mask_floor):
                # the same student without its mask post-filter: what the filter adds
                raw = copy.deepcopy(s)
                raw.mask_power, raw.out_floor = 1.0, s.mask_floor
                systems["student_float_no_postfilter"] = torch_student_system(raw)
                info["student_float_no_postfilter"] = dict(info[key])
    model = Path(a.model)
    if not a.peers_only:
        md = json.loads(model.with_suffix(".json").read_text())
        systems["student_int8"] = tflite_system(model)
        info["student_int8"] = {"params": md["params"], "macs_per_s": md["macs_per_hop"] * 100,
                                "hop_ms": 10, "latency_ms": md["algorithmic_latency_ms"],
                                "file_bytes": model.stat().st_size}
        # the same model over all mixtures back to back without a reset, as a device runs
        systems["student_int8_continuous"] = continuous(tflite_system(model), mixtures)
        info["student_int8_continuous"] = {**info["student_int8"],
                                           "note": "one stream, state never reset"}

    # real-time factor of each system over the whole set (one thread), then scores
    systems, timed = timed_systems(systems, time.perf_counter)
    t0 = time.monotonic()
    summary, _ = run_systems(systems, mixtures)
    for name in summary:
        info[name]["rtf"] = round(timed.get(name, 0.0) / audio_s, 5)
    for name in peer_rows + ["noisy"]:
        if name in summary:
            cached[name] = {"summary": summary[name], "info": info[name]}
    cache_p.parent.mkdir(parents=True, exist_ok=True)
    cache_p.write_text(json.dumps(cache))
    if a.peers_only:
        return 0
    rows = ["noisy", *peer_rows]
    rows += [k for k in summary if k not in rows]
    order = sorted(rows, key=lambda r: r.endswith("_continuous"))  # stable: stream rows last
    merged = {}
    for name in order:
        if name in summary:
            merged[name] = summary[name]
        elif name in cached:
            merged[name], info[name] = cached[name]["summary"], cached[name]["info"]
    summary = merged
    lat = hop_latency(model)
    res = {
        "mixtures": len(mixtures), "audio_minutes": round(audio_s / 60, 2), "snrs": snrs,
        "test_speakers": len({m["speaker"] for m in mixtures}),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), one thread",
        "wall_s": round(time.monotonic() - t0, 1), "int8_hop_latency": lat,
        "int8_model": {"file": model.name, "bytes": model.stat().st_size,
                       "params": md["params"], "macs_per_hop": md["macs_per_hop"],
                       "algorithmic_latency_ms": md["algorithmic_latency_ms"],
                       "version": md["version"]},
        "systems": {k: {**summary[k], "info": info.get(k, {})} for k in summary},
    }
    write_results(Path(a.out), "denoise", res, markdown(res))
    return 0


def _fmt(v, spec):
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


def markdown(res: dict) -> str:
    snrs = [f"{s:+.0f}" for s in res["snrs"]]
    lines = [f"Test split: {res['mixtures']} mixtures ({res['audio_minutes']} min, "
             f"{res['test_speakers']} unseen speakers, unseen noises) at SNR "
             f"{', '.join(snrs)} dB; {res['machine']}.", "",
             "| system | PESQ-WB | STOI | SI-SDR dB | SI-SDRi dB | params | MMAC/s | "
             "latency ms | RTF |", "|---|---|---|---|---|---|---|---|---|"]
    for name, s in res["systems"].items():
        a, i = s["all"], s["info"]
        p = i.get("params")
        lines.append(
            f"| {name} | {_fmt(a['pesq'], '.3f')} | {_fmt(a['stoi'], '.3f')} | "
            f"{_fmt(a['si_sdr'], '.2f')} | {_fmt(a['si_sdr_i'], '+.2f')} | "
            f"{'–' if p is None else f'{p / 1000:.0f} k'} | "
            f"{_fmt(i.get('macs_per_s') and i['macs_per_s'] / 1e6, '.1f')} | "
            f"{_fmt(i.get('latency_ms'), '.0f')} | {_fmt(i.get('rtf'), '.4f')} |")
    lines += ["", "PESQ-WB per input SNR:", "",
              "| system | " + " | ".join(f"{s} dB" for s in snrs) + " |",
              "|---|" + "---|" * len(snrs)]
    for name, s in res["systems"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(s["snr"][k]["pesq"], ".3f")
                                                 for k in snrs) + " |")
    m, lat = res["int8_model"], res["int8_hop_latency"]
    lines += ["", f"int8 student `{m['file']}` v{m['version']}: {m['params']} parameters, "
              f"{m['bytes'] / 1024:.1f} KiB, {m['macs_per_hop'] * 100 / 1e6:.1f} MMAC/s, "
              f"algorithmic latency {m['algorithmic_latency_ms']:.0f} ms; per 10 ms hop on one "
              f"thread: model {lat['model_step']['median_ms']:.4f} ms (p99 "
              f"{lat['model_step']['p99_ms']:.4f}), whole hop incl. STFT/iSTFT "
              f"{lat['hop_incl_stft']['median_ms']:.4f} ms (p99 "
              f"{lat['hop_incl_stft']['p99_ms']:.4f}).",
              "`*_continuous`: the system run over all mixtures back to back as one stream, "
              "its state never reset (how a device runs), then cut back into mixtures; every "
              "other row starts each mixture fresh.",
              "Peer params/MACs are published figures; RTF = processing time / audio time "
              "over the whole set on one thread (Python loops included, for every system)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
