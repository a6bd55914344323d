"""What the shipped student runs in int8 and in float32, and what full int8 would cost.

Lists the TFLite graph's operators (before delegation) with their tensor types, then runs the
graph in numpy, operator by operator, with every int8 tensor rounded to its own scale and zero
point (an emulation of the int8 kernels, checked against the interpreter), once as shipped
and once with the float32 islands (the GRU gate pre-activation sums, sigmoid/tanh, 1 − z, the
post-filter) quantised to int8 too, their scales calibrated on the same features (min/max).
Both are scored on real mixtures: mask error against the shipped model, SI-SDR and PESQ-WB.

Usage: python benchmarks/int8_islands.py [--mixtures 8] [--seconds 6]
Writes benchmarks/results/int8_islands.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from edge.dsp import DEFAULT_FRONT_END as FE  # noqa: E402
from edge.dsp import apply_mask, istft, log_power, stft  # noqa: E402
from edge.model import StepModel, default_model_path, load_interpreter  # noqa: E402

OUT = ROOT / "benchmarks" / "results"
SHARED = Path(os.environ.get("HUSHLINK_SHARED", ROOT.parent / "shared")) / "data"


def graph(path: Path):
    """(ops, tensors, constants): the operators before delegation and their tensors."""
    it = load_interpreter()(model_path=str(path), experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    td = {d["index"]: d for d in it.get_tensor_details()}
    ops = [o for o in it._get_ops_details() if o["op_name"] != "DELEGATE"]
    const = {}
    for o in ops:
        for i in o["inputs"]:
            if i >= 0 and i not in const:
                with contextlib.suppress(ValueError):
                    const[i] = np.array(it.get_tensor(i))
    return ops, td, const


def _q(d):
    q = d["quantization_parameters"]
    return np.asarray(q["scales"], np.float64), np.asarray(q["zero_points"], np.float64)


def deq(v, d):
    s, z = _q(d)
    if np.dtype(d["dtype"]) == np.float32 or not len(s):
        return v.astype(np.float64)
    axis = d["quantization_parameters"].get("quantized_dimension", 0)
    if len(s) > 1:
        shape = [1] * v.ndim
        shape[axis] = -1
        s, z = s.reshape(shape), z.reshape(shape)
    return (v.astype(np.float64) - z) * s


def requant(x, d):
    if np.dtype(d["dtype"]) != np.int8:
        return x
    s, z = _q(d)
    return (np.clip(np.round(x / s[0]) + z[0], -128, 127) - z[0]) * s[0]


def fake_int8(x, lo, hi):
    """Round to an int8 grid spanning [lo, hi] (what an int8 tensor with those calibrated
    bounds would hold)."""
    s = max(hi - lo, 1e-9) / 255.0
    z = np.round(-128 - lo / s)
    return (np.clip(np.round(x / s) + z, -128, 127) - z) * s


class Emulator:
    """The step graph in numpy on dequantised values. ``islands``: {tensor index: (lo, hi)}
    of float32 outputs to quantise too (full int8); ``record``: collect their ranges."""

    def __init__(self, path: Path):
        self.ops, self.td, self.const = graph(path)
        ins = {d["name"]: d["index"] for d in load_interpreter()(
            model_path=str(path)).get_input_details()}
        self.feat_i = min(ins.values())
        self.state_i = max(ins.values())
        self.float_outs = [o["outputs"][0] for o in self.ops
                           if o["op_name"] not in ("DEQUANTIZE", "QUANTIZE")
                           and np.dtype(self.td[o["outputs"][0]]["dtype"]) == np.float32]
        self.constants = {i: deq(c, self.td[i]) for i, c in self.const.items()
                          if i not in (self.feat_i, self.state_i)}
        self.islands: dict[int, tuple[float, float]] = {}
        self.ranges: dict[int, list[float]] = {}
        self.record = False

    def step(self, feat: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = dict(self.constants)
        v[self.feat_i] = feat.reshape(1, -1).astype(np.float64)
        v[self.state_i] = state.reshape(1, -1)
        for o in self.ops:
            name, a = o["op_name"], [v.get(i) for i in o["inputs"]]
            out = o["outputs"][0]
            if name in ("QUANTIZE", "DEQUANTIZE"):
                r = a[0]
            elif name == "SUB":
                r = a[0] - a[1]
            elif name == "ADD":
                r = a[0] + a[1]
            elif name == "MUL":
                r = a[0] * a[1]
            elif name == "FULLY_CONNECTED":
                r = a[0] @ a[1].T + a[2]
            elif name == "SLICE":
                b, sz = (self.const[i].astype(int) for i in o["inputs"][1:3])
                r = a[0][:, b[1]:b[1] + sz[1]]
            elif name == "LOGISTIC":
                r = 1 / (1 + np.exp(-a[0]))
            elif name == "TANH":
                r = np.tanh(a[0])
            elif name == "POW":
                r = a[0] ** a[1]
            else:
                raise ValueError(f"no emulation of {name}")
            r = requant(r, self.td[out])
            if out in self.float_outs:
                if self.record:
                    lo, hi = self.ranges.setdefault(out, [np.inf, -np.inf])
                    self.ranges[out] = [min(lo, float(r.min())), max(hi, float(r.max()))]
                if out in self.islands:
                    r = fake_int8(r, *self.islands[out])
            v[out] = r
        mask_i = self.ops[-1]["outputs"][0]
        new_state = [o["outputs"][0] for o in self.ops if o["op_name"] == "ADD"
                     and np.dtype(self.td[o["outputs"][0]]["dtype"]) == np.int8][-1]
        return v[mask_i][0], v[new_state][0]

    def masks(self, feats: np.ndarray) -> np.ndarray:
        h = np.zeros(self.td[self.state_i]["shape"][1])
        out = []
        for f in feats:
            m, h = self.step(f, h)
            out.append(m)
        return np.array(out, dtype=np.float32)


def op_table(em: Emulator) -> list[dict]:
    rows = []
    for o in em.ops:
        if o["op_name"] in ("QUANTIZE", "DEQUANTIZE", "SLICE"):
            continue
        types = [np.dtype(em.td[i]["dtype"]).name for i in o["inputs"] if i >= 0]
        rows.append({"op": o["op_name"], "inputs": types,
                     "output": np.dtype(em.td[o["outputs"][0]]["dtype"]).name})
    return rows


def sisdr(ref, est) -> float:
    ref, est = np.asarray(ref, np.float64), np.asarray(est, np.float64)
    a = np.dot(est, ref) / np.dot(ref, ref)
    return float(10 * np.log10(np.sum((a * ref) ** 2) / np.sum((est - a * ref) ** 2)))


def mixtures(n: int, seconds: float):
    from stepmodels import mix

    from edge.audio import load_audio

    speakers = sorted(p for p in (SHARED / "speech" / "vctk").iterdir() if p.is_dir())
    noises = sorted((SHARED / "noise" / "freesound_cc0").glob("*.flac"))
    rng = np.random.default_rng(0)
    for k in range(n):
        files = sorted(speakers[k % len(speakers)].glob("*.flac"))
        clean = np.concatenate([load_audio(f).samples for f in files[:6]])
        clean = clean[:int(seconds * 16_000)]
        noise = load_audio(noises[k % len(noises)]).samples
        yield clean, mix(clean, noise, float(rng.choice([0.0, 5.0, 10.0])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mixtures", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=6.0)
    a = ap.parse_args()
    path = default_model_path()
    model, em = StepModel(path), Emulator(path)
    data = list(mixtures(a.mixtures, a.seconds))
    feats = [log_power(stft(noisy, FE), FE) for _, noisy in data]
    em.record = True  # calibrate the islands' ranges on the first half, as an export would
    for f in feats[:max(1, len(feats) // 2)]:
        em.masks(f)
    em.record = False
    ranges = dict(em.ranges)
    rows = {"interpreter": [], "emulated": [], "full_int8": []}
    for (clean, noisy), f in zip(data, feats, strict=True):
        spec = stft(noisy, FE)
        em.islands = {}
        m_emu = em.masks(f)
        em.islands = ranges
        m_full = em.masks(f)
        m_ref = model.masks(f)
        for key, m in (("interpreter", m_ref), ("emulated", m_emu), ("full_int8", m_full)):
            y = istft(apply_mask(spec, m), len(noisy), FE)
            r = {"sisdr_gain_db": sisdr(clean, y) - sisdr(clean, noisy),
                 "mask_err_mean": float(np.mean(np.abs(m - m_ref))),
                 "mask_err_max": float(np.max(np.abs(m - m_ref)))}
            try:
                from pesq import pesq

                r["pesq"] = float(pesq(16_000, clean, y, "wb"))
            except ImportError:
                pass
            rows[key].append(r)
    summary = {k: {m: round(float(np.mean([r[m] for r in v])), 4) for m in v[0]}
               for k, v in rows.items()}
    res = {"model": path.name, "mixtures": a.mixtures, "seconds": a.seconds,
           "ops": op_table(em), "float_islands": {str(k): [round(x, 4) for x in v]
                                                  for k, v in ranges.items()},
           "summary": summary}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "int8_islands.json").write_text(json.dumps(res, indent=1))
    lines = [f"# int8 and float32 in `{path.name}`\n",
             "| operator | inputs | output |", "|---|---|---|"]
    lines += [f"| {r['op']} | {', '.join(r['inputs'])} | {r['output']} |" for r in res["ops"]]
    lines += ["", f"{a.mixtures} mixtures of VCTK speech in freesound noise (0/5/10 dB), "
              f"{a.seconds:g} s each:", "",
              "| run | SI-SDR gain dB | PESQ-WB | mask error vs interpreter mean / max |",
              "|---|---|---|---|"]
    for k, v in summary.items():
        lines.append(f"| {k} | {v['sisdr_gain_db']:+.2f} | {v.get('pesq', float('nan')):.3f} | "
                     f"{v['mask_err_mean']:.4f} / {v['mask_err_max']:.3f} |")
    (OUT / "int8_islands.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
