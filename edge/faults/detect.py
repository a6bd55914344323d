"""Run the int8 fault classifier (ai_edge_litert) over files and streams.

The classifier is bidirectional, so it runs on blocks of ``block`` frames (1 s) that start
every ``step`` frames (0.5 s); overlapping block outputs are averaged with a Hann weight so a
frame's probability comes mostly from the block where it sits in the middle (most context on
both sides). The file path (``detect_file``) and the stream path (``FaultMonitor.push``) share
``BlockStitcher`` and give the same probabilities.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.dsp import DEFAULT_FRONT_END, FrontEnd, stft_step
from edge.errors import HushlinkError
from edge.faults import FAULT_TYPES
from edge.faults.events import Event, EventConfig, EventTracker, frames_to_events
from edge.faults.features import (
    N_MELS,
    N_TIME,
    features,
    frame_windows,
    logmel_from_spec,
    time_features,
)
from edge.model import (
    ModelError,
    TensorCodec,
    backend_name,
    load_interpreter,
    native_log_filtered,
    read_metadata_json,
    sha256_file,
)
from edge.validate import one_line

FORMAT = "hushlink-fault-model"

BlockModel = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""(block, features) float32 -> ((block, classes) frame probs, (classes,) clip probs)."""


def default_model_path() -> Path:
    return Path(__file__).resolve().parents[1] / "models" / "faults.tflite"


@dataclass(frozen=True)
class FaultModelInfo:
    """The metadata ``faults.json`` next to ``faults.tflite``."""

    name: str
    kinds: tuple[str, ...]
    block: int
    step: int
    n_mels: int
    io: dict
    tflite_sha256: str
    metrics: dict
    time_features: int = 0  # edge.faults.features.TIME_FEATURES after the log-mel bands

    @classmethod
    def load(cls, path: Path) -> FaultModelInfo:
        d = read_metadata_json(path, "fault model")
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ModelError(f"{path}: not a hushlink fault model (format "
                             f"{d.get('format') if isinstance(d, dict) else None!r})")
        try:
            info = cls(name=str(d["name"]), kinds=tuple(d["kinds"]), block=int(d["block"]),
                       step=int(d["step"]), n_mels=int(d["n_mels"]), io=dict(d["io"]),
                       tflite_sha256=str(d["tflite_sha256"]), metrics=d.get("metrics", {}),
                       time_features=int(d.get("time_features", 0)))
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"{path}: malformed fault model metadata ({e})") from None
        if info.time_features not in (0, N_TIME):
            raise ModelError(f"{path}: time_features must be 0 or {N_TIME}")
        return info


