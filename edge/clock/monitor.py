"""Read ptp4l's state over its UDS with pmc, keep a rolling window, decide the lock state.

``query_pmc`` is the I/O (one pmc call); ``parse_pmc`` and ``Monitor`` are plain logic with
times passed in, so the lock decisions are tested without a network.

Lock states: ``locked`` (a slave port in SLAVE state whose recent offsets are all within the
profile's lock_threshold_ns), ``holdover`` (was locked; fresh data stopped or an excursion,
for less than holdover_s), ``unlocked`` (everything else: LISTENING, UNCALIBRATED — the servo
has not locked, e.g. with free_running — FAULTY, or no data), ``master`` (this clock is the
reference its port serves).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge.clock.config import ClockError, require_linuxptp
from edge.clock.ptpmath import drift_ppm, rms

PMC_QUERIES = ("GET CURRENT_DATA_SET", "GET TIME_STATUS_NP", "GET PORT_DATA_SET")
STALE_OFFSET_S = 3.0  # an offset older than this is history, not the current offset
_FREQ_RE = re.compile(r"master offset\s+(-?\d+)\s+s(\d)\s+freq\s+([+-]?\d+)")


@dataclass(frozen=True)
class PtpSample:
    """One pmc reading. ns unless named otherwise; None where ptp4l did not answer."""

    t_s: float  # local monotonic time of the reading, s
    port_state: str | None = None
    offset_ns: float | None = None  # CURRENT_DATA_SET offsetFromMaster
    path_delay_ns: float | None = None  # CURRENT_DATA_SET meanPathDelay
    master_offset_ns: float | None = None  # TIME_STATUS_NP master_offset
    ingress_ns: int | None = None  # TIME_STATUS_NP ingress_time: changes with each new Sync
    gm_identity: str | None = None
    gm_present: bool = False
    freq_ppb: float | None = None  # servo's frequency adjustment (ptp4l log), when it runs

    @property
    def has_master(self) -> bool:
        return self.port_state in ("SLAVE", "UNCALIBRATED") and self.gm_present


def parse_pmc(text: str, t_s: float) -> PtpSample:
    """Parse the text pmc prints for PMC_QUERIES."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith("sending"):
            fields.setdefault(parts[0], parts[1])

    def num(key: str) -> float | None:
        try:
            return float(fields[key])
        except (KeyError, ValueError):
            return None

    ingress = num("ingress_time")
    return PtpSample(
        t_s=t_s, port_state=fields.get("portState"), offset_ns=num("offsetFromMaster"),
        path_delay_ns=num("meanPathDelay"), master_offset_ns=num("master_offset"),
        ingress_ns=int(ingress) if ingress is not None else None,
        gm_identity=fields.get("gmIdentity"), gm_present=fields.get("gmPresent") == "true")


def last_freq_ppb(log_path: Path, tail_bytes: int = 4096) -> float | None:
    """The servo's last frequency adjustment (ppb) from ptp4l's -m log, None if none yet."""
    try:
        with open(log_path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - tail_bytes))
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    hits = _FREQ_RE.findall(text)
    return float(hits[-1][2]) if hits else None


