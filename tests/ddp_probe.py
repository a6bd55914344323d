"""Run by tests/test_training_ddp.py under ``torchrun --nproc-per-node 2``: a few DDP steps
of the smoke students, recording on rank 0 what each step's averaged gradient was computed
from (the weights, every rank's initial GRU states) and the gradient itself.

    torchrun --nproc-per-node 2 tests/ddp_probe.py WORK OUT.pt STEPS
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from training import pipeline
from training.config import load_config
from training.dist import close, gather_rows
from training.distill import train_students
from training.loader import Runtime
from training.teacher import load_teacher


def main(work: Path, out: Path, steps: int) -> None:
    cfg = load_config("smoke", [f"student.steps={steps}"])
    d = pipeline.setup_torch(cfg, "cpu", distributed=True)
    train, val = pipeline._mixers(cfg, work, lambda s: None)
    records = []

    def on_grads(step, name, s, h0):
        every = gather_rows(h0, d)  # a collective: every rank calls it
        if d.main:
            records.append({
                "step": step, "name": name,
                "state": {k: v.detach().clone() for k, v in s.state_dict().items()},
                "grads": {k: v.grad.detach().clone() for k, v in s.named_parameters()},
                "h0": None if every is None else every.clone()})

    train_students(cfg, train, val, load_teacher(work / "teacher.pt", cfg),
                   work / "probe_students.pt", True, lambda s: None, "cpu", Runtime(d),
                   on_grads)
    if d.main:
        torch.save({"world": d.world, "records": records}, out)
    close(d)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
