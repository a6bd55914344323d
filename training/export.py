"""Export the student to a TFLite step model (docs/MODEL_FORMAT.md) and verify it.

int8 weights and activations by PT2E post-training quantisation (litert-torch's
``PT2EQuantizer``, symmetric per-channel weights, static activations) calibrated on real
features run through the recurrence; a float32 TFLite model is exported alongside for the
comparison. After export both are loaded with the runtime's own loader (``edge.model``) and
compared with the PyTorch student on the same features, states carried across hops.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edge.dsp import DEFAULT_FRONT_END, FrontEnd
from edge.errors import HushlinkError
from training.student import Student, step_module


class ExportError(HushlinkError):
    """The converter failed or the exported model does not match PyTorch."""


def _convert(step: torch.nn.Module, calib: list[np.ndarray], path: Path, hidden: int,
             int8: bool) -> None:
    import litert_torch

    args = (torch.zeros(1, step.inp.in_features), torch.zeros(1, hidden))
    if not int8:
        litert_torch.convert(step, args).export(str(path))
        return
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    q = PT2EQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    prepared = prepare_pt2e(torch.export.export(step, args).module(), q)
    with torch.no_grad():  # calibration: real feature sequences through the recurrence
        for seq in calib:
            h = torch.zeros(1, hidden)
            for f in seq:
                _, h = prepared(torch.from_numpy(f[None]), h)
    converted = convert_pt2e(prepared, fold_quantize=False)
    litert_torch.convert(converted, args, quant_config=QuantConfig(pt2e_quantizer=q)
                         ).export(str(path))


def _io_names(path: Path, n_bins: int, hidden: int) -> dict:
    """Tensor names from the interpreter, identified by shape (features/mask vs state)."""
    from edge.model import load_interpreter

    it = load_interpreter()(model_path=str(path))
    ins, outs = it.get_input_details(), it.get_output_details()

    def pick(ds, shape):
        hits = [d["name"] for d in ds if list(d["shape"]) == shape]
        if len(hits) != 1:
            raise ExportError(f"{path}: expected one tensor of shape {shape}, found {hits}")
        return hits[0]

    return {"features": pick(ins, [1, n_bins]), "state_in": [pick(ins, [1, hidden])],
            "mask": pick(outs, [1, n_bins]), "state_out": [pick(outs, [1, hidden])]}


@torch.no_grad()
def torch_masks(student: Student, feats: np.ndarray) -> np.ndarray:
    """Reference masks of the PyTorch step form, (frames, bins), state from zero."""
    step = step_module(student)
    h = torch.zeros(1, student.hidden)
    out = []
    for f in feats:
        m, h = step(torch.from_numpy(f[None]), h)
        out.append(m[0].numpy())
    return np.stack(out)


def _metadata(path: Path, student: Student, io: dict, quant: str, name: str, version: str,
              fe: FrontEnd, training: dict, metrics: dict) -> dict:
    return {
        "format": "hushlink-step-model", "format_version": 1, "name": name, "version": version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "front_end": fe.as_dict(), "io": io, "state_shapes": [[1, student.hidden]],
        "quantization": quant, "tflite_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "params": student.n_params(), "macs_per_hop": student.macs_per_hop(),
        "algorithmic_latency_ms": fe.latency_s * 1000.0, "test_vector": None,
        "training": training, "metrics": metrics,
        "architecture": {"type": "gru-mask", **student.config()},
    }


def export_student(student: Student, calib: list[np.ndarray], verify: np.ndarray,
                   out_dir: Path, name: str = "default", version: str = "1.0.0",
                   training: dict | None = None, metrics: dict | None = None,
                   fe: FrontEnd = DEFAULT_FRONT_END, float_too: bool = True) -> dict:
    """Write ``out_dir/NAME.tflite`` (int8) + ``NAME.json`` (and ``NAME-float.*``).

    ``calib``: list of (frames, bins) real feature sequences for calibration; ``verify``:
    (frames, bins) features (held out) for the comparison and the test vector.
    Returns the verification report (max/mean abs mask error vs PyTorch per model).
    Files appear atomically: all are written in a temp dir and renamed into place.
    """
    from edge.model import StepModel

    student = student.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    ref = torch_masks(student, verify)
    report: dict = {}
    variants = [("int8", name)] + ([("float32", f"{name}-float")] if float_too else [])
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as tmp:
        for quant, stem in variants:
            p = Path(tmp) / f"{stem}.tflite"
            with contextlib.redirect_stdout(sys.stderr):  # converter logs: keep stdout clean
                _convert(step_module(student), calib, p, student.hidden, quant == "int8")
            io = _io_names(p, student.n_bins, student.hidden)
            md = _metadata(p, student, io, quant, stem, version, fe, training or {},
                           metrics or {})
            p.with_suffix(".json").write_text(json.dumps(md, indent=1))
            got = StepModel(p).masks(verify)
            err = np.abs(got - ref)
            report[quant] = {"max_abs_err": round(float(err.max()), 5),
                             "mean_abs_err": round(float(err.mean()), 5),
                             "bytes": p.stat().st_size}
            tv = verify[:8]
            md["test_vector"] = {"features": tv.round(4).tolist(),
                                 "mask": StepModel(p).masks(tv.round(4)).round(5).tolist(),
                                 "atol": 0.05 if quant == "int8" else 1e-3}
            md["metrics"] = {**md["metrics"], "export_check_vs_pytorch": report[quant]}
            p.with_suffix(".json").write_text(json.dumps(md, indent=1))
        tol = {"float32": 1e-3, "int8": 0.25}
        for quant, r in report.items():
            if r["max_abs_err"] > tol[quant]:
                raise ExportError(f"{quant} TFLite masks differ from PyTorch by up to "
                                  f"{r['max_abs_err']:.4f} (> {tol[quant]})")
        for _, stem in variants:
            for ext in (".tflite", ".json"):
                src = Path(tmp) / f"{stem}{ext}"
                os.replace(src, out_dir / src.name)
    for _, stem in variants:  # the runtime's own checks on the final files
        StepModel(out_dir / f"{stem}.tflite").check_test_vector()
    return report


def copy_model(src: Path, dst_dir: Path, name: str) -> Path:
    """Copy NAME.tflite + NAME.json (metadata ``name`` updated, sha unchanged)."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    md = json.loads(src.with_suffix(".json").read_text())
    md["name"] = name
    t = dst_dir / f"{name}.tflite"
    shutil.copyfile(src, t.with_suffix(".tflite.tmp"))
    os.replace(t.with_suffix(".tflite.tmp"), t)
    j = t.with_suffix(".json")
    j.with_suffix(".json.tmp").write_text(json.dumps(md, indent=1))
    os.replace(j.with_suffix(".json.tmp"), j)
    return t
