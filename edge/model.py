"""The TFLite step model on the device (docs/MODEL_FORMAT.md): interpreter selection, loading,
validation against the runtime's front end, and one call per 10 ms hop.

A model is ``NAME.tflite`` + ``NAME.json``. Loading refuses a model whose metadata does not
match the file (sha256), the tensors (names, shapes) or a front end this runtime cannot run,
because a silently mismatched model produces plausible-sounding garbage.

Quantisation is read from each tensor's details, never assumed: any input or output may be
float32 or int8/uint8/int16 with its own scale and zero point. Recurrent state is carried
between hops as float32 (dequantised), so an int8 model that takes float state in and gives
int8 state out works as well as a fully float one.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.dsp import FrontEnd
from edge.errors import HushlinkError
from edge.validate import one_line

FORMAT = "hushlink-step-model"
FORMAT_VERSION = 1

# Preference order (SPEC §4). HUSHLINK_INTERPRETER=<module> forces one (benchmarks, tests).
BACKENDS = ("ai_edge_litert", "tflite_runtime")
INSTALL_HINT = ("install one of them: `pip install ai-edge-litert` (numpy 2 ok) or "
                "`pip install tflite-runtime 'numpy<2'` (the last release, 2.14, needs numpy<2)")


class ModelError(HushlinkError):
    """A model file or its metadata that this runtime cannot use."""


# ------------------------------------------------------------------------------ interpreter
def load_interpreter(backend: str | None = None) -> type:
    """The TFLite ``Interpreter`` class: ``ai_edge_litert`` first, ``tflite_runtime`` second.

    ``backend`` (or the HUSHLINK_INTERPRETER environment variable) forces one of ``BACKENDS``.
    Raises HushlinkError naming both packages when none can be imported.
    """
    wanted = backend or os.environ.get("HUSHLINK_INTERPRETER") or None
    if wanted is not None and wanted not in BACKENDS:
        raise HushlinkError(f"unknown TFLite interpreter {wanted!r}; use one of "
                            f"{', '.join(BACKENDS)}")
    errors = []
    for name in (wanted,) if wanted else BACKENDS:
        try:
            return importlib.import_module(f"{name}.interpreter").Interpreter
        except ImportError as e:  # numpy-ABI clashes surface as ImportError too
            errors.append(f"{name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    tried = " and ".join(f"{n}" for n in ((wanted,) if wanted else BACKENDS))
    raise HushlinkError(f"no TFLite interpreter could be imported (tried {tried}: "
                        f"{'; '.join(errors)}); {INSTALL_HINT}")


def backend_name(interpreter_cls: type) -> str:
    """``ai_edge_litert`` or ``tflite_runtime`` for an Interpreter class."""
    return interpreter_cls.__module__.split(".")[0]


# --------------------------------------------------------------------------------- metadata
@dataclass(frozen=True)
class ModelIO:
    """Tensor names (as the interpreter reports them, or signature keys)."""

    features: str
    mask: str
    state_in: tuple[str, ...] = ()
    state_out: tuple[str, ...] = ()


def read_metadata_json(path: Path, what: str = "model") -> object:
    """The JSON side file of ``NAME.tflite`` (any hushlink model), with one-line errors."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path}: {what} metadata not found (a model is NAME.tflite + "
                         "NAME.json side by side)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: not valid JSON ({e})") from None


