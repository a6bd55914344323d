"""Device profiles: what differs between boards, as data in ``hardware/<name>.toml``.

Each TOML table maps onto a frozen dataclass below; unknown keys, wrong types and values
out of range raise ProfileError naming the file, the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from edge import validate
from edge.errors import ProfileError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (Jetson JetPack 6): tomli is the same parser
    import tomli as tomllib


@dataclass(frozen=True)
class AudioSettings:
    input_device: str = "default"  # PortAudio device name (substring) or index
    output_device: str = "default"
    native_rate: int = 48_000  # the rate the card runs at; we resample to 16 kHz with soxr
    period_frames: int = 480  # frames per PortAudio callback at native_rate
    channels: int = 1
    input_channel: int = 0

    def validate(self) -> None:
        _check(self.native_rate in (8_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000, 96_000),
               "audio.native_rate", "one of 8000, 16000, 22050, 24000, 32000, 44100, 48000, 96000")
        _check(16 <= self.period_frames <= 8192, "audio.period_frames", "16..8192")
        _check(1 <= self.channels <= 32, "audio.channels", "1..32")
        _check(0 <= self.input_channel < self.channels, "audio.input_channel", "0..channels-1")


@dataclass(frozen=True)
class RuntimeSettings:
    num_threads: int = 1  # interpreter threads
    cpu_affinity: tuple[int, ...] = ()  # cores for the inference worker; () = any
    realtime_priority: int = 0  # SCHED_FIFO priority hint for the worker; 0 = normal
    queue_frames: int = 64  # capture queue depth (hops) before counting an overrun
    # CPU time one 10 ms hop may take (p99): a flashed model slower than this is rolled back
    hop_budget_ms: float = 5.0
    user: str = "hushlink"
    group: str = "audio"

    def validate(self) -> None:
        _check(1 <= self.num_threads <= 16, "runtime.num_threads", "1..16")
        _check(all(c >= 0 for c in self.cpu_affinity), "runtime.cpu_affinity", "core indices >= 0")
        _check(0 <= self.realtime_priority <= 99, "runtime.realtime_priority", "0..99")
        _check(4 <= self.queue_frames <= 4096, "runtime.queue_frames", "4..4096")
        _check(0 < self.hop_budget_ms <= 1000, "runtime.hop_budget_ms", "0 < ms <= 1000")
        for key in ("user", "group"):  # they reach the systemd unit (edge/live.py)
            validate.unit_user(f"runtime.{key}", getattr(self, key), error=ProfileError)


@dataclass(frozen=True)
class PtpSettings:
    iface: str = "eth0"
    domain: int = 0
    transport: str = "UDPv4"  # UDPv4 | L2
    delay_mechanism: str = "E2E"  # E2E | P2P
    priority1: int = 128  # master role uses grandmaster_priority instead
    grandmaster_priority: int = 10
    lock_threshold_ns: int = 1_000  # |offset| below this over the window = locked
    holdover_s: float = 10.0  # seconds without fresh data before unlocked
    window_s: int = 60  # monitor rolling window

    def validate(self) -> None:
        _check(0 <= self.domain <= 127, "ptp.domain", "0..127")
        _check(self.transport in ("UDPv4", "L2"), "ptp.transport", "UDPv4 or L2")
        _check(self.delay_mechanism in ("E2E", "P2P"), "ptp.delay_mechanism", "E2E or P2P")
        _check(0 <= self.priority1 <= 255, "ptp.priority1", "0..255")
        _check(0 <= self.grandmaster_priority <= 255, "ptp.grandmaster_priority", "0..255")
        _check(self.lock_threshold_ns > 0, "ptp.lock_threshold_ns", "> 0")
        _check(self.holdover_s > 0, "ptp.holdover_s", "> 0")
        _check(self.window_s >= 2, "ptp.window_s", ">= 2")


@dataclass(frozen=True)
class SerialSettings:
    port: str = "/dev/ttyGS0"  # any pyserial URL also works (socket://, loop://)
    baud: int = 921_600

    def validate(self) -> None:
        _check(self.baud in (9_600, 19_200, 38_400, 57_600, 115_200, 230_400, 460_800, 921_600,
                             1_000_000, 2_000_000, 3_000_000), "serial.baud", "a standard rate")


@dataclass(frozen=True)
class DeviceProfile:
    """Everything board-specific. Load with ``DeviceProfile.load(path)`` or ``by_name``."""

    name: str
    description: str = ""
    arch: str = "x86_64"
    audio: AudioSettings = field(default_factory=AudioSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    ptp: PtpSettings = field(default_factory=PtpSettings)
    serial: SerialSettings = field(default_factory=SerialSettings)

    def validate(self) -> None:
        _check(bool(self.name) and self.name.replace("-", "").isalnum(), "name",
               "letters, digits and '-'")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if dataclasses.is_dataclass(v):
                v.validate()

    @classmethod
    def load(cls, path: str | Path) -> DeviceProfile:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise ProfileError(f"{p}: no such profile; built-in ones: {', '.join(names())}"
                               ) from None
        except tomllib.TOMLDecodeError as e:
            raise ProfileError(f"{p}: not valid TOML ({e})") from None
        try:
            profile = _build(cls, data, "")
            profile.validate()
        except ProfileError as e:
            raise ProfileError(f"{p}: {e}") from None
        return profile

    @classmethod
    def by_name(cls, name_or_path: str) -> DeviceProfile:
        """A built-in profile by name (``rpi4``) or any profile file by path."""
        if name_or_path.endswith(".toml") or "/" in name_or_path:
            return cls.load(name_or_path)
        path = _builtin_dir() / f"{name_or_path}.toml"
        if not path.is_file():
            raise ProfileError(f"unknown hardware profile {name_or_path!r}; "
                               f"built-in ones: {', '.join(names())}")
        return cls.load(path)


def names() -> list[str]:
    """Names of the profiles that ship with hushlink."""
    return sorted(p.stem for p in _builtin_dir().glob("*.toml"))


def _builtin_dir() -> Path:
    return Path(str(resources.files("hardware")))


def _check(ok: bool, key: str, allowed: str) -> None:
    if not ok:
        raise ProfileError(f"invalid value for {key}: expected {allowed}")


def _build(cls: type, data: dict, prefix: str):
    """Build dataclass ``cls`` from a TOML table, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ProfileError(f"{prefix.rstrip('.') or 'profile'} must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ProfileError(f"unknown key(s) {', '.join(prefix + k for k in unknown)}; "
                           f"allowed: {', '.join(prefix + k for k in fields)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, prefix + key)
    missing = [k for k, f in fields.items() if k not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ProfileError(f"missing required key(s) {', '.join(prefix + k for k in missing)}")
    return cls(**kwargs)


def _coerce(value, hint, key: str):
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, list):
            raise ProfileError(f"{key} must be a list")
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        return tuple(_coerce(v, item, key) for v in value)
    if origin in (typing.Union, types.UnionType):
        for a in typing.get_args(hint):
            try:
                return _coerce(value, a, key)
            except ProfileError:
                continue
        raise ProfileError(f"{key} has the wrong type ({type(value).__name__})")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    wrong_bool = hint is int and isinstance(value, bool)
    if hint is type(None) or not isinstance(value, hint) or wrong_bool:
        raise ProfileError(f"{key} must be {getattr(hint, '__name__', hint)}, "
                           f"got {type(value).__name__} {value!r}")
    return value
