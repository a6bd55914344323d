"""``edge.dsp.istft`` in torch (differentiable), for losses on the enhanced waveform.

Same window, hop and alignment as the numpy front end, so a waveform metric computed here
matches what the runtime produces from the same masks.
"""

from __future__ import annotations

import torch

from edge.dsp import DEFAULT_FRONT_END, FrontEnd


def istft(spec: torch.Tensor, n_samples: int, fe: FrontEnd = DEFAULT_FRONT_END
          ) -> torch.Tensor:
    """(batch, frames, bins) complex -> (batch, n_samples) float32, like ``edge.dsp.istft``."""
    win = torch.as_tensor(fe.synthesis_window, dtype=torch.float32, device=spec.device)
    frames = torch.fft.irfft(spec, n=fe.n_fft, dim=-1)[..., :fe.win] * win
    b, t, _ = frames.shape
    out = torch.nn.functional.fold(
        frames.transpose(1, 2), output_size=(1, fe.overlap + t * fe.hop),
        kernel_size=(1, fe.win), stride=(1, fe.hop))
    return out.reshape(b, -1)[:, fe.overlap:fe.overlap + n_samples]
