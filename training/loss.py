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


def adaptive_loss(m_student: torch.Tensor, m_ref: torch.Tensor, m_teacher: torch.Tensor
                  ) -> torch.Tensor:
    """SPEC §3: mean over bins of ``a*(m_ref - m_s)^2 + (1 - a)*(m_teacher - m_s)^2``.

    ``a`` is a function of the targets only, so no gradient flows through it.
    """
    a = adaptive_weight(m_ref, m_teacher).detach()
    return torch.mean(a * (m_ref - m_student) ** 2 + (1 - a) * (m_teacher - m_student) ** 2)


def mask_mse(m_student: torch.Tensor, m_ref: torch.Tensor) -> torch.Tensor:
    """The ablation's loss: plain MSE against the ideal ratio mask."""
    return torch.mean((m_ref - m_student) ** 2)


def si_sdr(est: torch.Tensor, ref: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SDR in dB, (batch, n) -> (batch,). Means removed first."""
    est = est - est.mean(-1, keepdim=True)
    ref = ref - ref.mean(-1, keepdim=True)
    alpha = (est * ref).sum(-1, keepdim=True) / ((ref * ref).sum(-1, keepdim=True) + eps)
    target = alpha * ref
    noise = est - target
    return 10 * torch.log10((target ** 2).sum(-1) + eps) - 10 * torch.log10(
        (noise ** 2).sum(-1) + eps)
