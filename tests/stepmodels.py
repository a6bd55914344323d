"""Build small hushlink step models for the runtime's tests (this file may import torch).

``build_test_model(dir)`` trains a tiny GRU mask estimator for a few seconds on real speech
and noise from ../shared/data (a synthetic signal when that is absent), exports it as an
int8 TFLite step model with litert-torch (PT2E quantisation, RECIPES.md) and writes the
metadata JSON of docs/MODEL_FORMAT.md. It is not a good denoiser; it is a real int8 GRU step
model with real quantised state tensors, which is what the runtime must handle. Results are
cached per directory, so all test modules of a session share one build.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from edge.dsp import FrontEnd, ideal_ratio_mask, log_power, stft

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
HIDDEN = 64
SPEECH = ["speech/vctk/p225", "speech/vctk/p226", "speech/vctk/p227", "speech/vctk/p228",
          "speech/lombardgrid/s30", "speech/lombardgrid/s31"]
NOISES = ["noise/freesound_cc0/cafe.flac", "noise/freesound_cc0/traffic.flac",
          "noise/household_timgrau/aircon_0.flac", "noise/noisex92/factory1.flac",
          "noise/blanket/rain.flac", "noise/household_timgrau/vacuuming_0.flac"]


def mix(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    noise = np.resize(noise, len(clean))
    g = np.sqrt(np.mean(clean ** 2) / (np.mean(noise ** 2) * 10 ** (snr_db / 10) + 1e-12))
    return (clean + g * noise).astype(np.float32)


def training_pairs(seconds: float = 60.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(clean, noisy) float32 at 16 kHz, SNRs 0..10 dB."""
    from edge.audio import load_audio

    rng = np.random.default_rng(seed)
    speech = [p for d in SPEECH for p in sorted((DATA / d).glob("*.flac"))] if DATA.is_dir() else []
    noises = [DATA / n for n in NOISES if (DATA / n).is_file()]
    if not speech or not noises:
        t = np.arange(int(16_000 * seconds)) / 16_000
        clean = 0.1 * np.sin(2 * np.pi * 200 * t) * (np.sin(2 * np.pi * 1.5 * t) > 0)
        noise = rng.standard_normal(len(t)) * 0.05
        return clean.astype(np.float32), mix(clean.astype(np.float32), noise, 5.0)
    clean_parts, noisy_parts, total = [], [], 0
    noise_audio = [load_audio(n).samples for n in noises]
    while total < seconds * 16_000:
        c = load_audio(speech[rng.integers(len(speech))]).samples
        nz = noise_audio[rng.integers(len(noise_audio))]
        start = rng.integers(max(1, len(nz) - len(c)))
        noisy = mix(c, np.roll(nz, -start), rng.uniform(0, 10))
        clean_parts.append(c)
        noisy_parts.append(noisy)
        total += len(c)
    return np.concatenate(clean_parts), np.concatenate(noisy_parts)


def _torch_model(n_bins: int, hidden: int, mean: np.ndarray, std: np.ndarray):
    import torch

    class StepGRU(torch.nn.Module):
        """features (1, n_bins), state (1, hidden) -> mask (1, n_bins), state (1, hidden).

        ``forward_seq`` runs the same weights with torch.nn.GRU over whole sequences for fast
        training; ``forward`` is the one-hop step that gets exported.
        """

        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.from_numpy(mean))
            self.register_buffer("inv_std", torch.from_numpy(1.0 / std))
            self.inp = torch.nn.Linear(n_bins, hidden)
            self.gru = torch.nn.GRUCell(hidden, hidden)
            self.out = torch.nn.Linear(hidden, n_bins)

        def forward(self, feat, state):
            z = torch.relu(self.inp((feat - self.mean) * self.inv_std))
            h = self.gru(z, state)
            return torch.sigmoid(self.out(h)), h

        def forward_seq(self, feats, gru):  # (batch, time, n_bins) -> (batch, time, n_bins)
            z = torch.relu(self.inp((feats - self.mean) * self.inv_std))
            return torch.sigmoid(self.out(gru(z)[0]))

    return StepGRU()


