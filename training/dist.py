"""Data-parallel training on PyTorch's own engine: ``torch.distributed`` launched by
``torchrun``, ``DistributedDataParallel`` for the gradients.

Launched by ``torchrun`` (``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` in the environment) each
process joins one process group (``nccl`` on CUDA, ``gloo`` on CPU), trains on its own
mixtures (``batch_key``: the rank is part of the seed) and DDP averages the gradients, so one
step sees ``world x batch`` mixtures. Rank 0 alone writes checkpoints, logs and progress.
Started without ``torchrun`` nothing here changes anything: world 1, the seeds and batches
of the single-process recipe exactly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist
from torch import nn


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    device: str = "cpu"  # "cpu" or "cuda:LOCAL_RANK"

    @property
    def main(self) -> bool:
        """The one process that writes files, logs and progress bars."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1


SINGLE = Dist()


def launched() -> bool:
    """Started by torchrun (or anything that sets its environment) with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str = "cpu") -> Dist:
    """Join the process group torchrun describes (nccl for CUDA, gloo for CPU); the single
    process's ``Dist`` when not launched by torchrun."""
    if not launched():
        return Dist(device=device)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if device.startswith("cuda"):
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if device.startswith("cuda") else "gloo",
                                 rank=rank, world_size=world)
    return Dist(rank, world, local, local_world, device)


def close(d: Dist) -> None:
    if d.parallel and tdist.is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()


def batch_key(seed: int, stream: int, step: int, d: Dist) -> list[int]:
    """The numpy seed of one rank's batch at ``step``: the single-process key unchanged at
    world 1 (so the shipped recipe reproduces), the rank appended otherwise (ranks see
    different mixtures). A function of the step, not of history: resuming at any step, with
    any world size or number of loader workers, gives the same batches."""
    return [seed, stream, step] if d.world == 1 else [seed, stream, step, d.rank]


class Call(nn.Module):
    """A module whose ``forward`` is another module's method, so DDP (which hooks
    ``forward``) can wrap ``Student.run`` or ``Teacher.masks``."""

    def __init__(self, module: nn.Module, method: str):
        super().__init__()
        self.module, self.method = module, method

    def forward(self, *args):
        return getattr(self.module, self.method)(*args)


def wrap(module: nn.Module, method: str, d: Dist) -> nn.Module:
    """``module.method`` as a callable module: DDP-wrapped when parallel (the gradients of
    every backward are averaged over the ranks), the bare method's module otherwise."""
    m = Call(module, method)
    if not d.parallel:
        return m
    ids = [d.local_rank] if d.device.startswith("cuda") else None
    return nn.parallel.DistributedDataParallel(m, device_ids=ids)


def broadcast(obj, d: Dist):
    """Rank 0's ``obj`` on every rank (a checkpoint read on rank 0 only: other nodes need
    not share the work directory)."""
    if not d.parallel:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def gather_rows(t: torch.Tensor | None, d: Dist, dim: int = 1) -> torch.Tensor | None:
    """Every rank's ``t`` concatenated along ``dim`` (on rank 0's view): the carried GRU
    states of all ranks' sequences for the checkpoint."""
    if not d.parallel or t is None:
        return t
    parts = [torch.empty_like(t) for _ in range(d.world)]
    tdist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=dim)


def my_rows(t: torch.Tensor | None, n: int, d: Dist, dim: int = 1) -> torch.Tensor | None:
    """This rank's ``n`` rows of a checkpointed state with any number of rows: rank r takes
    rows r*n ... r*n + n - 1, wrapping around. A checkpoint of W ranks resumes on W' ranks
    (or one): each sequence still starts from the state some earlier mixture left behind,
    which is all the carried state means."""
    if t is None:
        return None
    idx = (torch.arange(n) + d.rank * n) % t.shape[dim]
    return t.index_select(dim, idx)


def sync_scalar(x: float, d: Dist) -> float:
    """Rank 0's value of ``x`` on every rank (time-budgeted loops must stop together)."""
    if not d.parallel:
        return x
    t = torch.tensor([float(x)], dtype=torch.float64)
    tdist.broadcast(t, src=0)
    return float(t[0])
