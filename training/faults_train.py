"""Train, export and evaluate the fault classifier (SPEC §8).

log-mel + time-domain frame features (edge.faults.features, on edge.dsp's STFT framing) →
2 bidirectional GRU layers → FC →
per-frame multi-label fault probabilities, plus a clip-level head (FC over the time-mean of
the GRU output). Trained on 1 s blocks of synthetic faulty clips (training/faults_synth.py),
exported to TFLite int8 (litert-torch PT2E, the recipe of training/export.py) with the GRUs
unrolled over the fixed block so the converter sees plain matmuls, then evaluated through
the runtime's own int8 path (edge.faults.detect) on the held-out speakers and noises.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge.faults import FAULT_TYPES
from edge.faults.detect import FORMAT, TFLiteFaultModel, frame_probs
from edge.faults.events import EventConfig, frames_to_events
from edge.faults.features import N_MELS, N_TIME, features, n_features
from training.dist import SINGLE, Dist, sync_scalar, wrap
from training.faults_synth import RATE, Clip, Synth, frame_labels, label_spans

K = len(FAULT_TYPES)
SHIPPED = Path(__file__).resolve().parents[1] / "edge" / "models" / "faults.tflite"


@dataclass(frozen=True)
class FaultTrainConfig:
    hidden: int = 32
    n_mels: int = N_MELS
    time_features: int = N_TIME  # 0: log-mel + DC only (the first shipped model)
    block: int = 64  # frames per classifier block (0.64 s)
    step: int = 48
    train_clips: int = 1200
    test_clips: int = 200
    clip_seconds: float = 4.0
    batch: int = 128
    lr: float = 3e-3
    minutes: float = 8.0
    max_steps: int = 100_000
    seed: int = 0
    threads: int = 1

    @classmethod
    def load(cls, path: str | os.PathLike | None) -> FaultTrainConfig:
        if not path:
            return cls()
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib

        from edge.errors import HushlinkError
        try:
            d = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise HushlinkError(f"{path}: cannot read the config ({e})") from None
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise HushlinkError(f"{path}: unknown key(s) {sorted(unknown)}")
        return cls(**d)


class FaultNet(nn.Module):
    """(B, T, F) log-mel -> ((B, T, K) frame logits, (B, K) clip logits)."""

    def __init__(self, n_in: int, hidden: int, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        self.hidden = hidden
        self.gru = nn.GRU(n_in, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(2 * hidden, K)
        self.clip_fc = nn.Linear(2 * hidden, K)

    def forward(self, x):
        h, _ = self.gru((x - self.mean) / self.std)
        return self.fc(h), self.clip_fc(h.mean(dim=1))


class UnrolledFaultNet(nn.Module):
    """The same network with the GRUs written out over a fixed block, for the converter.

    Both directions of a layer advance together as one cell with block-diagonal weights
    (state ``[h_fwd, h_bwd]``, input ``[x_t, x_(T-1-t)]``), which halves the number of ops
    the int8 interpreter runs per frame. Input (1, T, F) features; outputs (1, T, K) frame
    probabilities and (1, K) clip probabilities.
    """

    def __init__(self, net: FaultNet, block: int):
        super().__init__()
        self.net, self.block, self.H = net, block, net.hidden
        g, H = net.gru, net.hidden
        for layer in range(2):
            f, b = f"_l{layer}", f"_l{layer}_reverse"
            w_ih = [getattr(g, "weight_ih" + f).detach(), getattr(g, "weight_ih" + b).detach()]
            w_hh = [getattr(g, "weight_hh" + f).detach(), getattr(g, "weight_hh" + b).detach()]
            # gate-major layout [r_f, r_b, z_f, z_b, n_f, n_b] so each gate is one slice
            wi = torch.zeros(6 * H, 2 * w_ih[0].shape[1])
            wh = torch.zeros(6 * H, 2 * H)
            bi, bh = torch.zeros(6 * H), torch.zeros(6 * H)
            for d in range(2):
                for gate in range(3):
                    rows = slice((2 * gate + d) * H, (2 * gate + d + 1) * H)
                    src = slice(gate * H, (gate + 1) * H)
                    n_in = w_ih[d].shape[1]
                    wi[rows, d * n_in:(d + 1) * n_in] = w_ih[d][src]
                    wh[rows, d * H:(d + 1) * H] = w_hh[d][src]
                    bi[rows] = getattr(g, "bias_ih" + (f, b)[d]).detach()[src]
                    bh[rows] = getattr(g, "bias_hh" + (f, b)[d]).detach()[src]
            self.register_buffer(f"wi{layer}", wi.T.contiguous())
            self.register_buffer(f"wh{layer}", wh.T.contiguous())
            self.register_buffer(f"bi{layer}", bi)
            self.register_buffer(f"bh{layer}", bh)

    def _layer(self, x, layer: int):
        H2, T = 2 * self.H, self.block
        xx = torch.cat([x, torch.flip(x, dims=[0])], dim=1)  # (T, 2F): [x_t, x_(T-1-t)]
        gi = xx @ getattr(self, f"wi{layer}") + getattr(self, f"bi{layer}")
        wh, bh = getattr(self, f"wh{layer}"), getattr(self, f"bh{layer}")
        h = torch.zeros(1, H2)
        outs = []
        for t in range(T):
            gh = h @ wh + bh
            rz = torch.sigmoid(gi[t:t + 1, :2 * H2] + gh[:, :2 * H2])
            r, z = rz[:, :H2], rz[:, H2:]
            n = torch.tanh(gi[t:t + 1, 2 * H2:] + r * gh[:, 2 * H2:])
            h = n + z * (h - n)
            outs.append(h)
        hs = torch.cat(outs, dim=0)  # (T, 2H): row t = [h_fwd(t), h_bwd(T-1-t)]
        return torch.cat([hs[:, :self.H], torch.flip(hs[:, self.H:], dims=[0])], dim=1)

    def forward(self, x):
        y = ((x - self.net.mean) / self.net.std)[0]
        y = self._layer(self._layer(y, 0), 1)
        frames = torch.sigmoid(self.net.fc(y))[None]
        clip = torch.sigmoid(self.net.clip_fc(y.mean(dim=0, keepdim=True)))
        return frames, clip


# ---------------------------------------------------------------------------------- data
def make_set(split: str, n: int, seed0: int, cfg: FaultTrainConfig, progress=None,
             d: Dist = SINGLE) -> tuple[list[Clip], np.ndarray, np.ndarray]:
    """n clips -> (clips, (n, frames, F) features, (n, frames, K) labels); under torchrun
    each rank makes only its share (clips rank, rank + world, ...)."""
    synth = Synth(split, cfg.clip_seconds)
    clips, X, Y = [], [], []
    for i in range(d.rank, n, d.world):
        c = synth.clip(seed0 + i)
        f = features(c.audio, cfg.n_mels, cfg.time_features)
        clips.append(c)
        X.append(f)
        Y.append(frame_labels(c.faults, len(f)))
        if progress:
            progress(i + 1, n)
    return clips, np.stack(X), np.stack(Y)


def train(cfg: FaultTrainConfig, X: np.ndarray, Y: np.ndarray, log=print, d: Dist = SINGLE
          ) -> FaultNet:
    """Blocks sampled from (X, Y), Adam with a cosine decay over the time budget. Under
    torchrun each rank samples its own shard with its own seed, DDP averages the gradients,
    and rank 0's clock decides the schedule and the stop for all (ranks must take the same
    number of steps)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed if d.world == 1 else [cfg.seed, d.rank])
    flat = X.reshape(-1, X.shape[-1])
    net = FaultNet(X.shape[-1], cfg.hidden, flat.mean(0), flat.std(0) + 1e-3)
    model = wrap(net, "forward", d)  # DDP broadcasts rank 0's normalisation and weights
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched_total = cfg.minutes * 60
    bce = nn.BCEWithLogitsLoss()
    t0, step = time.time(), 0
    n, T = X.shape[0], X.shape[1]
    while True:
        frac = sync_scalar((time.time() - t0) / sched_total, d)
        if step >= cfg.max_steps or frac >= 1:
            break
        idx = rng.integers(0, n, cfg.batch)
        off = rng.integers(0, T - cfg.block + 1, cfg.batch)
        xb = np.stack([X[i, o:o + cfg.block] for i, o in zip(idx, off, strict=True)])
        yb = np.stack([Y[i, o:o + cfg.block] for i, o in zip(idx, off, strict=True)])
        for g in opt.param_groups:  # cosine decay over the time budget
            g["lr"] = cfg.lr * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(frac, 1.0))))
        fl, cl = model(torch.from_numpy(xb))
        yt = torch.from_numpy(yb)
        loss = bce(fl, yt) + 0.3 * bce(cl, yt.amax(dim=1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 200 == 0:
            log(f"step {step} loss {loss.item():.4f} ({time.time() - t0:.0f} s)")
    log(f"trained {step} steps in {time.time() - t0:.0f} s")
    return net.eval()


# -------------------------------------------------------------------------------- export
def export(net: FaultNet, calib: np.ndarray, out: Path, cfg: FaultTrainConfig,
           metrics: dict | None = None, training: dict | None = None) -> Path:
    """Write ``out`` (.tflite, int8) and its .json atomically; return the .tflite path."""
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edge.model import load_interpreter

    m = UnrolledFaultNet(net, cfg.block).eval()
    args = (torch.zeros(1, cfg.block, calib.shape[-1]),)
    q = PT2EQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    prepared = prepare_pt2e(torch.export.export(m, args).module(), q)
    with torch.no_grad():
        for b in calib:
            prepared(torch.from_numpy(b[None]))
    converted = convert_pt2e(prepared, fold_quantize=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
        p = Path(tmp) / out.name
        litert_torch.convert(converted, args, quant_config=QuantConfig(pt2e_quantizer=q)
                             ).export(str(p))
        it = load_interpreter()(model_path=str(p))
        ins, outs = it.get_input_details(), it.get_output_details()
        fr = [d["name"] for d in outs if len(d["shape"]) == 3]
        cl = [d["name"] for d in outs if len(d["shape"]) == 2]
        md = {"format": FORMAT, "format_version": 1, "name": out.stem,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "kinds": list(FAULT_TYPES), "block": cfg.block, "step": cfg.step,
              "n_mels": cfg.n_mels, "time_features": cfg.time_features,
              "quantization": "int8",
              "io": {"features": ins[0]["name"], "frames": fr[0], "clip": cl[0]},
              "architecture": {"type": "bigru2-fc", "hidden": cfg.hidden,
                               "params": sum(p.numel() for p in net.parameters())},
              "tflite_sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
              "training": training or {}, "metrics": metrics or {}}
        p.with_suffix(".json").write_text(json.dumps(md, indent=1))
        os.replace(p, out)
        os.replace(p.with_suffix(".json"), out.with_suffix(".json"))
    return out


def set_metrics(path: Path, metrics: dict) -> None:
    j = path.with_suffix(".json")
    md = json.loads(j.read_text())
    md["metrics"] = metrics
    tmp = j.with_suffix(".json.part")
    tmp.write_text(json.dumps(md, indent=1))
    os.replace(tmp, j)


def torch_block_model(net: FaultNet):
    @torch.no_grad()
    def run(feats: np.ndarray):
        fl, cl = net(torch.from_numpy(feats[None]))
        return torch.sigmoid(fl)[0].numpy(), torch.sigmoid(cl)[0].numpy()
    return run


# ------------------------------------------------------------------------------ evaluation
def _prf(tp, fp, fn):
    p = tp / max(tp + fp, 1)
    r = tp / max(tp + fn, 1)
    return p, r, 2 * p * r / max(p + r, 1e-9)


def match_events(events, spans: list[tuple[str, float, float]], tol_s: float = 0.05) -> dict:
    """Events against labelled spans (kind, start s, end s), per kind: (spans hit, spans
    missed, events that hit no span, onset errors, offset errors).

    A span is hit by an event of its kind overlapping it (±``tol_s``); one event may cover
    several spans (clipped bursts a short pause apart) and its onset/offset errors are taken
    against the first/last span it covers.
    """
    out = {k: [0, 0, 0, [], []] for k in FAULT_TYPES}

    def over(ev, s, e):
        return ev.start_s < e + tol_s and ev.end_s > s - tol_s

    for kind, s, e in spans:
        out[kind][0 if any(ev.kind == kind and over(ev, s, e) for ev in events) else 1] += 1
    for ev in events:
        cov = [(s, e) for kind, s, e in spans if kind == ev.kind and over(ev, s, e)]
        if not cov:
            out[ev.kind][2] += 1
            continue
        out[ev.kind][3].append(abs(ev.start_s - min(s for s, _ in cov)))
        out[ev.kind][4].append(abs(ev.end_s - max(e for _, e in cov)))
    return {k: tuple(v) for k, v in out.items()}


def evaluate(model, clips: list[Clip], cfg: FaultTrainConfig,
             ev_cfg: EventConfig = EventConfig()) -> dict:
    """Frame P/R/F1 per class, accuracy, confusion matrix, event onset/offset errors."""
    tp, fp, fn = np.zeros(K), np.zeros(K), np.zeros(K)
    conf = np.zeros((K + 1, K + 1), dtype=int)  # rows truth, cols prediction; last = clean
    exact, total = 0, 0
    onset, offset, ev_tp, ev_fn, ev_fp = {k: [] for k in FAULT_TYPES}, \
        {k: [] for k in FAULT_TYPES}, np.zeros(K), np.zeros(K), np.zeros(K)
    for c in clips:
        probs, _ = frame_probs(c.audio, model, cfg.block, cfg.step, K, cfg.n_mels,
                               cfg.time_features)
        y = frame_labels(c.faults, len(probs))
        pred = probs >= 0.5
        tru = y > 0.5
        tp += (pred & tru).sum(0)
        fp += (pred & ~tru).sum(0)
        fn += (~pred & tru).sum(0)
        exact += int((pred == tru).all(1).sum())
        total += len(y)
        single = tru.sum(1) <= 1
        ti = np.where(tru.any(1), tru.argmax(1), K)[single]
        pi = np.where(probs.max(1) >= 0.5, probs.argmax(1), K)[single]
        np.add.at(conf, (ti, pi), 1)
        spans = [(g.kind, a / RATE, b / RATE) for g in c.faults for a, b in label_spans(g)]
        m = match_events(frames_to_events(probs, ev_cfg), spans)
        for name, (etp, efn, efp, ons, offs) in m.items():
            k = FAULT_TYPES.index(name)
            ev_tp[k] += etp
            ev_fn[k] += efn
            ev_fp[k] += efp
            onset[name] += ons
            offset[name] += offs
    per = {}
    for k, name in enumerate(FAULT_TYPES):
        p, r, f1 = _prf(tp[k], fp[k], fn[k])
        ep, er, ef = _prf(ev_tp[k], ev_fp[k], ev_fn[k])
        per[name] = {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4),
                     "event_precision": round(ep, 4), "event_recall": round(er, 4),
                     "event_f1": round(ef, 4),
                     "onset_err_ms_median": round(1000 * float(np.median(onset[name])), 1)
                     if onset[name] else None,
                     "offset_err_ms_median": round(1000 * float(np.median(offset[name])), 1)
                     if offset[name] else None,
                     "onset_within_50ms": round(float(np.mean(np.array(onset[name]) <= 0.05)), 3)
                     if onset[name] else None,
                     "offset_within_50ms": round(float(np.mean(np.array(offset[name]) <= 0.05)),
                                                 3) if offset[name] else None}
    return {"frame_accuracy": round(exact / max(total, 1), 4),
            "macro_f1": round(float(np.mean([v["f1"] for v in per.values()])), 4),
            "event_macro_f1": round(float(np.mean([v["event_f1"] for v in per.values()])), 4),
            "per_class": per, "confusion": conf.tolist(),
            "confusion_labels": list(FAULT_TYPES) + ["clean"], "clips": len(clips)}


def confusion_png(conf: list[list[int]], labels: list[str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = np.asarray(conf, dtype=float)
    norm = c / np.maximum(c.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted (frame)")
    ax.set_ylabel("true (frame, single-fault frames)")
    ax.set_title("fault classifier, held-out split, int8")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(cfg: FaultTrainConfig, out: Path, report_dir: Path, log=print,
        checkpoint: Path | None = None, d: Dist = SINGLE) -> dict:
    """The whole recipe: data, training (or a saved checkpoint), int8 export, evaluation of
    the exported model through the runtime's own path. Under torchrun the ranks share the
    training clips and the steps; rank 0 alone exports and evaluates (others return {})."""
    torch.set_num_threads(cfg.threads)
    t0 = time.time()
    if not d.main:
        _, X, Y = make_set("train", cfg.train_clips, cfg.seed * 1_000_000, cfg, d=d)
        train(cfg, X, Y, lambda s: None, d)
        return {}
    report_dir.mkdir(parents=True, exist_ok=True)
    test, _, _ = make_set("test", cfg.test_clips, 10_000_000 + cfg.seed, cfg)
    if checkpoint and checkpoint.is_file() and not d.parallel:
        ck = torch.load(checkpoint, weights_only=False)
        nf = n_features(cfg.n_mels, cfg.time_features)
        net = FaultNet(nf, cfg.hidden, np.zeros(nf), np.ones(nf))
        net.load_state_dict(ck["state"])
        net.eval()
        calib = ck["calib"]
        log(f"loaded {checkpoint}")
    else:
        _, X, Y = make_set("train", cfg.train_clips, cfg.seed * 1_000_000, cfg, d=d)
        log(f"data: {len(X)} train clips, {len(test)} test clips ({time.time() - t0:.0f} s)"
            + (f" on each of {d.world} ranks" if d.parallel else ""))
        net = train(cfg, X, Y, log, d)
        rng = np.random.default_rng(cfg.seed + 1)
        calib = np.stack([X[i, o:o + cfg.block] for i, o in zip(
            rng.integers(0, len(X), 48), rng.integers(0, X.shape[1] - cfg.block + 1, 48),
            strict=True)])
        torch.save({"state": net.state_dict(), "calib": calib, "cfg": asdict(cfg)},
                   report_dir / "faults_net.pt")
    t1 = time.time()
    training = {**asdict(cfg), "train_seconds_of_audio": cfg.train_clips * cfg.clip_seconds}
    export(net, calib, out, cfg, training=training)
    log(f"exported {out} ({out.stat().st_size} bytes, {time.time() - t1:.0f} s)")
    metrics_float = evaluate(torch_block_model(net), test, cfg)
    metrics = evaluate(TFLiteFaultModel(out), test, cfg)
    metrics["float_macro_f1"] = metrics_float["macro_f1"]
    set_metrics(out, metrics)
    (report_dir / "faults_eval.json").write_text(json.dumps(metrics, indent=1))
    confusion_png(metrics["confusion"], metrics["confusion_labels"],
                  report_dir / "faults_confusion.png")
    log(f"held-out: macro F1 {metrics['macro_f1']} (float {metrics_float['macro_f1']}), "
        f"accuracy {metrics['frame_accuracy']}, total {time.time() - t0:.0f} s")
    return metrics


# ------------------------------------------------------------------------------------ CLI
def _cli():
    import click

    @click.command("faults", context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("--config", "-c", "config", type=click.Path(exists=True, dir_okay=False),
                  help="TOML with FaultTrainConfig fields (hidden, minutes, train_clips ...).")
    @click.option("--out", "-o", type=click.Path(dir_okay=False),
                  help="Where the int8 model (+ .json) goes [default: REPORT_DIR/faults.tflite].")
    @click.option("--ship", is_flag=True,
                  help="Also install it as the shipped model, edge/models/faults.tflite + .json.")
    @click.option("--report-dir", type=click.Path(file_okay=False),
                  default="build/faults", show_default=True,
                  help="Evaluation JSON and confusion-matrix PNG.")
    @click.option("--minutes", type=float, help="Training time budget (overrides config).")
    @click.option("--seed", type=int, help="Seed (overrides config).")
    @click.option("--checkpoint", type=click.Path(dir_okay=False),
                  help="Skip training: export/evaluate this saved faults_net.pt.")
    def faults_cmd(config, out, ship, report_dir, minutes, seed, checkpoint) -> None:
        """Train the background fault classifier, export it to int8 TFLite, evaluate it.
        Under torchrun the ranks train together (DDP, gloo); rank 0 exports."""
        from dataclasses import replace

        from edge.cliutil import err_console
        from edge.outpaths import check_output
        from training import dist

        out = Path(out) if out else Path(report_dir) / "faults.tflite"
        if out.resolve() in {SHIPPED.resolve(), SHIPPED.with_suffix(".json").resolve()} and (
                not ship):
            raise click.ClickException(f"{out} is the shipped model: pass --ship to replace it "
                                       f"(or -o elsewhere)")
        check_output(out.parent, "model directory", directory=True)  # not after training
        check_output(report_dir, "report directory", directory=True)
        cfg = FaultTrainConfig.load(config)
        if minutes is not None:
            cfg = replace(cfg, minutes=minutes)
        if seed is not None:
            cfg = replace(cfg, seed=seed)
        d = dist.init("cpu")
        try:
            m = run(cfg, out, Path(report_dir), log=lambda s: err_console.print(s),
                    checkpoint=Path(checkpoint) if checkpoint else None, d=d)
        finally:
            dist.close(d)
        if not d.main:
            return
        res = {k: m[k] for k in ("macro_f1", "frame_accuracy", "event_macro_f1",
                                 "float_macro_f1")}
        if ship and out.resolve() != SHIPPED.resolve():
            import shutil

            for ext in (".tflite", ".json"):
                tmp = SHIPPED.with_suffix(ext + ".part")
                shutil.copyfile(out.with_suffix(ext), tmp)
                os.replace(tmp, SHIPPED.with_suffix(ext))
        res["model"] = str(out)
        if ship:
            res["shipped"] = str(SHIPPED)
        click.echo(json.dumps(res))

    return faults_cmd


faults_cmd = _cli()
