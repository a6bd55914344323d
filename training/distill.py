"""Distillation (SPEC §3): the student learns from the fused teacher's masks and the ideal
ratio mask with the adaptive a-weighted loss; the ablation student (m_ref only) sees exactly
the same batches and steps, so the comparison is fair at equal budget. Each student's
sequences start from the GRU state its previous batch ended in (``carry_state``), a share
``p_state_reset`` of them from zero, so it learns to run as a stream that never resets.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from training.config import TrainConfig
from training.data import Mixer
from training.dist import batch_key, broadcast, gather_rows, my_rows, wrap
from training.loader import Runtime, batches
from training.loss import adaptive_loss, mask_mse, si_sdr
from training.progress import bar, fast_forward, load_checkpoint, save_checkpoint
from training.student import Student, post_filter
from training.teacher import Teacher, _t, batch_weights, enhance, feature_stats


def _new_student(cfg: TrainConfig, mean, std) -> Student:
    sc = cfg.student
    return Student(embed=sc.embed, hidden=sc.hidden, mask_floor=sc.mask_floor, mean=mean,
                   std=std, mask_power=sc.mask_power, out_floor=sc.out_floor)


def train_students(cfg: TrainConfig, train: Mixer, val: Mixer, teacher: Teacher | None,
                   ckpt: Path, quiet: bool = False, log=print, device: str = "cpu",
                   rt: Runtime = Runtime(), on_grads=None) -> dict:
    """Train ``adaptive`` (and ``mref`` or ``core`` for the ablation); resumable from ``ckpt``.

    Without a teacher only the m_ref student is trained (smoke runs may skip the teacher).
    Under torchrun (``rt.dist``) each rank trains on its own batches and carries its own
    sequences' GRU states; DDP averages the gradients; rank 0 writes the checkpoint with
    every rank's states, and a resume on any number of ranks deals them out again
    (``dist.my_rows``). Non-zero ranks return no metrics. ``on_grads(step, name, student,
    h0)`` (tests, diagnostics) sees each averaged gradient before clipping.
    """
    sc, d = cfg.student, rt.dist
    kind = sc.ablation_kind if teacher is not None else "mref"
    names = (["adaptive"] if teacher is not None else []) + (
        [kind] if sc.ablation or teacher is None else [])
    state = broadcast(load_checkpoint(ckpt) if d.main else None, d)
    t0 = time.monotonic()
    torch.manual_seed(cfg.seed)
    if state is None:
        mean, std = feature_stats(train, np.random.default_rng([cfg.seed, 999]))
        students = {n: _new_student(cfg, mean, std) for n in names}
        for s in students.values():  # identical initial weights: only the loss differs
            s.load_state_dict(students[names[0]].state_dict())
        state = {"step": 0, "wall_s": 0.0}
    else:
        students = {n: Student(**state["configs"][n]) for n in names}
        for n, s in students.items():
            s.load_state_dict(state["models"][n])
        log(f"resuming students from {ckpt} (step {state['step']})")
    for s in students.values():
        s.to(device)
    if teacher is not None:
        teacher.to(device)
    opts = {n: torch.optim.Adam(s.parameters(), lr=sc.lr) for n, s in students.items()}
    if "opts" in state:
        for n, o in opts.items():
            o.load_state_dict(state["opts"][n])
    scheds = {n: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=sc.lr, total_steps=sc.steps,
                                                     pct_start=0.1) for n, o in opts.items()}
    fast_forward(scheds.values(), state["step"])

    def save(step: int) -> None:
        # every rank's carried states (a collective: all ranks call save), rank 0 writes
        every = {n: gather_rows(h, d) for n, h in carry.items()}
        if not d.main:
            return
        save_checkpoint(ckpt, {
            "models": {n: s.state_dict() for n, s in students.items()},
            "configs": {n: s.config() for n, s in students.items()},
            "opts": {n: o.state_dict() for n, o in opts.items()}, "step": step,
            "carry": {n: (h.cpu() if h is not None else None) for n, h in every.items()},
            "config": cfg.as_dict(), "world": d.world,
            "wall_s": state["wall_s"] + time.monotonic() - t0})

    carry = {n: (my_rows(h, sc.batch, d).to(device) if h is not None else None)
             for n, h in state.get("carry", {n: None for n in names}).items()}
    for s in students.values():
        s.train()
    runs = {n: rt.compiled(wrap(s, "run", d)) for n, s in students.items()}
    with bar("students", sc.steps, quiet) as update:
        update(state["step"])
        for step, b in zip(range(state["step"], sc.steps),
                           batches(train, cfg.seed, 3, sc.batch, state["step"], sc.steps, rt),
                           strict=True):
            inputs = batch_inputs(b, sc, teacher, device, rt)
            resets = np.random.default_rng(batch_key(cfg.seed, 7, step, d)).random(sc.batch)
            losses = {}
            for n, s in students.items():
                h0 = carry_state(carry[n], resets, sc.p_state_reset)
                loss, h = batch_loss(runs[n], s, n, sc, b, inputs, h0, rt)
                carry[n] = h.detach().float()
                opts[n].zero_grad()
                loss.backward()
                if on_grads is not None:
                    on_grads(step, n, s, h0)
                torch.nn.utils.clip_grad_norm_(s.parameters(), 5.0)
                opts[n].step()
                scheds[n].step()
                losses[n] = float(loss.detach())
            update(**losses)
            rt.log("student", step + 1, {**{f"loss_{n}": v for n, v in losses.items()},
                                         "lr": scheds[names[0]].get_last_lr()[0]})
            if (step + 1) % 200 == 0 or step + 1 == sc.steps:
                save(step + 1)
    wall = state["wall_s"] + time.monotonic() - t0
    for s in students.values():
        s.eval().cpu()
    if not d.main:
        return {"students": students, "metrics": {}}
    metrics = {n: student_val_metrics(s, val, cfg) for n, s in students.items()}
    metrics["wall_time_s"] = round(wall, 1)
    metrics["params"] = students[names[0]].n_params()
    metrics["macs_per_hop"] = students[names[0]].macs_per_hop()
    return {"students": students, "metrics": metrics}


def batch_inputs(b: dict, sc, teacher: Teacher | None, device: str, rt: Runtime = Runtime()
                 ) -> tuple:
    """(features, m_ref, bin weights, teacher mask or None) of a batch, on ``device``."""
    feats, m_ref = _t(b["feats"]).to(device), _t(b["irm"]).to(device)
    w = batch_weights(b, sc.bin_weight_power, device)
    m_teacher = None
    if teacher is not None:
        with torch.no_grad(), rt.autocast():
            m_teacher = teacher(feats).float()
    return feats, m_ref, w, m_teacher


def batch_loss(run, s: Student, name: str, sc, b: dict, inputs: tuple, h0, rt: Runtime = Runtime()
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Student ``name``'s loss on one batch from state ``h0``, and its final state. ``run``
    is ``s.run`` or its DDP wrapper."""
    feats, m_ref, w, m_teacher = inputs
    with rt.autocast():
        g, h = run(feats, h0)
        g = g.float()
    m_s = post_filter(g, 1.0, s.mask_floor)  # what SPEC §3's loss sees
    loss = student_loss(m_s, m_ref, m_teacher if name != "mref" else None, w,
                        0.0 if name == "core" else sc.si_sdr_weight, b,
                        post_filter(g, s.mask_power, s.out_floor))
    return loss, h


