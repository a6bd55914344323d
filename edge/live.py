"""The live loop: capture -> bounded queue -> worker (resample, denoise, resample) -> sinks.

The capture callback only copies a block and ``put_nowait``s it (a full queue is counted as an
overrun, never waited on). One worker thread owns the model: it resamples the native-rate
blocks to the model rate (edge.stream_resample), runs ``Denoiser.process_hop`` per 10 ms hop
and resamples back to each sink's rate. The main thread only watches: the status
line, the duration, signals (SIGINT/SIGTERM stop, SIGUSR1 toggles bypass) and device loss.

A new model (a flashed bundle, edge/liveslot.py) is loaded off the audio path and handed over
with ``request_model``; the worker swaps it in between two blocks, so nothing is dropped.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass

import numpy as np

from edge.denoise import Denoiser
from edge.errors import HushlinkError
from edge.loopstats import LoopStats
from edge.stream_resample import StreamResampler


class DeviceLostError(HushlinkError):
    """The capture device stopped delivering audio."""


@dataclass(frozen=True)
class LoopConfig:
    """How the worker runs. Times in seconds; ``None`` duration = until stopped."""

    duration_s: float | None = None
    queue_blocks: int = 64  # capture queue depth before overruns are counted
    stall_timeout_s: float = 2.0  # no audio for this long = the device is gone
    cpu_affinity: tuple[int, ...] = ()
    realtime_priority: int = 0
    # native <-> 16 kHz: "MP" = minimum-phase FIR (~0.2 ms each way, integer ratios; soxr LQ
    # for others); soxr's streaming qualities hold back half their filter (LQ 6 ms, HQ 21 ms)
    resample_quality: str = "MP"


class LiveLoop:
    """Runs ``source`` through ``denoiser`` into ``sinks`` until stopped. Call ``run()``."""

    def __init__(self, source, denoiser: Denoiser, sinks: list, config: LoopConfig,
                 input_sinks: tuple = (), post=None, media_clock=None, pre=None):
        """``input_sinks`` get the captured audio untouched, at the capture rate (A/B,
        latency measurement); ``sinks`` get the denoised audio at their own rates.
        ``post(block_16k) -> block_16k`` runs after the denoiser (e.g. the fault fixer); a
        ``post`` with ``wants_background = True`` is called ``post(block, background=...)``
        with the denoiser's residual X·(1−m) of the same samples (``Denoiser.tap_residual``).
        ``pre(block_16k) -> block_16k`` runs on the capture before the denoiser (the fault
        fixer's sample repairs; it may hold samples back).
        ``media_clock`` (edge.clock.mediaclock.PtpLockedStream at the capture rate): every
        captured block is stamped with PTP time in the callback and the worker resamples the
        stream so it stays locked to PTP time rather than to the card's crystal."""
        self.source, self.denoiser, self.sinks, self.config = source, denoiser, sinks, config
        self.post, self.pre = post, pre
        self._tap = bool(getattr(post, "wants_background", False))
        if self._tap:
            denoiser.tap_residual = True
        self.media_clock = media_clock
        self.input_sinks = list(input_sinks)
        self.stats = LoopStats()
        self.stop_event = threading.Event()
        self.error: str | None = None
        self.audio_s = 0.0
        self.resampler = "identity"  # what the worker resamples with (in the summary)
        self.full_band_delay_ms: float | None = None  # input -> output when full band
        self.stop_requested = False
        self.setup_warnings: list[str] = []
        self._q: queue.Queue[np.ndarray] = queue.Queue(maxsize=config.queue_blocks)
        self._done = threading.Event()
        self.model_info: dict | None = None  # what runs (edge/liveslot.py), None = as built
        self.switches: list[dict] = []  # one record per model swap
        self._next_model: tuple | None = None
        self._swap_lock = threading.Lock()

    def request_model(self, model, info: dict) -> None:
        """Run ``model`` (already loaded: never load on the audio path) from the next block
        on; ``info`` describes it (version, sha256) and is kept in ``model_info``."""
        with self._swap_lock:
            self._next_model = (model, dict(info))

    def _swap_if_requested(self) -> dict | None:
        """In the worker, between blocks: swap in a requested model; returns its record."""
        if self._next_model is None:
            return None
        t0 = time.perf_counter()
        with self._swap_lock:
            model, info = self._next_model
            self._next_model = None
        try:
            self.denoiser.swap_model(model)
        except ValueError as e:
            self.switches.append({**info, "t": time.time(), "error": str(e)})
            return None
        self.stats.mark_switch()
        self.model_info = info
        rec = {**info, "t": time.time(), "swap_ms": round((time.perf_counter() - t0) * 1e3, 4)}
        self.switches.append(rec)
        return rec

    # -- capture side: runs in the audio callback; must never block
    def _push(self, block: np.ndarray) -> None:
        if self.media_clock is not None:
            self.media_clock.stamp(len(block))  # one clock read; order matches the queue
        try:
            self._q.put_nowait(block)
        except queue.Full:
            self.stats.overruns += 1

    # -- worker
    def _tune_thread(self) -> None:
        cfg = self.config
        if cfg.cpu_affinity:
            try:
                os.sched_setaffinity(0, cfg.cpu_affinity)  # 0 = this thread on Linux
            except (OSError, ValueError) as e:
                self.setup_warnings.append(f"cpu_affinity {list(cfg.cpu_affinity)}: {e}")
        if cfg.realtime_priority > 0:
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO,
                                      os.sched_param(cfg.realtime_priority))
            except (OSError, AttributeError) as e:
                self.setup_warnings.append(f"realtime_priority {cfg.realtime_priority}: {e}"
                                           " (needs CAP_SYS_NICE or a systemd unit)")

    def _worker(self) -> None:
        self._tune_thread()
        den, st, hop = self.denoiser, self.stats, self.denoiser.hop
        model_rate = den.fe.sample_rate
        full = self._full_band(model_rate)
        if full is not None:  # the band above the model's kept for sinks at the capture rate
            to_model, self.resampler = full.to_model, "linear-phase (full band)"
            self.full_band_delay_ms = round(1e3 * full.delay / full.rate, 3)
        else:
            to_model = StreamResampler(self.source.rate, model_rate,
                                       self.config.resample_quality)
            self.resampler = to_model.kind
        # a sink at the full-band rate takes the full-band output, the others their resampler
        to_sinks = [None if full is not None and s.rate == full.rate
                    else StreamResampler(model_rate, s.rate, self.config.resample_quality)
                    for s in self.sinks]
        pending = np.zeros(0, dtype=np.float32)
        limit = None if self.config.duration_s is None else int(
            round(self.config.duration_s * model_rate))
        produced = 0
        last_audio = time.monotonic()
        try:
            while not self.stop_event.is_set():
                try:
                    block = self._q.get(timeout=0.1)
                except queue.Empty:
                    if self.source.failed.is_set():
                        raise DeviceLostError(self.source.error or "input device lost") from None
                    if time.monotonic() - last_audio > self.config.stall_timeout_s:
                        raise DeviceLostError(
                            f"no audio from the input device for {self.config.stall_timeout_s:g}"
                            " s (device removed or sound server gone)") from None
                    if getattr(self.source, "done", None) is not None and self.source.done.is_set():
                        break
                    continue
                last_audio = time.monotonic()
                t0 = time.perf_counter()
                switched = self._swap_if_requested()
                st.blocks += 1
                st.note_queue(self._q.qsize())
                for s in self.input_sinks:
                    s.write(block)
                if self.media_clock is not None:
                    block = self.media_clock.process(block)
                block16 = to_model(block)
                if self.pre is not None:
                    block16 = self.pre(block16)
                pending = np.concatenate([pending, block16])
                n_hops = len(pending) // hop
                if limit is not None:
                    n_hops = min(n_hops, -(-(limit - produced) // hop))
                out = np.empty(n_hops * hop, dtype=np.float32)
                res = np.empty(n_hops * hop, dtype=np.float32) if self._tap else None
                gains: list[float] = []
                for i in range(n_hops):
                    th, ch = time.perf_counter(), time.thread_time()
                    out[i * hop:(i + 1) * hop] = den.process_hop(pending[i * hop:(i + 1) * hop])
                    st.hop_time.add(time.perf_counter() - th)
                    st.hop_cpu.add(time.thread_time() - ch)
                    if res is not None:
                        res[i * hop:(i + 1) * hop] = den.residual
                    if full is not None:
                        gains.append(full.hop_gain(den.last_mask))
                consumed, pending = pending[:n_hops * hop], pending[n_hops * hop:]
                if self.post is not None and len(out):
                    out = self.post(out, background=res) if self._tap else self.post(out)
                if limit is not None:
                    out = out[:limit - produced]
                produced += len(out)
                st.hops += n_hops
                wide = (None if full is None else
                        full.output(consumed[:len(out)], out, gains, den.bypass))
                for sink, rs in zip(self.sinks, to_sinks, strict=True):
                    y = wide if rs is None else rs(out)
                    if len(y):
                        sink.write(y)
                if n_hops:
                    st.loop_time.add((time.perf_counter() - t0) / n_hops)
                if switched is not None:  # the audio a swap can hold up: this block's time
                    switched["block_ms"] = round((time.perf_counter() - t0) * 1e3, 4)
                    switched["period_ms"] = round(len(block) / self.source.rate * 1e3, 3)
                self.audio_s = produced / model_rate
                if limit is not None and produced >= limit:
                    break
        except DeviceLostError as e:
            self.error = str(e)
        except Exception as e:  # report, never hang the main thread
            self.error = f"worker failed: {type(e).__name__}: {e}"
        finally:
            self._done.set()

    def _full_band(self, model_rate: int):
        """The full-band path (edge.fullband.FullBandStream) when a sink takes the capture
        rate above the model's, an integer multiple of it, and nothing before the denoiser
        may hold samples back (``pre``) or the split would lose its alignment; else None."""
        from edge.fullband import FullBandStream

        rate = self.source.rate
        if (self.pre is not None or rate <= model_rate or rate % model_rate
                or not any(s.rate == rate for s in self.sinks)):
            return None
        return FullBandStream(rate, self.denoiser.fe, self.denoiser.delay_samples)

    # -- control
    def stop(self) -> None:
        """Ask the loop to finish (signal handlers, other threads); sinks are closed cleanly."""
        self.stop_requested = True
        self.stop_event.set()

    def toggle_bypass(self) -> bool:
        self.denoiser.bypass = not self.denoiser.bypass
        self.stats.bypass_toggles += 1
        return self.denoiser.bypass

    def run(self, on_status=None, status_every_s: float = 0.25) -> dict:
        """Start source and worker, wait for the end, close everything; returns the summary.

        ``on_status(loop)`` is called from this thread every ``status_every_s``.
        """
        t_start = time.monotonic()
        cpu0 = time.process_time()
        worker = threading.Thread(target=self._worker, name="denoise-worker", daemon=True)
        worker.start()
        reason = "duration"
        try:
            self.source.start(self._push)
            while not self._done.wait(status_every_s):
                if on_status is not None:
                    on_status(self)
                if self.stop_event.is_set():
                    break
            if on_status is not None:
                on_status(self)
        finally:
            self.stop_event.set()
            self.source.stop()
            worker.join(5.0)
            for s in self.sinks + self.input_sinks:
                with contextlib.suppress(Exception):
                    s.close()
        if self.error:
            reason = "error"
        elif self.stop_requested:
            reason = "stopped"
        elif reason == "duration" and self.config.duration_s is None:
            reason = "end of input"
        wall = time.monotonic() - t_start
        summary = {"reason": reason, "error": self.error, "audio_s": round(self.audio_s, 3),
                   "wall_s": round(wall, 3),
                   "cpu_percent": round(100 * (time.process_time() - cpu0) / max(wall, 1e-9), 2),
                   "peak_rss_mb": round(_peak_rss_mb(), 1),
                   "capture_rate": self.source.rate, "period_frames": self.source.period,
                   "model_rate": self.denoiser.fe.sample_rate, "resampler": self.resampler,
                   "full_band_delay_ms": self.full_band_delay_ms,
                   "algorithmic_latency_ms": round(self.denoiser.algorithmic_latency_s * 1e3, 3),
                   "bypass": self.denoiser.bypass, "warnings": self.setup_warnings,
                   "model_switches": self.switches}
        summary.update(self.stats.summary())
        if self.media_clock is not None:
            ppm = self.media_clock.ppm
            summary["media_clock_ppm"] = None if ppm is None else round(float(ppm), 3)
        summary["input_overflows"] += int(self.source.input_overflows)
        summary["underruns"] += sum(int(getattr(s, "underruns", 0)) for s in self.sinks)
        summary["playback_dropped_periods"] = sum(int(getattr(s, "dropped_periods", 0))
                                                  for s in self.sinks)
        summary["playback_trimmed_ms"] = round(sum(float(getattr(s, "trimmed_ms", 0.0))
                                                    for s in self.sinks), 1)
        return summary


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@contextlib.contextmanager
def startup_toggles():
    """Count SIGUSR1 while the loop is being set up (model loading, device opening): its
    default action would kill the process. Yields the list of pending toggles, which
    ``signal_handlers(loop, pending=...)`` applies once the loop exists."""
    pending: list[int] = []
    old = signal.signal(signal.SIGUSR1, lambda signum, frame: pending.append(signum))
    try:
        yield pending
    finally:
        signal.signal(signal.SIGUSR1, old)


@contextlib.contextmanager
def signal_handlers(loop: LiveLoop, on_toggle=None, pending: list | None = None):
    """SIGINT/SIGTERM stop the loop cleanly; SIGUSR1 toggles bypass. Restored afterwards.
    ``pending``: SIGUSR1s caught during start-up (``startup_toggles``), applied now."""
    def stop(signum, frame):
        loop.stop()

    def toggle(signum, frame):
        state = loop.toggle_bypass()
        if on_toggle is not None:
            on_toggle(state)

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGUSR1, toggle)
    while pending:
        toggle(pending.pop(), None)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def systemd_unit(profile, exe: str = "/usr/local/bin/edge-denoise") -> str:
    """A systemd unit running ``edge-denoise live`` for ``profile`` (an edge.profile
    DeviceProfile): restart on failure, the runtime's user/group, CPU and priority hints."""
    from edge import validate

    r = profile.runtime
    # every value that reaches the unit is checked: a newline in one would add directives
    user = validate.unit_user("runtime.user", r.user, error=HushlinkError)
    group = validate.unit_user("runtime.group", r.group, error=HushlinkError)
    name = validate.systemd_exec_word(profile.name, name="profile name", error=HushlinkError)
    if not str(exe).startswith("/"):  # a leading - @ : + ! would be an ExecStart= prefix
        raise HushlinkError(f"the unit needs an absolute path to edge-denoise, not {exe!r}")
    exe_word = validate.systemd_exec_word(str(exe), program=True, name="program path",
                                          error=HushlinkError)
    lines = [
        "# hushlink live denoiser: capture -> denoise -> sink (edge-denoise live).",
        f"# Generated for profile {profile.name!r}: "
        f"edge-denoise live --profile {name} --print-unit",
        "[Unit]",
        "Description=hushlink live denoiser (edge-denoise live)",
        "After=sound.target network-online.target",
        "Wants=network-online.target",
        "StartLimitIntervalSec=60",
        "StartLimitBurst=10",
        "",
        "[Service]",
        "Type=simple",
        f"User={user}",
        f"Group={group}",
        "SupplementaryGroups=audio",
        "EnvironmentFile=-/etc/default/hushlink-live",
        # --state-dir: the flashed bundle (serve's slot store), switches hot-reloaded
        f"ExecStart={exe_word} live --profile {name} --quiet --state-dir /var/lib/hushlink "
        "--summary /var/lib/hushlink/live-summary.json $HUSHLINK_LIVE_ARGS",
        "StateDirectory=hushlink",
        # a device that disappears exits 1: restart and wait for it to come back
        "Restart=on-failure",
        "RestartSec=2",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=10",
        "Nice=-10",
        "LimitRTPRIO=99",
        "LimitMEMLOCK=infinity",
        "AmbientCapabilities=CAP_SYS_NICE",
    ]
    if r.cpu_affinity:
        lines.append("CPUAffinity=" + " ".join(str(c) for c in r.cpu_affinity))
    if r.realtime_priority > 0:
        lines.append(f"# the worker thread raises itself to SCHED_FIFO {r.realtime_priority} "
                     "(runtime.realtime_priority); CAP_SYS_NICE above allows it")
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)
