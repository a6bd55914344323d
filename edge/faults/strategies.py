"""The strategy list (``strategies.toml``): fault type → mixer steps, as data.

A step's parameter is a number, or the name of a measured value (``edge.faults.measure``)
or of a value derived from them (``harmonic_freqs``, ``howl_freqs``); nothing is evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import HushlinkError
from edge.faults import FAULT_TYPES
from edge.faults.events import Event

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (Jetson JetPack 6): tomli is the same parser
    import tomli as tomllib

DEFAULT_PATH = Path(__file__).resolve().parent / "strategies.toml"
OPS = {"highpass", "notch", "cancel_tones", "gain", "gate", "expander", "limiter", "eq",
       "dc_subtract", "declip", "conceal"}
LIVE_KEYS = {"highpass_hz", "notches", "gain_db", "expand_below_db"}
GATE_ABOVE_FLOOR_DB = 6.0  # the live hiss gate opens this far above the measured floor


def derived(params: dict) -> dict:
    """Measured parameters plus the lists strategies refer to."""
    d = dict(params)
    if "f0_hz" in d:
        d["harmonic_freqs"] = [round(d["f0_hz"] * k, 3)
                               for k in range(1, int(d.get("harmonics", 1)) + 1)]
    if "freq_hz" in d:
        d["howl_freqs"] = [d["freq_hz"]]
    if "floor_dbfs" in d:
        d["gate_threshold_db"] = round(d["floor_dbfs"] + GATE_ABOVE_FLOOR_DB, 1)
    return d


@dataclass(frozen=True)
class Strategies:
    table: dict
    repair_order: tuple[str, ...]

    @classmethod
    def load(cls, path: str | Path | None = None) -> Strategies:
        p = Path(path) if path else DEFAULT_PATH
        try:
            d = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise HushlinkError(f"{p}: strategy list not found") from None
        except tomllib.TOMLDecodeError as e:
            raise HushlinkError(f"{p}: not valid TOML ({e})") from None
        order = tuple(d.pop("order", FAULT_TYPES))
        for kind, entry in d.items():
            if kind not in FAULT_TYPES:
                raise HushlinkError(f"{p}: unknown fault type [{kind}]; use "
                                    f"{', '.join(FAULT_TYPES)}")
            for st in entry.get("steps", []):
                if st.get("op") not in OPS:
                    raise HushlinkError(f"{p}: [{kind}] unknown op {st.get('op')!r}; use "
                                        f"{', '.join(sorted(OPS))}")
            bad = set(entry.get("live", {})) - LIVE_KEYS
            if bad:
                raise HushlinkError(f"{p}: [{kind}] unknown live setting(s) {sorted(bad)}")
        return cls(d, order)

    def order(self, kind: str) -> int:
        return self.repair_order.index(kind) if kind in self.repair_order else len(
            self.repair_order)

    @staticmethod
    def _resolve(value, params: dict, kind: str):
        if isinstance(value, str):
            if value not in params:
                raise HushlinkError(f"strategy for {kind} needs {value!r}, which was not "
                                    "measured")
            return params[value]
        return value

    def plan(self, ev: Event) -> list[tuple[str, dict]]:
        """[(op, params)] for one measured event (empty when the kind has no strategy)."""
        params = derived(ev.params)
        out = []
        for st in self.table.get(ev.kind, {}).get("steps", []):
            out.append((st["op"], {k: self._resolve(v, params, ev.kind)
                                   for k, v in st.items() if k != "op"}))
        return out

    def live_settings(self, events: list[Event]) -> dict:
        """Streaming ``Mixer.set`` keyword arguments for the currently active events."""
        out: dict = {}
        for ev in events:
            params = derived(ev.params)
            for k, v in self.table.get(ev.kind, {}).get("live", {}).items():
                if isinstance(v, str) and v not in params:
                    continue  # just opened: too little audio yet to measure it
                v = self._resolve(v, params, ev.kind)
                if k == "notches":  # 0.1 Hz steps: re-measuring does not rebuild the strip
                    v = {round(float(f), 1) for f in v}
                    out["notches"] = tuple(sorted(set(out.get("notches", ())) | v))
                elif k in ("highpass_hz", "expand_below_db"):
                    out[k] = max(out.get(k, -np.inf if k == "expand_below_db" else 0.0),
                                 float(v))
                else:
                    out[k] = min(out.get(k, 0.0), float(v))
        return out
