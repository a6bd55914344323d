"""The fault monitor inside the live loop (``edge-denoise live --fix-faults``): detect on the
denoised 16 kHz stream, re-plan the mixer ten times a second from the open events, and log
every closed event (JSON lines) so the host can read it with the rest of the telemetry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge.faults.detect import FaultMonitor
from edge.faults.mixer import Mixer
from edge.faults.strategies import Strategies

REPLAN_SAMPLES = 1_600  # 100 ms at 16 kHz


class LiveFaultFixer:
    """``fixer(block_16k) -> block_16k``: one call per worker block, same length out."""

    def __init__(self, events_path: str | Path | None = None, on_event=None):
        self.monitor, self.mixer, self.strategies = FaultMonitor(), Mixer(), Strategies.load()
        self.events: list[dict] = []
        self._path = Path(events_path) if events_path else None
        self._on_event = on_event
        self._since_plan = REPLAN_SAMPLES

    def __call__(self, block: np.ndarray) -> np.ndarray:
        for ev in self.monitor.push(block):
            rec = ev.as_dict()
            self.events.append(rec)
            if self._path:
                with open(self._path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
            if self._on_event:
                self._on_event(rec)
        self._since_plan += len(block)
        if self._since_plan >= REPLAN_SAMPLES:
            self._since_plan = 0
            self.mixer.set(**self.strategies.live_settings(self.monitor.active()))
        return self.mixer.process(block)
