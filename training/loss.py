"""Losses and signal metrics as pure functions of tensors (SPEC §2, §3).

Masks are (..., bins) in [0, 1]. Signals are (batch, samples).
"""

from __future__ import annotations

import torch


def adaptive_weight(m_ref: torch.Tensor, m_teacher: torch.Tensor) -> torch.Tensor:
    """SPEC §3: ``a = min(|m_ref - m_teacher| + 0.5, 1)`` per bin.

    Where the teacher agrees with the truth a = 0.5 (learn half from each); where it is wrong
    by 0.5 or more, a = 1 (follow the truth only).
    """
    return torch.clamp(torch.abs(m_ref - m_teacher) + 0.5, max=1.0)


def bin_weights(noisy_mag: torch.Tensor, power: float) -> torch.Tensor:
    """Per-bin weights ``|X|^power``, scaled to mean 1 over each example (so a loud and a
    quiet mixture count alike). ``power = 0`` weighs every bin the same.

    Why: an unweighted mask MSE spends as much effort on a near-silent bin as on the bins
    that carry the speech. With ``power = 2`` the weighted mask error is exactly the
    magnitude error ``| |X| m_s - |X| m |^2``; smaller powers compress that, as the loudness
    of speech is compressed by the ear.
    """
    if power == 0:
        return torch.ones_like(noisy_mag)
    w = noisy_mag.clamp_min(1e-8) ** power
    dims = tuple(range(1, w.dim()))
    return w / w.mean(dim=dims, keepdim=True)


def _weighted_mean(per_bin: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    return torch.mean(per_bin if weight is None else weight * per_bin)


def adaptive_loss(m_student: torch.Tensor, m_ref: torch.Tensor, m_teacher: torch.Tensor,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """SPEC §3: mean over bins of ``a*(m_ref - m_s)^2 + (1 - a)*(m_teacher - m_s)^2``,
    optionally a weighted mean (``bin_weights``; the per-bin loss is unchanged).

    ``a`` is a function of the targets only, so no gradient flows through it.
    """
    a = adaptive_weight(m_ref, m_teacher).detach()
    per_bin = a * (m_ref - m_student) ** 2 + (1 - a) * (m_teacher - m_student) ** 2
    return _weighted_mean(per_bin, weight)


def mask_mse(m_student: torch.Tensor, m_ref: torch.Tensor,
             weight: torch.Tensor | None = None) -> torch.Tensor:
    """The ablation's loss: MSE against the ideal ratio mask (weighted like the adaptive)."""
    return _weighted_mean((m_ref - m_student) ** 2, weight)


def si_sdr(est: torch.Tensor, ref: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SDR in dB, (batch, n) -> (batch,). Means removed first."""
    est = est - est.mean(-1, keepdim=True)
    ref = ref - ref.mean(-1, keepdim=True)
    alpha = (est * ref).sum(-1, keepdim=True) / ((ref * ref).sum(-1, keepdim=True) + eps)
    target = alpha * ref
    noise = est - target
    return 10 * torch.log10((target ** 2).sum(-1) + eps) - 10 * torch.log10(
        (noise ** 2).sum(-1) + eps)
