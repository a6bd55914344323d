"""Rich progress bars on stderr (loss and ETA) and atomic, resumable checkpoints."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from edge.outpaths import atomic_temp

STDERR = Console(stderr=True)


@contextmanager
def bar(description: str, total: int, quiet: bool = False):
    """Yields ``update(advance=1, loss=None)``; shows steps, loss, elapsed and ETA on stderr."""
    if quiet:
        yield lambda advance=1, **kw: None
        return
    cols = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn())
    with Progress(*cols, console=STDERR, transient=False) as p:
        task = p.add_task(description, total=total, info="")
        done = [0]
        every = max(1, total // 20)

        def update(advance: int = 1, **fields) -> None:
            info = "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                             for k, v in fields.items())
            p.update(task, advance=advance, info=info)
            done[0] += advance
            if not STDERR.is_terminal and advance and done[0] % every == 0:
                # logs and CI: a plain line now and then (the bar renders only on a terminal)
                STDERR.print(f"{description}: {done[0]}/{total} {info} "
                             f"({p.tasks[0].elapsed or 0:.0f} s)")

        yield update


def save_checkpoint(path: Path, obj: dict) -> None:
    """torch.save to a temp file then rename: a crash never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = atomic_temp(path, suffix=".tmp")
    os.close(fd)
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict | None:
    return torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None


def fast_forward(schedulers, steps: int) -> None:
    """Advance LR schedulers to ``steps`` on resume. No optimizer step precedes these calls,
    which is what torch's "lr_scheduler.step() before optimizer.step()" warning is about;
    here it is intended, so it is silenced."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step()`")
        for _ in range(steps):
            for s in schedulers:
                s.step()
