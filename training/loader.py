"""Training batches, mixed in DataLoader worker processes when asked.

A batch is a pure function of (seed, stream, step, rank) (``dist.batch_key``), so the
workers only move the mixing and feature extraction off the training process: with 0, 1 or
N workers, one rank or several, a resumed run or not, step s gets the same mixtures. 0
workers mixes in the training process, exactly as the single-process recipe always did.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from training.data import Mixer
from training.dist import SINGLE, Dist, batch_key


@dataclass(frozen=True)
class Runtime:
    """How a training stage runs (not what it learns, except ``bf16``): the process group,
    loader workers, bf16 autocast on CUDA, torch.compile, and where scalars go."""

    dist: Dist = SINGLE
    workers: int = 0
    bf16: bool = False
    compile: bool = False
    scalars: object = None  # callable(tag_prefix, step, {name: float}) on rank 0, or None

    def log(self, prefix: str, step: int, values: dict) -> None:
        if self.scalars is not None and self.dist.main:
            self.scalars(prefix, step, values)

    def autocast(self):
        """bf16 autocast on CUDA when asked; a no-op context otherwise (CPU trains fp32)."""
        if self.bf16 and self.dist.device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def compiled(self, module):
        return torch.compile(module) if self.compile else module


class StepBatches(Dataset):
    """Item ``step`` = this rank's batch of ``size`` fresh mixtures for that step."""

    def __init__(self, mixer: Mixer, seed: int, stream: int, size: int, d: Dist = SINGLE):
        self.mixer, self.seed, self.stream, self.size, self.d = mixer, seed, stream, size, d

    def __len__(self) -> int:
        return 1 << 40

    def __getitem__(self, step: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(batch_key(self.seed, self.stream, step, self.d))
        return self.mixer.batch(rng, self.size)


def _same(x):
    return x  # keep numpy arrays (the default collate would make tensors)


def batches(mixer: Mixer, seed: int, stream: int, size: int, start: int, stop: int,
            rt: Runtime = Runtime()) -> Iterator[dict[str, np.ndarray]]:
    """This rank's batches for steps start ... stop - 1, in order."""
    ds = StepBatches(mixer, seed, stream, size, rt.dist)
    if rt.workers <= 0:
        for step in range(start, stop):
            yield ds[step]
        return
    yield from DataLoader(ds, batch_size=None, sampler=range(start, stop),
                          num_workers=rt.workers, collate_fn=_same, prefetch_factor=2)
