"""The student (SPEC §3): a tiny causal GRU mask estimator with explicit state.

    features (1, 161) log-power -> per-bin normalisation -> Linear(161, E) + ReLU
      -> GRUCell(E, H) -> Linear(H, 161) -> sigmoid -> post-filter -> mask (1, 161)

One call is one 10 ms hop; the state is the GRU's hidden vector (1, H). No lookahead, so the
algorithmic latency is the front end's 20 ms window. With E = 64, H = 112 it has about 88 k
parameters and 88 k multiply-accumulates per hop (8.8 M MAC/s). The mask floor (0.1 =
-20 dB in the default recipe) bounds how much a bin can be attenuated: it trades a little
noise for less speech damage, which listeners (and PESQ) prefer.

Training mask and applied mask: the loss sees ``floor + (1 - floor) * sigmoid``
(``train_mask``). What the product applies (``forward``, the step model, the TFLite) passes
the sigmoid through a fixed post-filter, ``out_floor + (1 - out_floor) * sigmoid ** power``:
a mask regressed with an MSE hedges towards the middle where it is unsure, so raising it to a
power > 1 restores the suppression of noise-dominated bins, and a lower floor lets them go
further down. Both numbers are chosen on validation mixtures
(``benchmarks/mask_postfilter.py``); power 1 with out_floor = floor is the identity.

Training runs whole sequences through ``torch.nn.GRU`` (fast, fused); ``step_module`` copies
the same weights into a step form (the GRU equations over two Linear layers) for export.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

N_BINS = 161


class Student(nn.Module):
    """Sequence form for training: (batch, time, bins) -> (batch, time, bins)."""

    def __init__(self, n_bins: int = N_BINS, embed: int = 64, hidden: int = 112,
                 mask_floor: float = 0.05, mean: np.ndarray | None = None,
                 std: np.ndarray | None = None, mask_power: float = 1.0,
                 out_floor: float | None = None):
        super().__init__()
        self.n_bins, self.embed, self.hidden, self.mask_floor = n_bins, embed, hidden, mask_floor
        self.mask_power = mask_power
        self.out_floor = mask_floor if out_floor is None else out_floor
        mean = np.zeros(n_bins, np.float32) if mean is None else mean
        std = np.ones(n_bins, np.float32) if std is None else std
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("inv_std", torch.as_tensor(1.0 / std, dtype=torch.float32))
        self.inp = nn.Linear(n_bins, embed)
        self.gru = nn.GRU(embed, hidden, batch_first=True)
        self.out = nn.Linear(hidden, n_bins)

    def run(self, feats: torch.Tensor, h0: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """The sigmoid output in (0, 1) before any floor, and the final GRU state (1, B, H)."""
        z = torch.relu(self.inp((feats - self.mean) * self.inv_std))
        y, h = self.gru(z, h0)
        return torch.sigmoid(self.out(y)), h

    def gate(self, feats: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
        """The network's sigmoid output in (0, 1), before any floor."""
        return self.run(feats, h0)[0]

    def train_mask(self, feats: torch.Tensor, h0: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """The mask the distillation loss sees (SPEC §3's m_s), and the final state."""
        g, h = self.run(feats, h0)
        return post_filter(g, 1.0, self.mask_floor), h

    def forward(self, feats: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
        """The mask the product applies (post-filtered ``gate``)."""
        return post_filter(self.gate(feats, h0), self.mask_power, self.out_floor)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def macs_per_hop(self) -> int:
        e, h, b = self.embed, self.hidden, self.n_bins
        return b + b * e + 3 * (e * h + h * h) + 4 * h + b * h + 2 * b

    def config(self) -> dict:
        return {"n_bins": self.n_bins, "embed": self.embed, "hidden": self.hidden,
                "mask_floor": self.mask_floor, "mask_power": self.mask_power,
                "out_floor": self.out_floor}


def post_filter(gate: torch.Tensor, power: float, floor: float) -> torch.Tensor:
    """``floor + (1 - floor) * gate ** power``: the applied mask from the sigmoid output."""
    g = gate if power == 1 else torch.pow(gate, power)
    return floor + (1 - floor) * g


class StudentStep(nn.Module):
    """Step form for export: features (1, bins), state (1, H) -> mask (1, bins), state."""

    def __init__(self, s: Student):
        super().__init__()
        self.mask_power, self.out_floor = s.mask_power, s.out_floor
        self.register_buffer("mean", s.mean.clone())
        self.register_buffer("inv_std", s.inv_std.clone())
        self.inp = nn.Linear(s.n_bins, s.embed)
        self.inp.load_state_dict(s.inp.state_dict())
        # the GRU written out with two Linear layers (not GRUCell): the PT2E quantiser then
        # makes every weight and activation int8; a GRUCell would stay float in the TFLite
        self.hidden = s.hidden
        self.ih = nn.Linear(s.embed, 3 * s.hidden)
        self.hh = nn.Linear(s.hidden, 3 * s.hidden)
        with torch.no_grad():
            self.ih.weight.copy_(s.gru.weight_ih_l0)
            self.ih.bias.copy_(s.gru.bias_ih_l0)
            self.hh.weight.copy_(s.gru.weight_hh_l0)
            self.hh.bias.copy_(s.gru.bias_hh_l0)
        self.out = nn.Linear(s.hidden, s.n_bins)
        self.out.load_state_dict(s.out.state_dict())

    def forward(self, features: torch.Tensor, state: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.relu(self.inp((features - self.mean) * self.inv_std))
        gi, gh = self.ih(z), self.hh(state)  # PyTorch GRU gate order: r, z, n
        h_ = self.hidden
        r = torch.sigmoid(gi[:, :h_] + gh[:, :h_])
        u = torch.sigmoid(gi[:, h_:2 * h_] + gh[:, h_:2 * h_])
        n = torch.tanh(gi[:, 2 * h_:] + r * gh[:, 2 * h_:])
        h = (1 - u) * n + u * state
        return post_filter(torch.sigmoid(self.out(h)), self.mask_power, self.out_floor), h


def step_module(s: Student) -> StudentStep:
    return StudentStep(s).eval()


def save_student(path, s: Student, extra: dict | None = None) -> None:
    torch.save({"config": s.config(), "state": s.state_dict(), **(extra or {})}, path)


def load_student(path) -> tuple[Student, dict]:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    s = Student(**ck["config"])
    s.load_state_dict(ck["state"])
    return s.eval(), ck
