"""Scoring on the speaker-disjoint test split: PESQ-WB, STOI, SI-SDR per system and SNR,
plus spectrogram PNGs (noisy / teacher / student / clean). Used by ``train-denoiser
evaluate`` and by ``benchmarks/denoise.py``.

A *system* is a function (n,) float32 noisy -> (n,) float32 enhanced at 16 kHz.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from edge.dsp import DEFAULT_FRONT_END, apply_mask, istft, log_power, stft
from training.metrics import score, si_sdr
from training.progress import bar

System = Callable[[np.ndarray], np.ndarray]


def mask_system(mask_fn: Callable[[np.ndarray], np.ndarray]) -> System:
    """A system from a function (frames, bins) features -> (frames, bins) masks."""
    def run(x: np.ndarray) -> np.ndarray:
        spec = stft(x, DEFAULT_FRONT_END)
        return istft(apply_mask(spec, mask_fn(log_power(spec))), len(x))
    return run


def teacher_system(teacher) -> System:
    @torch.no_grad()
    def masks(f: np.ndarray) -> np.ndarray:
        return teacher(torch.from_numpy(f[None]))[0].numpy()
    return mask_system(masks)


def torch_student_system(student) -> System:
    @torch.no_grad()
    def masks(f: np.ndarray) -> np.ndarray:
        return student(torch.from_numpy(f[None]))[0].numpy()
    return mask_system(masks)


def tflite_system(path: Path) -> System:
    """The runtime's own streaming path: edge.denoise.Denoiser over edge.model.StepModel."""
    from edge.denoise import Denoiser
    from edge.model import StepModel

    d = Denoiser(StepModel(path, num_threads=1))
    return d.process


def _mixture_of(by_noisy: dict[int, dict], x: np.ndarray) -> dict:
    """The mixture whose ``noisy`` array ``x`` is (by identity: ``run_systems`` hands each
    system the mixture's own array)."""
    try:
        return by_noisy[id(x)]
    except KeyError:
        raise ValueError("called with a signal that is not one of its mixtures") from None


def per_mixture(fn: Callable[[dict], np.ndarray], mixtures: list[dict]) -> System:
    """A system that sees the whole mixture, clean signal included (an oracle):
    ``fn(mixture)``, answered for each mixture's own ``noisy`` array."""
    by_noisy = {id(m["noisy"]): m for m in mixtures}
    return lambda x: fn(_mixture_of(by_noisy, x))


def continuous(system: System, mixtures: list[dict]) -> System:
    """``system`` run once over all ``mixtures`` back to back, as one stream, then cut back
    into one output per mixture: how a device that runs for hours sees them (the state one
    mixture leaves behind meets the next one's noise, level and speaker).

    Like ``per_mixture``, the returned System answers only the mixtures' own ``noisy``
    arrays; the stream runs on the first call.
    """
    by_noisy = {id(m["noisy"]): m for m in mixtures}
    out: dict[int, np.ndarray] = {}

    def run(x: np.ndarray) -> np.ndarray:
        _mixture_of(by_noisy, x)
        if not out:
            y = np.asarray(system(np.concatenate([m["noisy"] for m in mixtures])), np.float32)
            o = 0
            for m in mixtures:
                out[id(m["noisy"])] = y[o:o + len(m["noisy"])]
                o += len(m["noisy"])
        return out[id(x)]
    return run


def run_systems(systems: dict[str, System], mixtures: list[dict], quiet: bool = False,
                keep: int = 0, extended: bool = False) -> tuple[dict, dict]:
    """Scores every system on every mixture. Returns (per-system summary, kept outputs).

    Summary: {system: {"all": {pesq, stoi, si_sdr, si_sdr_i}, "snr": {snr: {...}}}}, plus
    "category" when the mixtures name their noise category; ``extended`` adds ESTOI
    (training.metrics.score). ``keep`` first mixtures' outputs are returned for
    spectrograms.
    """
    rows: dict[str, list[dict]] = {k: [] for k in systems}
    kept: dict[str, list[np.ndarray]] = {k: [] for k in systems}
    with bar("scoring", len(systems) * len(mixtures), quiet) as update:
        for name, fn in systems.items():
            for i, m in enumerate(mixtures):
                y = np.asarray(fn(m["noisy"]), dtype=np.float32)[:len(m["clean"])]
                if len(y) < len(m["clean"]):
                    y = np.pad(y, (0, len(m["clean"]) - len(y)))
                s = score(y, m["clean"], extended)
                s["si_sdr_i"] = s["si_sdr"] - si_sdr(m["noisy"], m["clean"])
                rows[name].append({"snr": m["snr"], "category": m.get("category"), **s})
                if i < keep:
                    kept[name].append(y)
                update(system=name)
    return {k: summarise(v) for k, v in rows.items()}, kept


def summarise(rows: list[dict]) -> dict:
    keys = [k for k in rows[0] if k not in ("snr", "category")] if rows else []

    def mean(rs):
        return {k: round(float(np.nanmean([r[k] for r in rs])), 3) for k in keys}

    snrs = sorted({r["snr"] for r in rows})
    out = {"all": mean(rows), "n": len(rows),
           "snr": {f"{s:+.0f}": mean([r for r in rows if r["snr"] == s]) for s in snrs}}
    cats = sorted({r["category"] for r in rows if r.get("category")})
    if cats:
        out["category"] = {c: mean([r for r in rows if r.get("category") == c]) for c in cats}
    return out


def spectrogram_png(path: Path, panels: dict[str, np.ndarray], title: str = "") -> None:
    """One PNG with one log-power spectrogram per panel (e.g. noisy/teacher/student/clean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.0 * len(panels)), sharex=True)
    for ax, (name, x) in zip(np.atleast_1d(axes), panels.items(), strict=True):
        lp = log_power(stft(x)).T / np.log(10) * 10
        ax.imshow(lp, origin="lower", aspect="auto", vmin=lp.max() - 80, vmax=lp.max(),
                  extent=(0, len(x) / 16000, 0, 8), cmap="magma")
        ax.set_ylabel(f"{name}\nkHz")
    np.atleast_1d(axes)[-1].set_xlabel("s")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)
