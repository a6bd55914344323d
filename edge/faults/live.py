"""The fault monitor inside the live loop (``edge-denoise live --fix-faults``).

The denoiser removes much of what the monitor is looking for (it cut a hum by 30 dB and a DC
offset from 0.100 to 0.004), so the monitor does not watch its output. It watches

* the capture (``pre``, before the denoiser): what the microphone delivered, and
* the background (``__call__``'s ``background``): the denoiser's residual X·(1−m), exactly
  what it separated out of the programme and so hides from the output.

Every closed event that passes the same coarse pre-check and measurement as offline
(edge.faults.precheck, measure.confirmed) is logged (JSON lines, with ``source`` "capture" or
"background" and times in seconds of capture) so the host reads it with ``get_events``. The
mixer on the output is re-planned ten times a second from the events open in either stream
(hum notches, rumble high-pass, howl notch, hiss gate, clipping gain), and ``pre`` repairs
dropouts and clipped runs on the capture sample by sample (edge.faults.repair) before the
denoiser sees them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge.faults.detect import FaultMonitor, TFLiteFaultModel
from edge.faults.mixer import Mixer
from edge.faults.repair import CaptureRepair
from edge.faults.strategies import Strategies

REPLAN_SAMPLES = 1_600  # 100 ms at 16 kHz
SR = 16_000


class LiveFaultFixer:
    """``pre(capture_block) -> block`` before the denoiser, ``fixer(block, background=...)
    -> block`` after it (the same length out). ``delay_samples``: how far the denoiser's
    output (and residual) lags its input, to put background events on the capture's clock."""

    wants_background = True  # edge.live.LiveLoop passes the denoiser's residual

    def __init__(self, events_path: str | Path | None = None, on_event=None,
                 model: TFLiteFaultModel | None = None, delay_samples: int = 160,
                 repair: bool = True, confirm: bool = True):
        model = model or TFLiteFaultModel()  # one interpreter, both monitors (one thread)
        self.monitors = {"capture": FaultMonitor(model), "background": FaultMonitor(model)}
        self.mixer, self.strategies = Mixer(), Strategies.load()
        self.repair = CaptureRepair() if repair else None
        # background sample k is capture sample k - delay (the repair delays in time, not
        # in samples: it emits every sample, LOOKAHEAD samples later)
        self.lag_s = {"capture": 0.0, "background": delay_samples / SR}
        self.events: list[dict] = []
        self.confirm = confirm  # the coarse pre-check and the measurement, as offline
        self.rejected = 0
        self._events_log = None
        if events_path:  # size-bounded like the telemetry (HUSHLINK_ROTATE_MB)
            from edge.outpaths import RotatingLines

            self._events_log = RotatingLines(events_path, what="fault events")
        self._on_event = on_event
        self._since_plan = REPLAN_SAMPLES

    def _stands(self, source: str, ev) -> bool:
        """The offline pipeline's two checks on the closed event's audio (still in the
        monitor's 3 s ring; an event longer than that is checked on what is left)."""
        from edge.faults.measure import confirmed, measure
        from edge.faults.precheck import precheck

        got = self.monitors[source].recent(ev)
        if not self.confirm or got is None:
            return True
        x, a, b = got
        return precheck(ev.kind, x, a, b) and confirmed(
            ev.kind, measure(ev.kind, x, a, b, SR), ev.confidence)

    def _log(self, source: str, events) -> None:
        for ev in events:
            if not self._stands(source, ev):
                self.rejected += 1
                continue
            rec = ev.as_dict()
            lag = self.lag_s[source]
            rec["start_s"] = round(max(0.0, rec["start_s"] - lag), 4)
            rec["end_s"] = round(max(0.0, rec["end_s"] - lag), 4)
            rec["source"] = source
            self.events.append(rec)
            if self._events_log:
                self._events_log.write(json.dumps(rec))
            if self._on_event:
                self._on_event(rec)

    def pre(self, block: np.ndarray) -> np.ndarray:
        """The captured 16 kHz block: monitored as it is, returned repaired (held back by the
        repair's look-ahead)."""
        self._log("capture", self.monitors["capture"].push(block))
        return self.repair(block) if self.repair is not None else block

    def __call__(self, block: np.ndarray, background: np.ndarray | None = None) -> np.ndarray:
        if background is not None:
            self._log("background", self.monitors["background"].push(background))
        self._since_plan += len(block)
        if self._since_plan >= REPLAN_SAMPLES:
            self._since_plan = 0
            active = [ev for m in self.monitors.values() for ev in m.active()]
            self.mixer.set(**self.strategies.live_settings(active))
        return self.mixer.process(block)

    def flush(self) -> None:
        """Close and log the events still open (end of the stream)."""
        for source, m in self.monitors.items():
            self._log(source, m.flush())