@dataclass(frozen=True)
class ModelMetadata:
    """The contents of ``NAME.json`` (docs/MODEL_FORMAT.md)."""

    name: str
    version: str
    front_end: dict
    io: ModelIO
    state_shapes: tuple[tuple[int, ...], ...]
    tflite_sha256: str
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    created: str = ""
    quantization: str = "int8"
    params: int = 0
    macs_per_hop: int = 0
    algorithmic_latency_ms: float = 20.0
    test_vector: dict | None = None
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict, where: str = "metadata") -> ModelMetadata:
        if not isinstance(d, dict):
            raise ModelError(f"{where}: expected a JSON object")
        if d.get("format") != FORMAT:
            raise ModelError(f"{where}: not a hushlink step model (format is "
                             f"{d.get('format')!r}, expected {FORMAT!r})")
        if d.get("format_version") != FORMAT_VERSION:
            raise ModelError(f"{where}: format_version {d.get('format_version')!r} is not "
                             f"supported by this runtime (it reads version {FORMAT_VERSION})")
        missing = [k for k in ("name", "version", "front_end", "io", "state_shapes",
                               "tflite_sha256") if k not in d]
        if missing:
            raise ModelError(f"{where}: missing key(s) {', '.join(missing)}")
        io = d["io"]
        try:
            mio = ModelIO(features=str(io["features"]), mask=str(io["mask"]),
                          state_in=tuple(str(s) for s in io.get("state_in", ())),
                          state_out=tuple(str(s) for s in io.get("state_out", ())))
            shapes = tuple(tuple(int(n) for n in s) for s in d["state_shapes"])
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"{where}: malformed io/state_shapes ({e})") from None
        known = {f for f in cls.__dataclass_fields__}
        extra = {k: d[k] for k in d if k in known and k not in ("io", "state_shapes")}
        return cls(io=mio, state_shapes=shapes, **extra)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ModelMetadata:
        p = Path(path)
        return cls.from_dict(read_metadata_json(p), str(p))

    def to_dict(self) -> dict:
        d = {f: getattr(self, f) for f in self.__dataclass_fields__}
        d["io"] = {"features": self.io.features, "state_in": list(self.io.state_in),
                   "mask": self.io.mask, "state_out": list(self.io.state_out)}
        d["state_shapes"] = [list(s) for s in self.state_shapes]
        return d

    def build_front_end(self) -> FrontEnd:
        """The FrontEnd this model was trained with; refuses one this runtime cannot run."""
        fe = self.front_end
        try:
            if fe.get("window", "sqrt-hann") != "sqrt-hann":
                raise ValueError(f"window {fe['window']!r} (only sqrt-hann is implemented)")
            if fe.get("feature", "log-power") != "log-power":
                raise ValueError(f"feature {fe['feature']!r} (only log-power is implemented)")
            out = FrontEnd(sample_rate=int(fe["sample_rate"]), win=int(fe["win"]),
                           hop=int(fe["hop"]), n_fft=int(fe["n_fft"]),
                           log_floor=float(fe.get("log_floor", FrontEnd.log_floor)))
            if "n_bins" in fe and int(fe["n_bins"]) != out.n_bins:
                raise ValueError(f"n_bins {fe['n_bins']} != n_fft // 2 + 1 = {out.n_bins}")
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"model {self.name!r}: front end this runtime cannot run: {e}"
                             ) from None
        return out


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_model_path() -> Path:
    """The model shipped with the package: ``edge/models/default.tflite``."""
    return Path(__file__).resolve().parent / "models" / "default.tflite"


def resolve_model_path(path: str | os.PathLike | None) -> Path:
    """``path`` (``.tflite`` or ``.json``) or the shipped default, as the ``.tflite`` path."""
    p = Path(path) if path else default_model_path()
    if p.suffix == ".json":
        p = p.with_suffix(".tflite")
    if not p.is_file():
        hint = ("; the default model is shipped as edge/models/default.tflite (train one with "
                "`train-denoiser`, or pass --model)") if not path else ""
        raise ModelError(f"{p}: model file not found{hint}")
    return p


# ---------------------------------------------------------------------------- quantisation
_INT_RANGE = {np.dtype(t).char: (float(np.iinfo(t).min), float(np.iinfo(t).max))
              for t in (np.int8, np.uint8, np.int16, np.int32)}