class TFLiteFaultModel:
    """A loaded ``faults.tflite``: ``model(features) -> (frame probs, clip probs)``."""

    def __init__(self, path: str | os.PathLike | None = None, num_threads: int = 1):
        p = Path(path) if path else default_model_path()
        if p.suffix == ".json":
            p = p.with_suffix(".tflite")
        if not p.is_file():
            raise ModelError(f"{p}: fault model not found")
        self.path = p
        self.info = FaultModelInfo.load(p.with_suffix(".json"))
        if sha256_file(p) != self.info.tflite_sha256:
            raise ModelError(f"{p}: sha256 does not match its .json (mismatched or corrupt)")
        cls = load_interpreter()
        self.backend = backend_name(cls)
        try:
            with native_log_filtered():  # no XNNPACK "INFO:" line before our output
                self._it = cls(model_path=str(p), num_threads=num_threads)
                self._it.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"{p}: the interpreter cannot load it ({one_line(e)})") from None
        ins = {d["name"]: d for d in self._it.get_input_details()}
        outs = {d["name"]: d for d in self._it.get_output_details()}
        try:
            self._in = TensorCodec.from_details(ins[self.info.io["features"]])
            self._frames = TensorCodec.from_details(outs[self.info.io["frames"]])
            self._clip = TensorCodec.from_details(outs[self.info.io["clip"]])
        except KeyError as e:
            raise ModelError(f"{p}: tensor {e} named in the metadata is not in the model"
                             ) from None

    @property
    def block(self) -> int:
        return self.info.block

    def __call__(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        it = self._it
        it.set_tensor(self._in.index, self._in.encode(feats))
        it.invoke()
        fr = self._frames.decode(it.get_tensor(self._frames.index))
        cl = self._clip.decode(it.get_tensor(self._clip.index))
        return fr.reshape(self.info.block, -1), cl.reshape(-1)


def block_weight(block: int) -> np.ndarray:
    """(block,) Hann weight, never zero (edge frames are covered by one block only)."""
    return (np.sin(np.pi * (np.arange(block) + 0.5) / block) ** 2).astype(np.float32)


class BlockStitcher:
    """Feeds features in, runs ``model`` on every full block, returns finished frame probs."""

    def __init__(self, model: BlockModel, block: int, step: int, n_classes: int):
        self.model, self.block, self.step = model, block, step
        self.w = block_weight(block)
        self.feats = np.zeros((0, 0), dtype=np.float32)
        self.acc = np.zeros((0, n_classes), dtype=np.float64)
        self.wsum = np.zeros(0, dtype=np.float64)
        self.base = 0  # absolute frame index of feats[0]
        self.next_block = 0  # absolute start of the next block to run
        self.clip_max = np.zeros(n_classes, dtype=np.float32)

    def _run(self, start: int, feats: np.ndarray) -> None:
        fr, cl = self.model(feats)
        self.clip_max = np.maximum(self.clip_max, cl)
        i = start - self.base
        self.acc[i:i + self.block] += fr * self.w[:, None]
        self.wsum[i:i + self.block] += self.w

    def push(self, feats: np.ndarray) -> np.ndarray:
        """(frames, features) -> (finished frames, classes) probabilities (maybe 0 rows)."""
        if self.feats.size == 0:
            self.feats = np.zeros((0, feats.shape[1]), dtype=np.float32)
        self.feats = np.concatenate([self.feats, feats.astype(np.float32)])
        pad = len(self.feats) - len(self.wsum)
        self.acc = np.concatenate([self.acc, np.zeros((pad, self.acc.shape[1]))])
        self.wsum = np.concatenate([self.wsum, np.zeros(pad)])
        while self.next_block + self.block <= self.base + len(self.feats):
            i = self.next_block - self.base
            self._run(self.next_block, self.feats[i:i + self.block])
            self.next_block += self.step
        return self._emit(self.next_block - self.base)

    def flush(self) -> np.ndarray:
        """Run a last, reflect-padded block over what is left and return every frame."""
        n = len(self.feats)
        if n and (self.wsum[n - 1] == 0 or self.next_block - self.base < n):
            start = max(0, n - self.block)
            seg = self.feats[start:]
            if len(seg) < self.block:
                seg = np.concatenate([seg, seg[::-1]] * (self.block // max(len(seg), 1) + 1))
                seg = seg[:self.block]
            fr, cl = self.model(seg)
            self.clip_max = np.maximum(self.clip_max, cl)
            k = n - start
            self.acc[start:n] += fr[:k] * self.w[:k, None]
            self.wsum[start:n] += self.w[:k]
        return self._emit(n)

    def _emit(self, upto: int) -> np.ndarray:
        upto = max(0, min(upto, len(self.feats)))
        out = (self.acc[:upto] / np.maximum(self.wsum[:upto, None], 1e-9)).astype(np.float32)
        self.feats, self.acc, self.wsum = self.feats[upto:], self.acc[upto:], self.wsum[upto:]
        self.base += upto
        return out


def frame_probs(x: np.ndarray, model: BlockModel, block: int = 100, step: int = 50,
                n_classes: int = len(FAULT_TYPES), n_mels: int = N_MELS, n_time: int = N_TIME,
                fe: FrontEnd = DEFAULT_FRONT_END) -> tuple[np.ndarray, np.ndarray]:
    """(n,) float32 at 16 kHz -> ((n // hop + 1, classes) frame probs, (classes,) clip max)."""
    st = BlockStitcher(model, block, step, n_classes)
    a = st.push(features(x, n_mels, n_time, fe))
    b = st.flush()
    return np.concatenate([a, b]), st.clip_max


@dataclass
class Detection:
    events: list[Event]
    probs: np.ndarray  # (frames, classes)
    clip: dict  # kind -> clip-level probability


def detect(x: np.ndarray, model: TFLiteFaultModel | None = None,
           cfg: EventConfig = EventConfig()) -> Detection:
    """Whole-signal detection: probabilities, clip decision and events (no measurement)."""
    model = model or TFLiteFaultModel()
    info = model.info
    probs, clip = frame_probs(x, model, info.block, info.step, len(info.kinds), info.n_mels,
                              info.time_features)
    events = frames_to_events(probs, cfg, info.kinds)
    return Detection(events, probs, {k: round(float(p), 3)
                                     for k, p in zip(info.kinds, clip, strict=True)})


class FaultMonitor:
    """Streaming monitor: ``push(hop-multiple block of samples) -> closed events``.

    Latency: one classifier block (1 s) plus the event merge gap. Event times are seconds from
    the first pushed sample. Not thread-safe; run it in the worker thread, not the callback.
    """

    def __init__(self, model: TFLiteFaultModel | None = None,
                 cfg: EventConfig = EventConfig(), fe: FrontEnd = DEFAULT_FRONT_END):
        self.model = model or TFLiteFaultModel()
        info = self.model.info
        self.fe = fe
        self.stitcher = BlockStitcher(self.model, info.block, info.step, len(info.kinds))
        self.tracker = EventTracker(cfg, info.kinds)
        self._state = np.zeros(fe.overlap, dtype=np.float32)
        self._tail = np.zeros(fe.overlap, dtype=np.float32)  # the time features' overlap
        self._pending = np.zeros(0, dtype=np.float32)
        self._ring = np.zeros(0, dtype=np.float32)  # the last ``ring_s`` seconds, to measure
        self.ring_s = 3.0
        self.n_samples = 0

    def push(self, samples: np.ndarray) -> list[Event]:
        """Samples (any length) -> events that closed (times from the first sample)."""
        samples = np.asarray(samples, dtype=np.float32)
        self.n_samples += len(samples)
        keep = int(self.ring_s * self.fe.sample_rate)
        self._ring = np.concatenate([self._ring, samples])[-keep:]
        x = np.concatenate([self._pending, samples])
        hop = self.fe.hop
        n = len(x) // hop
        self._pending = x[n * hop:]
        specs = []
        for k in range(n):
            spec, self._state = stft_step(x[k * hop:(k + 1) * hop], self._state, self.fe)
            specs.append(spec)
        if not specs:
            return []
        feats = logmel_from_spec(np.stack(specs), self.model.info.n_mels, self.fe)
        if self.model.info.time_features:  # the same frames as features() of the whole file
            buf = np.concatenate([self._tail, x[:n * hop]])
            self._tail = buf[len(buf) - self.fe.overlap:]
            tf = time_features(frame_windows(buf, n, self.fe))[:, :self.model.info.time_features]
            feats = np.concatenate([feats, tf], axis=1)
        return self.tracker.push(self.stitcher.push(feats))

    def flush(self) -> list[Event]:
        return self.tracker.push(self.stitcher.flush()) + self.tracker.flush()

    def recent(self, ev: Event) -> tuple[np.ndarray, int, int] | None:
        """(audio, start, end): the kept audio and the part of ``ev``'s span still in it
        (samples), or None when all of it has left the ``ring_s`` seconds kept."""
        sr = self.fe.sample_rate
        ring0 = self.n_samples - len(self._ring)
        a = max(0, round(ev.start_s * sr) - ring0)
        b = min(len(self._ring), round(ev.end_s * sr) - ring0)
        return (self._ring, a, b) if b > a else None

    def active(self) -> list[Event]:
        """Events open now (end = the newest classified frame), with parameters measured on
        the recent audio, for a live mixer to act on while the fault lasts."""
        from edge.faults.measure import measure

        sr, hop = self.fe.sample_rate, self.tracker.cfg.hop_s
        ring0 = self.n_samples - len(self._ring)  # absolute index of self._ring[0]
        out = []
        for c, (first, last, peak) in self.tracker._open.items():
            kind = self.tracker.kinds[c]
            s, e = int((first - 0.5) * hop * sr), int((last + 0.5) * hop * sr)
            a, b = max(0, s - ring0), max(0, min(len(self._ring), e - ring0))
            params = measure(kind, self._ring, a, b, sr) if b - a >= sr // 10 else {}
            params = {k: v for k, v in params.items() if k not in ("start", "end", "runs")}
            out.append(Event(kind, max(0.0, s / sr), e / sr, peak, params))
        return out


def check_kinds(kinds: tuple[str, ...]) -> None:
    unknown = set(kinds) - set(FAULT_TYPES)
    if unknown:
        raise HushlinkError(f"fault model knows unknown fault types {sorted(unknown)}")
