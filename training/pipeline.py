"""The recipe as plain functions (the CLI calls these): prepare -> teacher -> student ->
export -> evaluate, each reading and writing files in one work directory:

    WORK/manifest.json      speaker-disjoint split (prepare)
    WORK/teacher.pt         processors + fusion weights, resumable (teacher)
    WORK/students.pt        adaptive + m_ref students, resumable (student)
    WORK/student.pt         the chosen student (student)
    WORK/export/NAME*.tflite/.json                          (export)
    WORK/metrics.json       every stage's metrics, merged
    WORK/eval/              evaluation JSON + spectrogram PNGs (evaluate)
    WORK/runs/DATE-STAGE/   one record per teacher/student run (training/runs.py)
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from training.config import TrainConfig
from training.data import DataError, Mixer, load_manifest, make_manifest, write_json
from training.dist import Dist, init
from training.loader import Runtime
from training.progress import STDERR, bar

ROOT = Path(__file__).resolve().parents[1]


def work_dir(cfg: TrainConfig, work: str | Path | None) -> Path:
    return Path(work) if work else ROOT / "build" / "train" / cfg.name


def setup_torch(cfg: TrainConfig, device: str = "cpu", distributed: bool = False) -> Dist:
    """Threads and, with ``distributed`` under torchrun, the process group. ``threads = 0``
    shares the cores among the ranks of one node (each rank taking them all would
    oversubscribe them)."""
    if device != "cpu" and not torch.cuda.is_available():
        raise DataError(f"--device {device}: no CUDA device available (use --device cpu)")
    d = init(device) if distributed else Dist(device=device)
    torch.set_num_threads(cfg.threads if cfg.threads > 0
                          else max(1, (os.cpu_count() or 1) // d.local_world))
    return d


def update_metrics(work: Path, key: str, value) -> dict:
    p = work / "metrics.json"
    m = json.loads(p.read_text()) if p.is_file() else {}
    m[key] = value
    write_json(p, m)
    return m


def _log(msg: str) -> None:
    STDERR.print(msg)


def prepare(cfg: TrainConfig, work: Path, quiet: bool = False) -> dict:
    with bar("scanning", 1, quiet) as update:
        m = make_manifest(cfg.data, cfg.data_root(), cfg.seed,
                          progress=lambda done, total: None)
        update()
    write_json(work / "manifest.json", m)
    return {"manifest": str(work / "manifest.json"), **m["summary"],
            "skipped_files": m["skipped"][:20]}


def _quiet(msg: str) -> None:
    pass


def _mixers(cfg: TrainConfig, work: Path, log=_log) -> tuple[Mixer, Mixer]:
    m = load_manifest(work / "manifest.json")
    t0 = time.monotonic()
    train, val = Mixer(m, "train", cfg.data), Mixer(m, "val", cfg.data)
    skipped = train.skipped + val.skipped
    log(f"loaded {len(train.speech)} train / {len(val.speech)} val utterances, "
         f"{len(train.noise)} noises in {time.monotonic() - t0:.1f} s"
         + (f"; skipped {len(skipped)} unreadable file(s): "
            f"{', '.join(s['file'] for s in skipped[:5])}" if skipped else ""))
    return train, val


def teacher(cfg: TrainConfig, work: Path, quiet: bool = False, device: str = "cpu",
            rt: Runtime | None = None) -> dict:
    """Train the teacher; under torchrun (``rt.dist``) only rank 0 logs and writes."""
    from training.teacher import train_teacher

    rt = rt or Runtime(Dist(device=device))
    main = rt.dist.main
    log = _log if main else _quiet
    train, val = _mixers(cfg, work, log)
    metrics = train_teacher(cfg, train, val, work / "teacher.pt", quiet or not main, log,
                            rt.dist.device, rt)
    if main:
        update_metrics(work, "teacher", metrics)
    return metrics


def student(cfg: TrainConfig, work: Path, quiet: bool = False, use_teacher: bool = True,
            device: str = "cpu", rt: Runtime | None = None) -> dict:
    """Distil the students; under torchrun only rank 0 logs, writes and validates."""
    from training.distill import train_students
    from training.student import save_student
    from training.teacher import load_teacher

    rt = rt or Runtime(Dist(device=device))
    main = rt.dist.main
    log = _log if main else _quiet
    train, val = _mixers(cfg, work, log)
    t = load_teacher(work / "teacher.pt", cfg) if use_teacher else None
    res = train_students(cfg, train, val, t, work / "students.pt", quiet or not main, log,
                         rt.dist.device, rt)
    students, metrics = res["students"], res["metrics"]
    if not main:
        return metrics
    chosen = "adaptive" if "adaptive" in students else "mref"
    for n, s in students.items():
        save_student(work / f"student_{n}.pt", s, {"metrics": metrics[n]})
    save_student(work / "student.pt", students[chosen], {"metrics": metrics[chosen],
                                                         "loss": chosen})
    metrics["chosen"] = chosen
    update_metrics(work, "student", metrics)
    return metrics


def calibration_features(cfg: TrainConfig, work: Path, frames: int
                         ) -> tuple[list[np.ndarray], np.ndarray]:
    """Real features: calibration sequences from training mixtures, a held-out val sequence."""
    m = load_manifest(work / "manifest.json")
    from dataclasses import replace

    dcfg = replace(cfg.data, max_files_per_speaker=2)
    train, val = Mixer(m, "train", dcfg), Mixer(m, "val", dcfg)
    per = int(cfg.data.segment_s * 100)
    n = max(1, frames // per)
    calib = list(train.batch(np.random.default_rng([cfg.seed, 4]), n)["feats"])
    verify = val.batch(np.random.default_rng([cfg.seed, 5]), 1)["feats"][0]
    return calib, verify


def export(cfg: TrainConfig, work: Path, out: Path | None = None, name: str | None = None,
           quiet: bool = False) -> dict:
    from training.export import export_student
    from training.student import load_student

    s, ck = load_student(work / "student.pt")
    if cfg.export.mask_power is not None:  # the post-filter chosen after training
        s.mask_power = cfg.export.mask_power
    if cfg.export.out_floor is not None:
        s.out_floor = cfg.export.out_floor
    calib, verify = calibration_features(cfg, work, cfg.export.calibration_frames)
    metrics = json.loads((work / "metrics.json").read_text()) if (
        work / "metrics.json").is_file() else {}
    training = {"data": _data_summary(work), "recipe": f"training/configs/{cfg.name}.toml",
                "loss": ck.get("loss", "adaptive"), "seed": cfg.seed,
                "wall_time_s": round(metrics.get("teacher", {}).get("wall_time_s", 0)
                                     + metrics.get("student", {}).get("wall_time_s", 0), 1)}
    keep = {k: metrics[k] for k in ("teacher", "student", "evaluate") if k in metrics}
    slim = {"student_val": keep.get("student", {}).get(ck.get("loss", "adaptive")),
            "teacher_weights": keep.get("teacher", {}).get("weights")}
    out = out or work / "export"
    name = name or cfg.export.name
    with bar("export int8 + float TFLite", 1, quiet) as update:
        report = export_student(s, calib, verify, out, name, cfg.export.version, training,
                                {k: v for k, v in slim.items() if v is not None})
        update()
    res = {"dir": str(out), "name": name, **report}
    update_metrics(work, "export", res)
    return res


def _data_summary(work: Path) -> str:
    m = load_manifest(work / "manifest.json")
    s = m["summary"]
    tr = s["speech"]["train"]
    return (f"{tr['seconds'] / 3600:.2f} h wideband speech from {tr['speakers']} training "
            f"speakers, {s['noise']['train']['seconds'] / 60:.0f} min noise, {s['rir']} RIRs "
            f"(hushlink shared corpus, speaker-disjoint split seed {m['seed']})")


def evaluate(cfg: TrainConfig, work: Path, quiet: bool = False, utterances: int | None = None,
             model: Path | None = None, spectrograms: int = 3) -> dict:
    """Test-split scores of noisy, teacher, float students and the int8 TFLite student,
    per SNR; writes WORK/eval/metrics.json and spectrogram PNGs."""
    from training.data import eval_mixtures
    from training.evaluate import (
        run_systems,
        spectrogram_png,
        teacher_system,
        tflite_system,
        torch_student_system,
    )
    from training.student import load_student
    from training.teacher import load_teacher

    m = load_manifest(work / "manifest.json")
    mixtures = eval_mixtures(m, utterances or cfg.eval.utterances, cfg.eval.snrs)
    if not mixtures:
        raise DataError("the test split has no usable utterances (>= 1.5 s)")
    systems = {"noisy": lambda x: x}
    if (work / "teacher.pt").is_file():
        systems["teacher"] = teacher_system(load_teacher(work / "teacher.pt", cfg))
    for n in ("adaptive", "mref", "core"):
        if (work / f"student_{n}.pt").is_file():
            systems[f"student_{n}_float"] = torch_student_system(
                load_student(work / f"student_{n}.pt")[0])
    model = model or work / "export" / f"{cfg.export.name}.tflite"
    if model.is_file():
        systems["student_int8"] = tflite_system(model)
    summary, kept = run_systems(systems, mixtures, quiet, keep=spectrograms)
    out = work / "eval"
    pngs = []
    student_key = next((k for k in ("student_int8", "student_adaptive_float",
                                    "student_mref_float") if k in kept), None)
    for i in range(min(spectrograms, len(mixtures))):
        panels = {"noisy": mixtures[i]["noisy"]}
        if "teacher" in kept:
            panels["teacher"] = kept["teacher"][i]
        if student_key:
            panels["student"] = kept[student_key][i]
        panels["clean"] = mixtures[i]["clean"]
        png = out / f"spectrogram_{mixtures[i]['id']}.png"
        spectrogram_png(png, panels, mixtures[i]["id"])
        pngs.append(str(png))
    res = {"mixtures": len(mixtures), "snrs": list(cfg.eval.snrs), "systems": summary,
           "spectrograms": pngs}
    write_json(out / "metrics.json", res)
    update_metrics(work, "evaluate", {k: v["all"] for k, v in summary.items()})
    return res