@dataclass(frozen=True)
class TensorCodec:
    """How to move float32 values in and out of one tensor (dtype, scale, zero point)."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float = 0.0
    zero_point: int = 0

    @classmethod
    def from_details(cls, d: dict) -> TensorCodec:
        dtype = np.dtype(d["dtype"])
        scale, zp = d.get("quantization", (0.0, 0)) or (0.0, 0)
        qp = d.get("quantization_parameters") or {}
        scales = np.asarray(qp.get("scales", []))
        if scales.size > 1:
            raise ModelError(f"tensor {d['name']!r}: per-axis quantised input/output tensors "
                             "are not supported (export with per-tensor I/O)")
        if dtype.kind in "iu" and not scale:
            raise ModelError(f"tensor {d['name']!r} is {dtype.name} without quantisation "
                             "parameters (scale 0): cannot convert features/mask/state")
        if dtype.kind not in "iuf":
            raise ModelError(f"tensor {d['name']!r} has unsupported dtype {dtype.name}")
        return cls(index=int(d["index"]), name=d["name"],
                   shape=tuple(int(n) for n in d["shape"]), dtype=dtype,
                   scale=float(scale), zero_point=int(zp))

    @property
    def quantised(self) -> bool:
        return self.dtype.kind in "iu"

    def encode(self, x: np.ndarray) -> np.ndarray:
        """float32 values -> this tensor's dtype and shape.

        Runs once per tensor per hop, so it avoids numpy's slow wrappers (np.iinfo, np.clip)
        and works in place on one temporary."""
        if not self.quantised:  # float tensors (features, recurrent state): no copy
            return np.asarray(x, dtype=self.dtype).reshape(self.shape)
        x = np.asarray(x, dtype=np.float32).reshape(self.shape)
        lo, hi = _INT_RANGE[self.dtype.char]
        q = x * np.float32(1.0 / self.scale)
        np.rint(q, out=q)
        q += np.float32(self.zero_point)
        np.maximum(q, lo, out=q)
        np.minimum(q, hi, out=q)
        return q.astype(self.dtype)

    def decode(self, q: np.ndarray) -> np.ndarray:
        """this tensor's values -> float32 (same shape)."""
        if not self.quantised:
            return np.asarray(q, dtype=np.float32)
        x = q.astype(np.float32)
        if self.zero_point:
            x -= np.float32(self.zero_point)
        x *= np.float32(self.scale)
        return x


# ------------------------------------------------------------------- native log, child check
_FD2_LOCK = threading.Lock()  # one redirect at a time, or fd 2 could be left redirected


@contextlib.contextmanager
def native_log_filtered():
    """Hold back the interpreter's C++ ``INFO:`` lines (``Created TensorFlow Lite XNNPACK
    delegate for CPU``), which it writes straight to file descriptor 2 when tensors are
    allocated and which would precede our one-line errors and the demo's output. Anything
    else it writes there (another thread's output too, during the few ms) is passed on."""
    with _FD2_LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no usable fd 2: nothing to filter
            yield
            return
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                tmp.seek(0)
                for line in tmp.read().decode(errors="replace").splitlines():
                    if line.strip() and not line.startswith("INFO: "):
                        print(line, file=sys.stderr)


def preflight(path: str | os.PathLike, backend: str | None = None,
              timeout_s: float = 120.0) -> None:
    """Load ``path`` and run a few hops in a child process (``python -m edge.model check``).

    The interpreter does not verify a model's flatbuffer: a damaged file (one whose .json
    checksum was made to match) can crash it with SIGSEGV, which no ``except`` catches.
    Raises ModelError with the child's one-line error, or naming the signal."""
    cmd = [sys.executable, "-m", "edge.model", "check", str(path)]
    if backend:
        cmd += ["--backend", backend]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ModelError(f"{path}: loading it did not finish in {timeout_s:.0f} s") from None
    if r.returncode < 0:
        try:
            sig = signal.Signals(-r.returncode).name
        except ValueError:
            sig = f"signal {-r.returncode}"
        raise ModelError(f"{path}: the interpreter crashed ({sig}) loading it: the file is "
                         "damaged or not a model this runtime can run")
    try:
        out = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = one_line((r.stderr.strip().splitlines() or ["no output"])[-1])
        raise ModelError(f"{path}: the model check failed (exit {r.returncode}): {tail}"
                         ) from None
    if not out.get("ok"):
        raise ModelError(one_line(out.get("error", f"{path}: the model check failed")))


