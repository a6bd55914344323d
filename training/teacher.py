"""The teacher (SPEC §2): N diverse "modulation model" processors fused by softmax weights.

Each processor: Conv2d over the (time, frequency) log-power spectrogram + max-pooling over
frequency -> fully connected layer into a wider feature space -> bidirectional LSTM over
time -> fully connected layer -> sigmoid mask (161 bins). The processors differ in kernel
shape, channels, pooling and widths. The teacher runs offline, so it may look ahead (the
bidirectional LSTM); only the student has to be causal.

Fusion: ``mask = sum_i softmax(theta)_i * mask_i``. The processors are trained first on the
ideal ratio mask; then theta starts uniform (zeros) and is optimised on the SI-SDR of the
fused, resynthesised output against the clean signal on validation mixtures.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.config import TeacherConfig, TrainConfig
from training.data import Mixer
from training.dist import broadcast, wrap
from training.loader import Runtime, batches
from training.loss import bin_weights, mask_mse, si_sdr
from training.progress import bar, fast_forward, load_checkpoint, save_checkpoint
from training.torchdsp import istft

N_BINS = 161


class Processor(nn.Module):
    """(batch, time, bins) normalised features -> (batch, time, bins) mask."""

    def __init__(self, channels: int, kernel: tuple[int, int], pool: int, fc: int, lstm: int,
                 n_bins: int = N_BINS):
        super().__init__()
        self.conv = nn.Conv2d(1, channels, kernel, padding=(kernel[0] // 2, kernel[1] // 2))
        self.pool = nn.MaxPool2d((1, pool))
        self.fc_in = nn.Linear(channels * (n_bins // pool), fc)
        self.lstm = nn.LSTM(fc, lstm, batch_first=True, bidirectional=True)
        self.fc_out = nn.Linear(2 * lstm, n_bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        y = self.pool(torch.relu(self.conv(x.unsqueeze(1))))  # (b, c, t, bins // pool)
        y = torch.relu(self.fc_in(y.permute(0, 2, 1, 3).reshape(b, t, -1)))
        return torch.sigmoid(self.fc_out(self.lstm(y)[0]))


class Teacher(nn.Module):
    """The ensemble: normalisation, N processors and the fusion logits theta."""

    def __init__(self, cfg: TeacherConfig, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("inv_std", torch.as_tensor(1 / std, dtype=torch.float32))
        self.processors = nn.ModuleList(
            Processor(cfg.channels[i], tuple(cfg.kernels[i]), cfg.pools[i], cfg.fc[i],
                      cfg.lstm[i]) for i in range(cfg.n_processors))
        self.theta = nn.Parameter(torch.zeros(cfg.n_processors))

    def masks(self, feats: torch.Tensor) -> torch.Tensor:
        """(batch, time, bins) -> (N, batch, time, bins), one mask per processor."""
        x = (feats - self.mean) * self.inv_std
        return torch.stack([p(x) for p in self.processors])

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.theta, 0)

    def fuse(self, masks: torch.Tensor) -> torch.Tensor:
        return torch.einsum("n,nbtf->btf", self.weights(), masks)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.masks(feats))


def feature_stats(mixer: Mixer, rng: np.random.Generator, n: int = 64
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin mean and std of the log-power features over ``n`` training mixtures."""
    f = mixer.batch(rng, n)["feats"].reshape(-1, N_BINS)
    return f.mean(0).astype(np.float32), (f.std(0) + 1e-3).astype(np.float32)


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


def batch_weights(b: dict, power: float, device: str = "cpu") -> torch.Tensor | None:
    """The loss's per-bin weights for a training batch (``bin_weights``), None for power 0."""
    return bin_weights(_t(np.abs(b["noisy_spec"])).to(device), power) if power else None


def enhance(noisy_spec: np.ndarray | torch.Tensor, masks: torch.Tensor, n: int) -> torch.Tensor:
    """Masked noisy spectrum -> waveform (batch, n)."""
    spec = noisy_spec if torch.is_tensor(noisy_spec) else _t(noisy_spec)
    return istft(spec * masks, n)


