"""Training configuration: frozen dataclasses loaded from a TOML file (training/configs/).

One file describes a whole recipe (data, teacher, student, export, evaluation) so a run is
reproducible from its config and seed. Unknown sections or keys are errors, because a typo
that silently falls back to a default would train a different model than the one described.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from edge.errors import HushlinkError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (Jetson JetPack 6): tomli is the same parser
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
SHARED_DATA = ROOT.parent / "shared" / "data"


class ConfigError(HushlinkError):
    """A training config that cannot be used."""


@dataclass(frozen=True)
class DataConfig:
    speech_dirs: tuple[str, ...] = ("speech",)  # relative to data_root, or absolute
    noise_dirs: tuple[str, ...] = ("noise",)
    rir_dirs: tuple[str, ...] = ("rir",)
    data_root: str = ""  # "" = ../shared/data next to the repository
    # the larger corpus cache (`train-denoiser corpus`); dirs written "corpus:train/speech"
    # are inside it. Relative to the repository root
    corpus_root: str = "build/corpus"
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train/val/test share of speakers
    segment_s: float = 2.0
    snr_db: tuple[float, float] = (-5.0, 20.0)
    level_db: tuple[float, float] = (-35.0, -15.0)  # mixture RMS, dBFS
    p_reverb: float = 0.1
    p_second_noise: float = 0.3
    p_babble: float = 0.15
    p_eq: float = 0.5
    p_speed: float = 0.3
    speed: tuple[float, float] = (0.9, 1.1)  # resampling factor range; < 1 lowers the pitch
    p_level_change: float = 0.2
    # procedural noise variety (training/data.py vary_noise): resampling, reversal, filtering,
    # amplitude modulation, synthetic transients; each noise excerpt drawn with this chance
    p_noise_variety: float = 0.0
    max_files_per_speaker: int = 0  # 0 = all (smaller for quick runs)
    max_noise_files: int = 0  # 0 = all


@dataclass(frozen=True)
class TeacherConfig:
    n_processors: int = 3
    channels: tuple[int, ...] = (8, 12, 6)
    kernels: tuple[tuple[int, int], ...] = ((3, 5), (5, 3), (3, 9))
    pools: tuple[int, ...] = (4, 4, 2)
    fc: tuple[int, ...] = (128, 96, 112)
    lstm: tuple[int, ...] = (64, 48, 56)
    steps: int = 300
    batch: int = 8
    lr: float = 2e-3
    fusion_steps: int = 60
    # per-bin loss weight |X|^p of the processors' mask MSE (like the student's)
    bin_weight_power: float = 0.0


@dataclass(frozen=True)
class StudentConfig:
    hidden: int = 112
    embed: int = 64
    mask_floor: float = 0.05
    # the applied mask's post-filter (training/student.py): out_floor + (1 - out_floor) *
    # sigmoid ** mask_power; the loss never sees it. out_floor None = mask_floor (identity)
    mask_power: float = 1.0
    out_floor: float | None = None
    steps: int = 500
    batch: int = 16
    lr: float = 3e-3
    ablation: bool = True  # also train an ablation student on the same batches
    # which: "mref" = m_ref only (SPEC §3's ablation), "core" = the adaptive loss without
    # signal-domain terms (core-only vs core + terms)
    ablation_kind: str = "mref"
    # per-bin loss weight |X|^p (training/loss.py bin_weights); 0 = plain mean over bins
    bin_weight_power: float = 0.0
    # share of training sequences that start from a zero state; the others start from the
    # state another mixture left behind (training/distill.py carry_state): 1 = always fresh
    p_state_reset: float = 1.0
    # weight of an extra -SI-SDR (dB) term of the resynthesised output, added to both
    # students' loss. 0 = SPEC §3's loss exactly (the shipped recipe); not part of the spec
    si_sdr_weight: float = 0.0


@dataclass(frozen=True)
class ExportConfig:
    calibration_frames: int = 2000
    name: str = "default"
    version: str = "1.0.0"
    # the applied mask's post-filter when it is chosen after training (benchmarks/
    # mask_postfilter.py on the trained student): overrides [student] mask_power / out_floor
    mask_power: float | None = None
    out_floor: float | None = None


@dataclass(frozen=True)
class EvalConfig:
    utterances: int = 24
    snrs: tuple[float, ...] = (-5.0, 0.0, 5.0, 10.0, 15.0)


@dataclass(frozen=True)
class TrainConfig:
    name: str = "default"
    seed: int = 0
    threads: int = 0  # torch threads; 0 = every core (os.cpu_count())
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def data_root(self) -> Path:
        return Path(self.data.data_root) if self.data.data_root else SHARED_DATA

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _tupled(v):
    return tuple(_tupled(x) for x in v) if isinstance(v, list) else v


def _build(cls, d: dict, where: str):
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} "
                          f"(known: {', '.join(names)})")
    kw = {}
    for k, v in d.items():
        default = getattr(cls(), k)
        if dataclasses.is_dataclass(default):
            if not isinstance(v, dict):
                raise ConfigError(f"{where}: [{k}] must be a table")
            kw[k] = _build(type(default), v, f"{where} [{k}]")
        else:
            v = _tupled(v)
            want = float if default is None else type(default)  # None: an optional float
            if want is float and isinstance(v, int):
                v = float(v)
            if type(v) is not want:
                name = "a number" if default is None else want.__name__
                raise ConfigError(f"{where}: {k} must be {name}, got {type(v).__name__}")
            kw[k] = v
    return cls(**kw)


def parse_override(text: str) -> tuple[list[str], object]:
    """``section.key=value`` -> (["section", "key"], value). The value is read as a TOML
    value (``3000``, ``0.5``, ``true``, ``[-5, 20]``, ``"x"``); anything TOML cannot read is
    a bare string (``export.name=mine``). Types are checked later, by ``_build``."""
    key, eq, raw = text.partition("=")
    path = key.strip().split(".")
    if not eq or not all(path):
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. student.steps=3000")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return path, value


def apply_overrides(d: dict, overrides: tuple[str, ...] | list[str]) -> dict:
    """The TOML dict ``d`` with command-line overrides merged in (a new dict)."""
    import copy

    out = copy.deepcopy(d)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: {part} is not a section")
            node = nxt
        node[path[-1]] = value
    return out


def load_config(path: str | Path | None, overrides: tuple[str, ...] | list[str] = ()
                ) -> TrainConfig:
    """A TOML file path, or a name in training/configs/ (``default``, ``smoke``), with
    ``section.key=value`` overrides (validated like the file: unknown keys and wrong types
    are errors)."""
    p = Path(path) if path else CONFIG_DIR / "default.toml"
    if not p.suffix and not p.exists():
        p = CONFIG_DIR / f"{p}.toml"
    try:
        d = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: config not found (built in: "
                          f"{', '.join(x.stem for x in sorted(CONFIG_DIR.glob('*.toml')))})"
                          ) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML ({e})") from None
    where = str(p) + (" with overrides" if overrides else "")
    cfg = _build(TrainConfig, apply_overrides(d, overrides), where)
    if cfg.teacher.n_processors < 1 or any(
            len(getattr(cfg.teacher, k)) < cfg.teacher.n_processors
            for k in ("channels", "kernels", "pools", "fc", "lstm")):
        raise ConfigError(f"{p}: [teacher] lists fewer processor settings than n_processors")
    if abs(sum(cfg.data.split) - 1.0) > 1e-6:
        raise ConfigError(f"{p}: [data] split must sum to 1")
    lo, hi = cfg.data.speed
    if not 0 < lo <= hi:
        raise ConfigError(f"{p}: [data] speed must be [low, high] with 0 < low <= high, "
                          f"got {list(cfg.data.speed)}")
    if cfg.student.si_sdr_weight < 0:
        raise ConfigError(f"{p}: [student] si_sdr_weight must be >= 0, got "
                          f"{cfg.student.si_sdr_weight}")
    if cfg.student.ablation_kind not in ("mref", "core"):
        raise ConfigError(f"{p}: [student] ablation_kind must be \"mref\" or \"core\", got "
                          f"{cfg.student.ablation_kind!r}")
    if not 0 <= cfg.student.p_state_reset <= 1:
        raise ConfigError(f"{p}: [student] p_state_reset is a share in [0, 1], got "
                          f"{cfg.student.p_state_reset}")
    return cfg


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def to_toml(cfg: TrainConfig) -> str:
    """The config as run, as TOML that ``load_config`` reads back to the same config
    (optional values that are None are left out: None is their default)."""
    top, tables = [], []
    for k, v in cfg.as_dict().items():
        if isinstance(v, dict):
            tables.append(f"\n[{k}]")
            tables += [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items() if vv is not None]
        elif v is not None:
            top.append(f"{k} = {_toml_value(v)}")
    return "\n".join(top + tables) + "\n"