def train(model, feats: np.ndarray, masks: np.ndarray, steps: int, seed: int = 0) -> None:
    """Adam on (frames, bins) features -> IRM, 1 s sequences, ``steps`` batches (seeded, so
    the test model is the same on every run)."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    hidden = model.gru.hidden_size
    gru = torch.nn.GRU(hidden, hidden, batch_first=True)  # same maths as GRUCell, fused
    params = [*model.inp.parameters(), *model.out.parameters(), *gru.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3)
    f, m = torch.from_numpy(feats), torch.from_numpy(masks)
    seq, batch = 100, 16
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(f) - seq, batch)[:, None] + np.arange(seq))
        loss = torch.mean((model.forward_seq(f[idx], gru) - m[idx]) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(model.gru, name).copy_(getattr(gru, f"{name}_l0"))


def export_int8(model, feats: np.ndarray, path: Path, hidden: int) -> None:
    """PT2E int8 (weights and activations) -> TFLite via litert-torch."""
    import litert_torch
    import torch
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    model.eval()
    args = (torch.from_numpy(feats[:1]), torch.zeros(1, hidden))
    q = PT2EQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    prepared = prepare_pt2e(torch.export.export(model, args).module(), q)
    with torch.no_grad():  # calibration: real features through the recurrence
        h = torch.zeros(1, hidden)
        for t in range(min(len(feats), 400)):
            _, h = prepared(torch.from_numpy(feats[t:t + 1]), h)
    converted = convert_pt2e(prepared, fold_quantize=False)
    litert_torch.convert(converted, args, quant_config=QuantConfig(pt2e_quantizer=q)
                         ).export(str(path))


def write_metadata(tflite: Path, feats: np.ndarray, hidden: int, name: str,
                   fe: FrontEnd, extra: dict | None = None) -> dict:
    """NAME.json per docs/MODEL_FORMAT.md, tensor names read from the interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(tflite))
    ins = sorted(it.get_input_details(), key=lambda d: d["name"])
    outs = sorted(it.get_output_details(), key=lambda d: d["name"])
    feat_in = next(d for d in ins if list(d["shape"]) == [1, fe.n_bins])
    state_in = next(d for d in ins if list(d["shape"]) == [1, hidden])
    mask_out = next(d for d in outs if list(d["shape"]) == [1, fe.n_bins])
    state_out = next(d for d in outs if list(d["shape"]) == [1, hidden])
    md = {
        "format": "hushlink-step-model", "format_version": 1, "name": name,
        "version": "0.0.1-test", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "front_end": fe.as_dict(),
        "io": {"features": feat_in["name"], "state_in": [state_in["name"]],
               "mask": mask_out["name"], "state_out": [state_out["name"]]},
        "state_shapes": [[1, hidden]], "quantization": "int8",
        "tflite_sha256": hashlib.sha256(tflite.read_bytes()).hexdigest(),
        "params": 0, "macs_per_hop": 0, "algorithmic_latency_ms": fe.latency_s * 1000,
        "test_vector": None,
        "training": {"data": "tests/stepmodels.py (tiny test model)", "recipe": "IRM MSE",
                     "wall_time_s": 0},
        "metrics": {},
    }
    md.update(extra or {})
    # test vector: the exported model's own masks for a few real frames, states from zero
    from edge.model import StepModel

    tflite.with_suffix(".json").write_text(json.dumps(md, indent=1))
    masks = StepModel(tflite).masks(feats[100:108])
    md["test_vector"] = {"features": feats[100:108].round(5).tolist(),
                         "mask": masks.round(5).tolist(), "atol": 0.05}
    tflite.with_suffix(".json").write_text(json.dumps(md, indent=1))
    return md


def build_test_model(directory: Path, train_steps: int = 300, name: str = "test-int8") -> Path:
    """Build (once per directory; safe across processes) and return ``NAME.tflite``."""
    directory.mkdir(parents=True, exist_ok=True)
    tflite = directory / f"{name}.tflite"
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tflite.is_file() and tflite.with_suffix(".json").is_file():
            return tflite
        import torch

        torch.set_num_threads(1)
        torch.manual_seed(0)
        fe = FrontEnd()
        clean, noisy = training_pairs(120.0)
        sx, ss = stft(noisy, fe), stft(clean, fe)
        feats = log_power(sx, fe)
        masks = ideal_ratio_mask(ss, sx)
        model = _torch_model(fe.n_bins, HIDDEN, feats.mean(0), feats.std(0) + 1e-3)
        train(model, feats, masks, train_steps)
        export_int8(model, feats, tflite, HIDDEN)
        write_metadata(tflite, feats, HIDDEN, name, fe)
    return tflite