def student_loss(m_s: torch.Tensor, m_ref: torch.Tensor, m_teacher: torch.Tensor | None,
                 w: torch.Tensor | None, si_sdr_weight: float = 0.0, b: dict | None = None,
                 m_applied: torch.Tensor | None = None) -> torch.Tensor:
    """SPEC §3's adaptive loss on the trained mask ``m_s`` (the m_ref-only MSE without a
    teacher), minus ``si_sdr_weight`` times the mean SI-SDR (dB) of the batch's noisy
    spectrum ``b`` through ``m_applied`` against its clean signal.

    ``m_applied`` is the mask as the product applies it (the post-filter included; ``m_s``
    when None): a signal term on the training mask would optimise a signal nobody hears.
    SPEC §3 allows the term where it wins on the cross-corpus split; in 3000-step trials a
    weight of 0.01 gave +0.5 dB SI-SDR and +0.04 PESQ on validation (README).
    """
    loss = adaptive_loss(m_s, m_ref, m_teacher, w) if m_teacher is not None else (
        mask_mse(m_s, m_ref, w))
    if si_sdr_weight:
        m = m_s if m_applied is None else m_applied
        y = enhance(_t(b["noisy_spec"]).to(m.device), m, b["clean"].shape[1])
        loss = loss - si_sdr_weight * si_sdr(y, _t(b["clean"]).to(y.device)).mean()
    return loss


def carry_state(h: torch.Tensor | None, draws: np.ndarray, p_reset: float
                ) -> torch.Tensor | None:
    """The initial GRU state of the next batch: the last batch's final states, each zeroed
    where ``draws`` (uniform in [0, 1), one per sequence) falls below ``p_reset``.

    Training sequences are 2 s long but the product runs for hours. A student that only ever
    starts from zero never learns to let go of what came before, so in a continuous stream
    the state one scene leaves behind (its noise, level, speaker) spoils the next one: run
    over the test split's mixtures back to back, the v1.3.0 student kept +1.9 of its +5.4 dB
    SI-SDR gain and lost 0.21 PESQ (benchmarks/denoise.py, ``student_int8_continuous``).
    Starting sequences from the state of an unrelated mixture teaches it to recover, at no
    extra compute.
    """
    if h is None or p_reset >= 1:
        return None
    keep = torch.from_numpy((draws >= p_reset).astype(np.float32)).to(h.device)
    return h * keep[None, :, None]


@torch.no_grad()
def student_val_metrics(s: Student, val: Mixer, cfg: TrainConfig, batches: int = 4) -> dict:
    """Mean SI-SDR (dB) of the applied mask and MSE of the trained mask on fixed validation
    mixtures."""
    sd, mm = [], []
    for i in range(batches):
        b = val.batch(np.random.default_rng([cfg.seed, 2, i]), cfg.teacher.batch)
        gate = s.gate(_t(b["feats"]))  # once: both masks are functions of it
        y = enhance(b["noisy_spec"], post_filter(gate, s.mask_power, s.out_floor),
                    b["clean"].shape[1])
        sd.append(float(si_sdr(y, _t(b["clean"])).mean()))
        mm.append(float(mask_mse(post_filter(gate, 1.0, s.mask_floor), _t(b["irm"]))))
    return {"si_sdr": round(float(np.mean(sd)), 4), "mask_mse": round(float(np.mean(mm)), 5)}
