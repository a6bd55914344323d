"""Training throughput (issue 21): samples/s and seconds per step of the student stage, one
process vs two DDP ranks (torchrun, gloo on CPU), with 0, 1 and 2 DataLoader workers mixing
the batches; optionally torch.compile and (on CUDA) bf16.

    python benchmarks/train.py [--quick] [--compile] [--device cuda] [--out benchmarks/results]

Runs the smoke recipe's data and teacher with a larger student batch (the numbers are about
the machinery, not the model). Each configuration is its own process (torchrun for 2 ranks)
that times its steps with ``train_students``'s gradient hook: the first steps (worker
start-up, allocator warm-up, compilation) are left out, the median of the rest is the step
time. One step trains both students on ``ranks x batch`` mixtures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_io import write_results  # noqa: E402

WARMUP = 3


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(work: Path, out: Path, steps: int, batch: int, workers: int, compile_: bool,
            bf16: bool, device: str) -> None:
    """One configuration, in this process (under torchrun: one rank of it)."""
    import torch

    from training import pipeline
    from training.config import load_config
    from training.dist import close
    from training.distill import train_students
    from training.loader import Runtime
    from training.teacher import load_teacher

    # one thread per rank: 1 rank uses one core, 2 ranks two (on a shared machine two
    # OpenMP threads in one process spin-wait on each other: README)
    cfg = load_config("smoke", [f"student.steps={steps}", f"student.batch={batch}",
                                "threads=1"])
    d = pipeline.setup_torch(cfg, device, distributed=True)
    train, val = pipeline._mixers(cfg, work, lambda s: None)
    stamps: list[float] = []

    def on_grads(step, name, s, h0):
        if name == "adaptive":
            stamps.append(time.monotonic())

    ckpt = Path(tempfile.mkdtemp(prefix="bench-train-")) / "students.pt"
    train_students(cfg, train, val, load_teacher(work / "teacher.pt", cfg), ckpt, True,
                   lambda s: None, d.device, Runtime(d, workers, bf16, compile_), on_grads)
    if d.main:
        dt = [b - a for a, b in zip(stamps[WARMUP:], stamps[WARMUP + 1:], strict=False)]
        s_step = statistics.median(dt)
        out.write_text(json.dumps({
            "ranks": d.world, "workers": workers, "compile": compile_, "bf16": bf16,
            "device": device, "batch_per_rank": batch, "steps_timed": len(dt),
            "s_per_step": round(s_step, 4),
            "samples_per_s": round(d.world * batch / s_step, 1),
            "threads_per_rank": torch.get_num_threads()}))
    close(d)


def _run(work: Path, ranks: int, workers: int, steps: int, batch: int, compile_: bool,
         bf16: bool, device: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        me = [str(Path(__file__).resolve()), "--measure", str(work), "--result", str(out),
              "--steps", str(steps), "--batch", str(batch), "--workers", str(workers),
              "--device", device] + (["--compile"] if compile_ else []) + (
                  ["--bf16"] if bf16 else [])
        cmd = [sys.executable, *me] if ranks == 1 else [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks),
            "--master-addr", "127.0.0.1", "--master-port", str(_port()), *me]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("OMP_NUM_THREADS", None)
        t0 = time.monotonic()
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        if res.returncode != 0:
            return {"ranks": ranks, "workers": workers, "compile": compile_, "bf16": bf16,
                    "error": (res.stderr.strip().splitlines() or ["?"])[-1][:200]}
        r = json.loads(out.read_text())
        r["wall_s"] = round(time.monotonic() - t0, 1)
        return r


def _prepare(work: Path) -> None:
    exe = Path(sys.executable).parent / "train-denoiser"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if not (work / "manifest.json").is_file():
        subprocess.run([str(exe), "prepare", "-c", "smoke", "-w", str(work), "-q"], check=True,
                       env=env, cwd=ROOT)
    if not (work / "teacher.pt").is_file():
        subprocess.run([str(exe), "teacher", "-c", "smoke", "-w", str(work), "-q"], check=True,
                       env=env, cwd=ROOT, stdout=subprocess.DEVNULL)


def table(rows: list[dict], meta: dict) -> str:
    lines = [f"Student stage, smoke recipe with {meta['batch']} mixtures per rank and step "
             f"({meta['segment_s']} s each), {meta['steps']} steps, median of steps "
             f"{WARMUP + 1}+; one torch thread per rank; {meta['machine']}; {meta['note']}",
             "",
             "| ranks | loader workers | compile | bf16 | s/step | samples/s |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        tail = (f"{r['s_per_step']:.3f} | {r['samples_per_s']:.1f}" if "error" not in r
                else f"failed: {r['error']} | -")
        lines.append(f"| {r['ranks']} | {r['workers']} | {'yes' if r['compile'] else 'no'} | "
                     f"{'yes' if r['bf16'] else 'no'} | {tail} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="Fewer steps (about 2 minutes).")
    ap.add_argument("--compile", action="store_true", help="Also time torch.compile.")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--work", type=Path, default=ROOT / "build" / "bench-train")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int)
    # one configuration (what the runs above start)
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    steps = a.steps or (WARMUP + 8 if a.quick else WARMUP + 30)
    if a.measure:
        measure(a.measure, a.result, steps, a.batch, a.workers, a.compile, a.bf16, a.device)
        return
    _prepare(a.work)
    configs = [(r, w, False, False) for r in (1, 2) for w in (0, 1, 2)]
    if a.compile:
        configs.append((1, 0, True, False))
    if a.device == "cuda":
        configs.append((1, 2, False, True))
    rows = []
    for ranks, workers, comp, bf16 in configs:
        rows.append(_run(a.work, ranks, workers, steps, a.batch, comp, bf16, a.device))
        print(json.dumps(rows[-1]), file=sys.stderr)
    meta = {"batch": a.batch, "steps": steps, "segment_s": 1.0, "quick": a.quick,
            "machine": f"{os.cpu_count()} CPU cores ({platform.machine()}), device "
                       f"{a.device}",
            "note": "CUDA not available here: bf16 autocast not measured" if a.device == "cpu"
            else "bf16 autocast on CUDA"}
    write_results(a.out, "train", {"meta": meta, "rows": rows}, table(rows, meta))


if __name__ == "__main__":
    main()
