"""The adaptive distillation loss (SPEC §3) and the torch iSTFT, checked against hand values
and against edge.dsp."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge.dsp import istft as np_istft  # noqa: E402
from edge.dsp import stft  # noqa: E402
from training.loss import (  # noqa: E402
    adaptive_loss,
    adaptive_weight,
    bin_weights,
    mask_mse,
    si_sdr,
)
from training.torchdsp import istft  # noqa: E402


def test_adaptive_weight_matches_spec():
    m_ref = torch.tensor([0.0, 0.2, 1.0, 0.5, 0.9])
    m_t = torch.tensor([0.0, 0.4, 0.0, 0.25, 0.0])
    # a = min(|m_ref - m_teacher| + 0.5, 1)
    assert torch.allclose(adaptive_weight(m_ref, m_t),
                          torch.tensor([0.5, 0.7, 1.0, 0.75, 1.0]))


def test_adaptive_loss_by_hand():
    m_ref, m_t, m_s = torch.tensor([0.8, 0.0]), torch.tensor([0.6, 1.0]), torch.tensor([0.5, 0.5])
    a = np.array([0.7, 1.0])
    want = np.mean(a * (np.array([0.8, 0.0]) - 0.5) ** 2
                   + (1 - a) * (np.array([0.6, 1.0]) - 0.5) ** 2)
    assert float(adaptive_loss(m_s, m_ref, m_t)) == pytest.approx(want, rel=1e-6)


def test_bin_weights():
    """Power 0 is the plain mean; weights average 1 per example whatever its level; with
    power 2 the weighted mask error is the magnitude error |X|^2 (m_s - m)^2 up to a
    per-example constant."""
    g = torch.Generator().manual_seed(0)
    mag = torch.rand(2, 5, 7, generator=g) * torch.tensor([1.0, 1e-3]).view(2, 1, 1)
    m_s, m_ref, m_t = (torch.rand(2, 5, 7, generator=g) for _ in range(3))
    assert torch.equal(bin_weights(mag, 0.0), torch.ones_like(mag))
    assert float(mask_mse(m_s, m_ref, bin_weights(mag, 0.0))) == pytest.approx(
        float(mask_mse(m_s, m_ref)))
    w = bin_weights(mag, 0.6)
    assert torch.allclose(w.mean(dim=(1, 2)), torch.ones(2))
    w2 = bin_weights(mag[:1], 2.0)
    mag_err = torch.mean((mag[:1] * m_s[:1] - mag[:1] * m_ref[:1]) ** 2)
    assert float(mask_mse(m_s[:1], m_ref[:1], w2)) == pytest.approx(
        float(mag_err / torch.mean(mag[:1] ** 2)), rel=1e-5)
    # weighted adaptive loss: the same per-bin terms, weighted
    a = adaptive_weight(m_ref, m_t)
    per_bin = a * (m_ref - m_s) ** 2 + (1 - a) * (m_t - m_s) ** 2
    assert float(adaptive_loss(m_s, m_ref, m_t, w)) == pytest.approx(float((w * per_bin).mean()))


def test_adaptive_loss_limits():
    r = torch.rand(4, 10, 161)
    s = torch.rand(4, 10, 161)
    # a perfect teacher: a = 0.5 everywhere and the loss equals plain MSE to m_ref
    assert float(adaptive_loss(s, r, r)) == pytest.approx(float(mask_mse(s, r)), rel=1e-6)
    # a maximally wrong teacher (|error| >= 0.5 everywhere): a = 1, pure m_ref loss
    wrong = torch.where(r > 0.5, r - 0.5, r + 0.5)
    assert float(adaptive_loss(s, r, wrong)) == pytest.approx(float(mask_mse(s, r)), rel=1e-6)


def test_adaptive_loss_gradient_only_through_student():
    r, t = torch.rand(8), torch.rand(8)
    s = torch.rand(8, requires_grad=True)
    adaptive_loss(s, r, t).backward()
    a = adaptive_weight(r, t)
    want = 2 * (a * (s - r) + (1 - a) * (s - t)) / 8
    assert torch.allclose(s.grad, want.detach(), atol=1e-6)


def test_torch_istft_matches_edge_dsp():
    x = np.random.default_rng(0).standard_normal(4321).astype(np.float32)
    spec = stft(x)
    got = istft(torch.from_numpy(spec)[None], len(x))[0].numpy()
    np.testing.assert_allclose(got, np_istft(spec, len(x)), atol=1e-5)
    np.testing.assert_allclose(got, x, atol=1e-4)


def test_si_sdr_scale_invariant():
    ref = torch.randn(2, 1000)
    noisy = ref + 0.1 * torch.randn(2, 1000)
    assert torch.allclose(si_sdr(3.0 * noisy, ref), si_sdr(noisy, ref), atol=1e-4)
    assert float(si_sdr(ref, ref).min()) > 60


def _pair(seed: int, noise: float):
    """Two random clean/noisy signals: (clean, noisy STFT, batch dict, ideal ratio mask)."""
    from edge.dsp import ideal_ratio_mask, stft

    rng = np.random.default_rng(seed)
    clean = (0.1 * rng.standard_normal((2, 4000))).astype(np.float32)
    noisy = (clean + noise * rng.standard_normal((2, 4000))).astype(np.float32)
    xs = np.stack([stft(x) for x in noisy])
    m_ref = torch.from_numpy(np.stack(
        [ideal_ratio_mask(stft(c), x) for c, x in zip(clean, xs, strict=True)]))
    return clean, xs, {"noisy_spec": xs, "clean": clean}, m_ref


def test_student_loss_is_spec_loss_unless_an_si_sdr_weight_is_set():
    """distill.student_loss: exactly SPEC §3's loss (or the m_ref MSE) at weight 0; with a
    weight it subtracts that many times the SI-SDR of the masked mixture."""
    from training.distill import student_loss
    from training.loss import mask_mse, si_sdr

    clean, xs, b, m_ref = _pair(seed=0, noise=0.05)
    m_t = torch.full_like(m_ref, 0.5)
    m_s = torch.full_like(m_ref, 0.7, requires_grad=True)
    assert float(student_loss(m_s, m_ref, m_t, None)) == float(adaptive_loss(m_s, m_ref, m_t))
    assert float(student_loss(m_s, m_ref, None, None)) == float(mask_mse(m_s, m_ref))
    y = istft(torch.from_numpy(xs) * m_s.detach(), 4000)
    want = float(mask_mse(m_s, m_ref)) - 0.01 * float(si_sdr(y, torch.from_numpy(clean)).mean())
    loss = student_loss(m_s, m_ref, None, None, 0.01, b)
    assert float(loss) == pytest.approx(want, rel=1e-5)
    loss.backward()
    assert m_s.grad is not None and torch.isfinite(m_s.grad).all()


def test_si_sdr_term_hears_the_mask_as_applied():
    """The signal term resynthesises through the post-filtered mask the product applies, not
    the training mask (before: through m_s, floor 0.1 and power 1, while the device applied
    floor 0.03 and power 1.7)."""
    from training.distill import student_loss
    from training.loss import mask_mse, si_sdr
    from training.student import post_filter

    clean, xs, b, m_ref = _pair(seed=1, noise=0.08)
    gate = torch.rand(m_ref.shape, generator=torch.Generator().manual_seed(0))
    m_s, m_applied = post_filter(gate, 1.0, 0.1), post_filter(gate, 1.7, 0.03)
    y = istft(torch.from_numpy(xs) * m_applied, 4000)
    want = float(mask_mse(m_s, m_ref)) - 0.01 * float(si_sdr(y, torch.from_numpy(clean)).mean())
    got = float(student_loss(m_s, m_ref, None, None, 0.01, b, m_applied))
    assert got == pytest.approx(want, rel=1e-5)
    trained = float(student_loss(m_s, m_ref, None, None, 0.01, b))
    assert abs(got - trained) > 1e-3  # the two masks give different signal terms