def _check_main(argv: list[str]) -> int:
    """``python -m edge.model check PATH [--backend NAME]``: the child side of preflight."""
    backend = argv[argv.index("--backend") + 1] if "--backend" in argv else None
    try:
        model = StepModel(argv[0], backend=backend)
        model.masks(np.full((4, model.n_bins), -5.0, dtype=np.float32))
        out = {"ok": True}
    except HushlinkError as e:
        out = {"ok": False, "error": str(e)}
    except Exception as e:  # anything else is a failed check too, reported as one line
        out = {"ok": False, "error": f"{argv[0]}: {type(e).__name__}: {e}"}
    print(json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


# ------------------------------------------------------------------------------ step model
class StepModel:
    """One loaded, validated step model: ``step(features, state) -> (mask, state)``.

    Not thread-safe (one interpreter); give each worker thread its own StepModel.
    """

    def __init__(self, path: str | os.PathLike | None = None, num_threads: int = 1,
                 backend: str | None = None, front_end: FrontEnd | None = None,
                 isolate: bool = False):
        """``isolate``: load and run the model in a child process first (``preflight``), so
        that a file that crashes the interpreter is an error here, not a segfault. For
        models from outside (``--model``); the packaged one and installed bundles are
        checked when they are built or installed."""
        self.path = resolve_model_path(path)
        self.metadata = ModelMetadata.load(self.path.with_suffix(".json"))
        md = self.metadata
        self.front_end = md.build_front_end()
        if front_end is not None and front_end != self.front_end:
            raise ModelError(f"{self.path}: the model's front end {md.front_end} does not match "
                             f"the runtime's {front_end.as_dict()}")
        digest = sha256_file(self.path)
        if digest != md.tflite_sha256:
            raise ModelError(f"{self.path}: sha256 {digest[:12]}… does not match the metadata "
                             f"({str(md.tflite_sha256)[:12]}…): the model and its .json do not "
                             "belong together (or the file is corrupt)")
        interpreter_cls = load_interpreter(backend)
        self.backend = backend_name(interpreter_cls)
        if isolate:
            preflight(self.path, self.backend)
        try:
            with native_log_filtered():
                self._it = interpreter_cls(model_path=str(self.path),
                                           num_threads=int(num_threads))
                self._it.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"{self.path}: the interpreter cannot load it ({one_line(e)})"
                             ) from None
        self._bind_tensors()

    # -- tensors
    def _bind_tensors(self) -> None:
        md, nb = self.metadata, self.front_end.n_bins
        ins = {d["name"]: d for d in self._it.get_input_details()}
        outs = {d["name"]: d for d in self._it.get_output_details()}
        sig_in, sig_out = self._signature_names()

        def find(name: str, table: dict, sig: dict, kind: str) -> TensorCodec:
            d = table.get(name)
            if d is None and name in sig:
                d = next((v for v in table.values() if v["index"] == sig[name]), None)
            if d is None:
                raise ModelError(f"{self.path}: {kind} tensor {name!r} named in the metadata is "
                                 f"not in the model (it has {', '.join(sorted(table))})")
            return TensorCodec.from_details(d)

        self.features_t = find(md.io.features, ins, sig_in, "input")
        self.mask_t = find(md.io.mask, outs, sig_out, "output")
        self.state_in_t = [find(n, ins, sig_in, "input") for n in md.io.state_in]
        self.state_out_t = [find(n, outs, sig_out, "output") for n in md.io.state_out]
        for t, what in ((self.features_t, "features"), (self.mask_t, "mask")):
            if int(np.prod(t.shape)) != nb:
                raise ModelError(f"{self.path}: {what} tensor shape {list(t.shape)} does not "
                                 f"hold the front end's {nb} bins")
        n = len(md.state_shapes)
        if len(self.state_in_t) != n or len(self.state_out_t) != n:
            raise ModelError(f"{self.path}: metadata lists {n} state shape(s) but "
                             f"{len(self.state_in_t)} state input(s) and "
                             f"{len(self.state_out_t)} state output(s)")
        for shape, ti, to in zip(md.state_shapes, self.state_in_t, self.state_out_t,
                                 strict=True):
            if ti.shape != shape or to.shape != shape:
                raise ModelError(f"{self.path}: state shape {list(shape)} in the metadata does "
                                 f"not match the tensors ({ti.name}: {list(ti.shape)}, "
                                 f"{to.name}: {list(to.shape)})")

    def _signature_names(self) -> tuple[dict, dict]:
        """Signature keys (``args_0``, ``output_0``) -> tensor indices, when the model has one."""
        try:
            sigs = self._it._get_full_signature_list()
        except Exception:  # older runtimes: tensor names only
            return {}, {}
        if len(sigs) != 1:
            return {}, {}
        (sig,) = sigs.values()
        return dict(sig.get("inputs", {})), dict(sig.get("outputs", {}))

    # -- inference
    @property
    def n_bins(self) -> int:
        return self.front_end.n_bins

    def init_state(self) -> list[np.ndarray]:
        """Zero recurrent state, float32, one array per ``state_shapes`` entry."""
        return [np.zeros(s, dtype=np.float32) for s in self.metadata.state_shapes]

    def step(self, features: np.ndarray, state: list[np.ndarray]
             ) -> tuple[np.ndarray, list[np.ndarray]]:
        """(n_bins,) float32 log-power features + state -> (n_bins,) mask in [0, 1], state."""
        it = self._it
        set_tensor, get_tensor = it.set_tensor, it.get_tensor
        ft = self.features_t
        set_tensor(ft.index, ft.encode(features))
        for t, s in zip(self.state_in_t, state, strict=True):
            set_tensor(t.index, t.encode(s))
        it.invoke()
        mask = self.mask_t.decode(get_tensor(self.mask_t.index)).reshape(-1)
        new_state = [t.decode(get_tensor(t.index)) for t in self.state_out_t]
        np.maximum(mask, 0.0, out=mask)  # in place: np.clip's wrapper costs more than the math
        np.minimum(mask, 1.0, out=mask)
        return mask, new_state

    def masks(self, features: np.ndarray) -> np.ndarray:
        """(frames, n_bins) features -> (frames, n_bins) masks, state starting at zero."""
        state = self.init_state()
        out = np.empty((len(features), self.n_bins), dtype=np.float32)
        for i, f in enumerate(features):
            out[i], state = self.step(f, state)
        return out

    def check_test_vector(self) -> float:
        """Run the metadata's test vector; returns the max abs error, raises over ``atol``.

        The health check after flashing: proves this interpreter gives what export gave.
        """
        tv = self.metadata.test_vector
        if not tv:
            raise ModelError(f"{self.path}: metadata has no test_vector to check")
        got = self.masks(np.asarray(tv["features"], dtype=np.float32))
        err = float(np.max(np.abs(got - np.asarray(tv["mask"], dtype=np.float32))))
        if err > float(tv.get("atol", 0.05)):
            raise ModelError(f"{self.path}: test vector mismatch on {self.backend} (max error "
                             f"{err:.4f} > atol {tv.get('atol', 0.05)})")
        return err

    def describe(self) -> dict:
        md = self.metadata
        return {"path": str(self.path), "name": md.name, "version": md.version,
                "backend": self.backend, "quantization": md.quantization,
                "algorithmic_latency_ms": md.algorithmic_latency_ms,
                "state_shapes": [list(s) for s in md.state_shapes]}


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "check":
        sys.exit(_check_main(sys.argv[2:]))
    print("usage: python -m edge.model check MODEL.tflite [--backend NAME]", file=sys.stderr)
    sys.exit(2)
