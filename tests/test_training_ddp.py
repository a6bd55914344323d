"""Data-parallel training with torch.distributed (issue 21): two gloo ranks on CPU, launched
by the real ``torchrun``, on the smoke config.

* the gradients DDP averages over two ranks equal those of one process on the two ranks'
  batches concatenated (the carried GRU states concatenated likewise), step after step;
* a student checkpoint written by two ranks resumes in one process (its carried states
  dealt out again), and the teacher trains under torchrun too.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training.config import load_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_port()), *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                         cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return res


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([str(BIN / "train-denoiser"), *args], capture_output=True, text=True,
                         timeout=300, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return res


@pytest.fixture(scope="module")
def work(tmp_path_factory, shared_data):
    """A smoke manifest and a teacher trained by two ranks."""
    w = tmp_path_factory.mktemp("ddp")
    _cli("prepare", "-c", "smoke", "-w", str(w), "-q", f"data.data_root={shared_data}")
    res = _torchrun(str(BIN / "train-denoiser"), "teacher", "-c", "smoke", "-w", str(w),
                    "--json")
    out = json.loads(res.stdout)  # rank 0 alone prints the result
    assert abs(sum(out["weights"]) - 1) < 1e-3
    assert torch.load(w / "teacher.pt", weights_only=False)["world"] == 2
    assert len(list((w / "runs").glob("*-teacher"))) == 1  # one run folder, rank 0's
    return w


@pytest.mark.slow
def test_ddp_gradients_equal_one_process_on_concatenated_batch(work, tmp_path):
    from training import pipeline
    from training.dist import Dist
    from training.distill import batch_inputs, batch_loss
    from training.loader import StepBatches
    from training.student import Student
    from training.teacher import load_teacher

    out = tmp_path / "grads.pt"
    _torchrun(str(ROOT / "tests" / "ddp_probe.py"), str(work), str(out), "3")
    rec = torch.load(out, weights_only=False)
    assert rec["world"] == 2 and len(rec["records"]) == 3 * 2  # 3 steps x 2 students
    assert any(r["h0"] is not None for r in rec["records"])  # carried states were used

    cfg = load_config("smoke", ["student.steps=3"])
    sc = cfg.student
    train, _ = pipeline._mixers(cfg, work, lambda s: None)
    teacher = load_teacher(work / "teacher.pt", cfg)
    ranks = [StepBatches(train, cfg.seed, 3, sc.batch, Dist(rank=r, world=2)) for r in (0, 1)]
    for r in rec["records"]:
        parts = [ds[r["step"]] for ds in ranks]
        both = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        grads = []
        for b, h0 in ((both, r["h0"]), (parts[0], None if r["h0"] is None
                                        else r["h0"][:, :sc.batch])):
            s = Student(embed=sc.embed, hidden=sc.hidden, mask_floor=sc.mask_floor,
                        mask_power=sc.mask_power, out_floor=sc.out_floor)
            s.load_state_dict(r["state"])
            s.train()
            loss, _ = batch_loss(s.run, s, r["name"], sc, b,
                                 batch_inputs(b, sc, teacher, "cpu"), h0)
            loss.backward()
            grads.append({k: p.grad for k, p in s.named_parameters()})
        for k, g_ddp in r["grads"].items():
            scale = float(g_ddp.abs().max())
            torch.testing.assert_close(g_ddp, grads[0][k], rtol=1e-4, atol=1e-5 * scale,
                                       msg=f"step {r['step']} {r['name']} {k}")
        # and the average really is over both ranks: rank 0's batch alone differs
        assert any(not torch.allclose(r["grads"][k], grads[1][k], rtol=1e-3, atol=1e-6)
                   for k in grads[1])


@pytest.mark.slow
def test_ddp_resume_two_rank_checkpoint_in_one_process(work):
    res = _torchrun(str(BIN / "train-denoiser"), "student", "-c", "smoke", "-w", str(work),
                    "--json", "student.steps=4")
    assert json.loads(res.stdout)["chosen"] == "adaptive"
    ck = torch.load(work / "students.pt", weights_only=False)
    sc = load_config("smoke").student
    assert ck["world"] == 2 and ck["step"] == 4
    assert ck["carry"]["adaptive"].shape == (1, 2 * sc.batch, sc.hidden)  # both ranks' states
    before = {k: v.clone() for k, v in ck["models"]["adaptive"].items()}

    res = _cli("student", "-c", "smoke", "-w", str(work), "--json", "student.steps=6")
    assert "resuming students from" in res.stderr and "(step 4)" in res.stderr
    ck = torch.load(work / "students.pt", weights_only=False)
    assert ck["world"] == 1 and ck["step"] == 6
    assert ck["carry"]["adaptive"].shape == (1, sc.batch, sc.hidden)
    after = ck["models"]["adaptive"]
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained on
    runs = sorted((work / "runs").glob("*-student"))
    assert [json.loads((r / "meta.json").read_text())["world_size"] for r in runs] == [2, 1]
