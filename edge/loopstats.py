"""Counters and timing of the live loop, in fixed memory (RSS stays flat over hours).

Written by the capture callback (overruns) and the worker (timings); read by the status line
and the JSON summary. Plain ints and a numpy ring: no locks needed for monitoring-grade reads.
"""

from __future__ import annotations

import numpy as np


class TimingRing:
    """The last ``size`` durations (seconds) plus an all-time max and count."""

    def __init__(self, size: int = 65_536):
        self._buf = np.zeros(size, dtype=np.float64)
        self._n = 0
        self.max_s = 0.0

    def add(self, seconds: float) -> None:
        self._buf[self._n % len(self._buf)] = seconds
        self._n += 1
        if seconds > self.max_s:
            self.max_s = seconds

    @property
    def count(self) -> int:
        return self._n

    def percentiles_ms(self) -> dict:
        """p50/p99/max in milliseconds (p50/p99 over the ring, max over the whole run)."""
        if self._n == 0:
            return {"p50": None, "p99": None, "max": None, "n": 0}
        data = self._buf[:min(self._n, len(self._buf))]
        p50, p99 = np.percentile(data, [50, 99]) * 1e3
        return {"p50": round(float(p50), 4), "p99": round(float(p99), 4),
                "max": round(self.max_s * 1e3, 4), "n": self._n}


class LoopStats:
    """Everything the live loop counts."""

    def __init__(self) -> None:
        self.blocks = 0  # captured blocks handed to the worker
        self.hops = 0  # model hops run
        self.overruns = 0  # blocks dropped because the queue was full (worker too slow)
        self.input_overflows = 0  # PortAudio reported lost input (callback itself too late)
        self.underruns = 0  # output device starved (playback sink)
        self.queue_depth = 0
        self.queue_max = 0
        self.bypass_toggles = 0
        self.hop_time = TimingRing()  # Denoiser.process_hop only
        self.loop_time = TimingRing()  # whole worker pass per block / hops in it
        # since the last model switch (the flash trial's live check reads these)
        self.hop_cpu = TimingRing(4096)  # worker thread CPU per hop (not wall: load-proof)
        self._hops0 = self._overruns0 = 0

    def mark_switch(self) -> None:
        """Start a new window: the model just changed."""
        self.hop_cpu = TimingRing(4096)
        self._hops0, self._overruns0 = self.hops, self.overruns

    def window(self) -> dict:
        """Hops, overruns and CPU per hop (ms) since the last ``mark_switch``."""
        return {"hops": self.hops - self._hops0, "overruns": self.overruns - self._overruns0,
                "hop_cpu_ms": self.hop_cpu.percentiles_ms()}

    def note_queue(self, depth: int) -> None:
        self.queue_depth = depth
        if depth > self.queue_max:
            self.queue_max = depth

    def summary(self) -> dict:
        return {"blocks": self.blocks, "hops": self.hops, "overruns": self.overruns,
                "input_overflows": self.input_overflows, "underruns": self.underruns,
                "queue_max": self.queue_max, "bypass_toggles": self.bypass_toggles,
                "hop_ms": self.hop_time.percentiles_ms(),
                "loop_ms_per_hop": self.loop_time.percentiles_ms()}

    def status_line(self, audio_s: float, bypass: bool) -> str:
        h, lp = self.hop_time.percentiles_ms(), self.loop_time.percentiles_ms()

        def f(v):
            return "-" if v is None else f"{v:.3f}"

        return (f"{audio_s:6.1f}s {'BYPASS' if bypass else 'denoise'} "
                f"over {self.overruns} under {self.underruns} "
                f"q {self.queue_depth}/{self.queue_max} "
                f"hop {f(h['p50'])}/{f(h['p99'])}/{f(h['max'])} ms "
                f"loop p99 {f(lp['p99'])} ms")
