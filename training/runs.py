"""One folder per training run: what ran (the config as run, overrides included, the git
commit, the command line), what it measured (metrics, loss curves as TensorBoard events and a
PNG) and what it produced (copies of its checkpoints).

    WORK/runs/YYYYmmdd-HHMMSS-STAGE/
        config.toml   meta.json   metrics.json   curves.png   tb/   checkpoints/

The stage files in WORK itself (manifest, teacher.pt, students.pt, ...) stay where the next
stage and a resumed run look for them; a run folder is the record of one invocation.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from training.config import TrainConfig, to_toml

ROOT = Path(__file__).resolve().parents[1]


def git_commit(root: Path = ROOT) -> dict:
    """HEAD's commit and whether the tree had local changes; empty outside a git checkout."""
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": sha, "dirty": dirty}


class Run:
    """The folder of one run and its scalar log. Only rank 0 makes one."""

    def __init__(self, work: Path, stage: str, cfg: TrainConfig, overrides=(), world: int = 1):
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        base = work / "runs" / f"{stamp}-{stage}"
        path, i = base, 1
        while path.exists():  # two runs in the same second
            i += 1
            path = base.with_name(f"{base.name}-{i}")
        path.mkdir(parents=True)
        self.path, self.stage, self.work = path, stage, work
        (path / "config.toml").write_text(to_toml(cfg))
        self.meta = {"stage": stage, "config": cfg.name, "overrides": list(overrides),
                     "argv": sys.argv, "world_size": world, "started": stamp,
                     **git_commit()}
        self._write_meta()
        self.curves: dict[str, list[tuple[int, float]]] = {}
        self._tb = None
        try:  # torch's writer needs the tensorboard package (the train extra)
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(path / "tb"))
        except ImportError:
            self.meta["tensorboard"] = "not installed: curves only in curves.png"
            self._write_meta()

    def _write_meta(self) -> None:
        (self.path / "meta.json").write_text(json.dumps(self.meta, indent=1, default=str))

    def scalars(self, prefix: str, step: int, values: dict) -> None:
        for k, v in values.items():
            tag = f"{prefix}/{k}"
            self.curves.setdefault(tag, []).append((step, float(v)))
            if self._tb is not None:
                self._tb.add_scalar(tag, float(v), step)

    def fail(self, e: BaseException) -> None:
        """Say in meta.json why the run ended without results."""
        self.meta["failed"] = f"{type(e).__name__}: {e}"
        if self._tb is not None:
            self._tb.close()
        self._write_meta()

    def finish(self, metrics: dict, checkpoints: tuple[str, ...] = ()) -> None:
        """Metrics, the curves PNG, copies of the stage's checkpoints; closes the log."""
        (self.path / "metrics.json").write_text(json.dumps(metrics, indent=1, default=str))
        if self._tb is not None:
            self._tb.close()
        if self.curves:
            plot_curves(self.curves, self.path / "curves.png", self.stage)
        for name in checkpoints:
            src = self.work / name
            if src.is_file():
                (self.path / "checkpoints").mkdir(exist_ok=True)
                shutil.copy2(src, self.path / "checkpoints" / name)
        self.meta["finished"] = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        self._write_meta()


def plot_curves(curves: dict[str, list[tuple[int, float]]], path: Path, title: str) -> None:
    """One panel per tag, value against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tags = sorted(curves)
    fig, axes = plt.subplots(len(tags), 1, figsize=(7, 2.2 * len(tags)), squeeze=False)
    for ax, tag in zip(axes[:, 0], tags, strict=True):
        steps, values = zip(*curves[tag], strict=True)
        ax.plot(steps, values, lw=1)
        ax.set_ylabel(tag.split("/")[-1])
        ax.set_title(tag, fontsize=9)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