def query_pmc(uds: Path, domain: int = 0, timeout_s: float = 2.0,
              log_path: Path | None = None) -> PtpSample:
    """Ask the ptp4l behind ``uds`` for its data sets (one pmc call). An unreachable ptp4l
    gives a sample with only t_s set."""
    exe = require_linuxptp("pmc")["pmc"]
    t = time.monotonic()
    try:
        r = subprocess.run([exe, "-u", "-b", "0", "-d", str(domain), "-s", str(uds),
                            *PMC_QUERIES],
                           capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return PtpSample(t_s=t)
    s = parse_pmc(r.stdout, t)
    if log_path is not None:
        s = PtpSample(**{**asdict(s), "freq_ppb": last_freq_ppb(log_path)})
    return s


@dataclass(frozen=True)
class ClockStatus:
    """What ``clock status`` prints; ns and ppm; None where not known (never invented)."""

    iface: str
    role: str
    lock: str  # locked | holdover | unlocked | master
    reason: str
    port_state: str | None
    offset_ns: float | None
    path_delay_ns: float | None
    offset_rms_ns: float | None
    drift_ppm: float | None
    freq_ppb: float | None
    gm_identity: str | None
    samples: int
    age_s: float | None  # seconds since the last fresh offset

    def to_dict(self) -> dict:
        return asdict(self)


class Monitor:
    """Rolling window of pmc samples and the lock decision.

    ``lock_threshold_ns``, ``holdover_s`` and ``window_s`` come from the profile's [ptp].
    ``add`` takes samples in time order; ``status(now_s)`` summarises the window.
    """

    def __init__(self, iface: str, role: str, *, lock_threshold_ns: float, holdover_s: float,
                 window_s: float, lock_samples: int = 5):
        self.iface, self.role = iface, role
        self.lock_threshold_ns = lock_threshold_ns
        self.holdover_s = holdover_s
        self.window_s = window_s
        self.lock_samples = lock_samples
        self.samples: deque[PtpSample] = deque()
        self.fresh: deque[PtpSample] = deque()  # samples with a new Sync behind them
        self._last_ingress: int | None = None
        self._last_locked_s: float | None = None
        self.last: PtpSample | None = None

    def add(self, s: PtpSample) -> None:
        self.last = s
        self.samples.append(s)
        # A new Sync has a new ingress time; before the first delay measurement ptp4l
        # reports offset and path delay 0: not a measurement yet.
        new_sync = (s.has_master and s.offset_ns is not None and bool(s.path_delay_ns)
                    and s.ingress_ns not in (None, 0, self._last_ingress))
        if new_sync:
            self.fresh.append(s)
            self._last_ingress = s.ingress_ns
        while self.samples and self.samples[0].t_s < s.t_s - self.window_s:
            self.samples.popleft()
        while self.fresh and self.fresh[0].t_s < s.t_s - self.window_s:
            self.fresh.popleft()
        if self._in_lock(s.t_s):
            self._last_locked_s = s.t_s

    def _in_lock(self, now_s: float) -> bool:
        s = self.last
        if s is None or s.port_state != "SLAVE" or len(self.fresh) < self.lock_samples:
            return False
        recent = list(self.fresh)[-self.lock_samples:]
        if now_s - recent[-1].t_s > 2.5:
            return False
        return all(abs(r.offset_ns) <= self.lock_threshold_ns for r in recent)

    def offsets(self) -> tuple[np.ndarray, np.ndarray]:
        """(t_s, offset_ns) of the fresh samples in the window, shape (n,) each."""
        return (np.array([s.t_s for s in self.fresh]),
                np.array([s.offset_ns for s in self.fresh], float))

    def status(self, now_s: float | None = None) -> ClockStatus:
        now = self.last.t_s if now_s is None and self.last else (now_s or 0.0)
        s = self.last
        t, off = self.offsets()
        age = now - t[-1] if len(t) else None
        fresh = age is not None and age <= STALE_OFFSET_S
        drift = None
        if len(t) >= 5 and t[-1] - t[0] >= 4:
            drift = round(drift_ppm(t, off), 4)
        if s is None or s.port_state is None:
            lock, reason = "unlocked", "no answer from ptp4l over its pmc socket"
        elif s.port_state in ("MASTER", "GRAND_MASTER") and self.role == "master":
            lock, reason = "master", "this clock is the reference (port MASTER)"
        elif self._in_lock(now):
            lock, reason = "locked", (f"port SLAVE, last {self.lock_samples} offsets within "
                                      f"{self.lock_threshold_ns:g} ns")
        elif (self._last_locked_s is not None and now - self._last_locked_s <= self.holdover_s):
            lock, reason = "holdover", (f"lost lock {now - self._last_locked_s:.0f} s ago "
                                        f"(holdover {self.holdover_s:g} s)")
        elif s.port_state == "UNCALIBRATED":
            lock, reason = "unlocked", ("port UNCALIBRATED: master selected, servo not locked"
                                        + (" (offsets are fresh)" if age is not None
                                           and age < 3 else ""))
        else:
            lock, reason = "unlocked", f"port {s.port_state}"
        return ClockStatus(
            iface=self.iface, role=self.role, lock=lock, reason=reason,
            port_state=s.port_state if s else None,
            # the last offset and delay only while fresh: never stale numbers as current
            offset_ns=t_last(off) if fresh else None,
            path_delay_ns=self.fresh[-1].path_delay_ns if fresh else None,
            offset_rms_ns=round(rms(off), 1) if len(off) else None, drift_ppm=drift,
            freq_ppb=s.freq_ppb if s else None, gm_identity=s.gm_identity if s else None,
            samples=len(off), age_s=round(age, 2) if age is not None else None)


def t_last(a: np.ndarray) -> float | None:
    return float(a[-1]) if len(a) else None


def require_instance(uds: Path) -> None:
    if not uds.exists():
        raise ClockError(f"no ptp4l socket at {uds}: is `edge-denoise clock start` running "
                         "for this interface?")