def train_teacher(cfg: TrainConfig, train: Mixer, val: Mixer, ckpt: Path, quiet: bool = False,
                  log=print, device: str = "cpu", rt: Runtime = Runtime()) -> dict:
    """Train the processors (resumable from ``ckpt``), then learn theta. Returns metrics.

    Under torchrun (``rt.dist``) each rank trains on its own batches, DDP averages the
    processors' gradients and rank 0 writes the checkpoint; the fusion weights are learned
    on the same fixed validation mixtures by every rank, so they agree without a collective.
    """
    tc, d = cfg.teacher, rt.dist
    state = broadcast(load_checkpoint(ckpt) if d.main else None, d)
    t0 = time.monotonic()
    if state is None:
        torch.manual_seed(cfg.seed)
        mean, std = feature_stats(train, np.random.default_rng([cfg.seed, 999]))
        teacher = Teacher(tc, mean, std)
        state = {"step": 0, "phase": "processors", "wall_s": 0.0}
    else:
        teacher = Teacher(tc, np.zeros(N_BINS), np.ones(N_BINS))
        teacher.load_state_dict(state["model"])
        log(f"resuming teacher from {ckpt} (step {state['step']}, {state['phase']})")
    teacher.to(device)
    params = [p for n, p in teacher.named_parameters() if n != "theta"]
    opt = torch.optim.Adam(params, lr=tc.lr)
    if "opt" in state:
        opt.load_state_dict(state["opt"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tc.lr, total_steps=tc.steps,
                                                pct_start=0.1)
    fast_forward([sched], state["step"])

    def save(phase: str, step: int) -> None:
        if d.main:
            save_checkpoint(ckpt, {"model": teacher.state_dict(), "opt": opt.state_dict(),
                                   "step": step, "phase": phase, "config": cfg.as_dict(),
                                   "world": d.world,
                                   "wall_s": state["wall_s"] + time.monotonic() - t0})

    teacher.train()
    teacher.theta.requires_grad_(False)  # not trained here: DDP must not wait for its grad
    masks_of = rt.compiled(wrap(teacher, "masks", d))
    with bar("teacher processors", tc.steps, quiet) as update:
        update(state["step"])
        for step, b in zip(range(state["step"], tc.steps),
                           batches(train, cfg.seed, 1, tc.batch, state["step"], tc.steps, rt),
                           strict=True):
            with rt.autocast():
                masks = masks_of(_t(b["feats"]).to(device))
                target = _t(b["irm"]).to(device)
                w = batch_weights(b, tc.bin_weight_power, device)
                losses = [mask_mse(m.float(), target, w) for m in masks]
            opt.zero_grad()
            sum(losses).backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            sched.step()
            loss = float(sum(losses).detach()) / len(losses)
            update(loss=loss)
            rt.log("teacher", step + 1, {"loss": loss, "lr": sched.get_last_lr()[0]})
            if (step + 1) % 100 == 0 or step + 1 == tc.steps:
                save("processors", step + 1)
    teacher.theta.requires_grad_(True)
    teacher.eval().cpu()
    # fusion: processor outputs on fixed validation mixtures, then theta by -SI-SDR
    with torch.no_grad():
        vb = [val.batch(np.random.default_rng([cfg.seed, 2, i]), tc.batch) for i in range(4)]
        vm = [teacher.masks(_t(b["feats"])) for b in vb]
    theta_opt = torch.optim.Adam([teacher.theta], lr=0.05)
    with bar("teacher fusion", tc.fusion_steps, quiet) as update:
        for i in range(tc.fusion_steps):
            loss = 0.0
            for b, m in zip(vb, vm, strict=True):
                y = enhance(b["noisy_spec"], teacher.fuse(m), b["clean"].shape[1])
                loss = loss - si_sdr(y, _t(b["clean"])).mean() / len(vb)
            theta_opt.zero_grad()
            loss.backward()
            theta_opt.step()
            update(si_sdr=-float(loss.detach()))
            rt.log("teacher_fusion", i + 1, {"si_sdr": -float(loss.detach())})
    metrics = teacher_metrics(teacher, vb, vm)
    state["wall_s"] = state["wall_s"] + time.monotonic() - t0
    save("done", tc.steps)
    metrics["wall_time_s"] = round(state["wall_s"], 1)
    return metrics


@torch.no_grad()
def teacher_metrics(teacher: Teacher, batches: list[dict], masks: list[torch.Tensor]) -> dict:
    """SI-SDR (dB), waveform RMSE and mask MSE of each processor and of the fusion."""
    n = len(teacher.processors)
    res = {f"processor_{i}": {"si_sdr": [], "rmse": [], "mask_mse": []} for i in range(n)}
    res["fused"] = {"si_sdr": [], "rmse": [], "mask_mse": []}
    res["noisy"] = {"si_sdr": [], "rmse": [], "mask_mse": []}
    for b, m in zip(batches, masks, strict=True):
        clean, nlen = _t(b["clean"]), b["clean"].shape[1]
        cands = {f"processor_{i}": m[i] for i in range(n)}
        cands["fused"] = teacher.fuse(m)
        cands["noisy"] = torch.ones_like(m[0])
        for k, mk in cands.items():
            y = enhance(b["noisy_spec"], mk, nlen)
            res[k]["si_sdr"].append(float(si_sdr(y, clean).mean()))
            res[k]["rmse"].append(float(torch.sqrt(torch.mean((y - clean) ** 2))))
            res[k]["mask_mse"].append(float(mask_mse(mk, _t(b["irm"]))))
    out = {k: {m: round(float(np.mean(v)), 5) for m, v in d.items()} for k, d in res.items()}
    out["weights"] = [round(float(w), 4) for w in teacher.weights()]
    out["params"] = sum(p.numel() for p in teacher.parameters())
    best = max(out[f"processor_{i}"]["si_sdr"] for i in range(n))
    out["fused_beats_best_processor"] = out["fused"]["si_sdr"] > best
    return out


def load_teacher(ckpt: Path, cfg: TrainConfig) -> Teacher:
    state = load_checkpoint(ckpt)
    if state is None or state.get("phase") != "done":
        from training.data import DataError
        raise DataError(f"{ckpt}: no finished teacher (run `train-denoiser teacher` first)")
    t = Teacher(cfg.teacher, np.zeros(N_BINS), np.ones(N_BINS))
    t.load_state_dict(state["model"])
    return t.eval()
