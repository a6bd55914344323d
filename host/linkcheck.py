"""What `apply` measures on the real link before and after a change: the telemetry's means
(latency, loss, bitrate, the receiver's buffer and playout delay) and PESQ-WB of a reference
clip as it came out of the receiver (``edge-denoise receive --tap``), so a strategy is judged
on what the link did, never on C evaluated at the parameters that were set.

The device streams the reference clip in a loop (``edge-denoise send CLIP --loop``); the tap
holds the played audio as raw float32 at 16 kHz, appended as it plays, so its last N seconds
are what the receiver played in the last N seconds.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edge.errors import HushlinkError

RATE = 16_000
FRAME = 320  # the sender pads the clip to whole 20 ms frames before looping it


class LinkCheckError(HushlinkError):
    pass


def is_live(rec: dict) -> bool:
    """A second in which a stream ran: packets arrived (bitrate > 0, a latency)."""
    lat = rec.get("latency_ms")
    return (lat is not None and lat == lat and not math.isinf(lat)
            and (rec.get("bitrate_kbps") or 0) > 0)


def summarize(records: list[dict]) -> dict:
    """Means of the measured link over ``records`` (``Telemetry.to_dict()``)."""
    live = [r for r in records if is_live(r)]
    out: dict = {"seconds": len(live), "idle_seconds": len(records) - len(live)}
    for k in ("latency_ms", "loss_pct", "jitter_ms", "bitrate_kbps", "late", "concealed",
              "snr_db", "buffer_ms", "delay_ms"):
        vals = [float(r[k]) for r in live if r.get(k) is not None]
        out[k] = round(float(np.mean(vals)), 3) if vals else None
    return out


def read_tap(path: str | Path, seconds: float) -> np.ndarray:
    """The last ``seconds`` of a receiver's tap (raw float32 LE, 16 kHz mono)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        n = min(int(seconds * RATE), size // 4)
        with p.open("rb") as f:
            f.seek(size // 4 * 4 - 4 * n)
            data = f.read(4 * n)
    except OSError as e:
        raise LinkCheckError(f"{path}: cannot read the receiver's tap ({e.strerror})") from None
    return np.frombuffer(data, "<f4").astype(np.float32)


def looped_reference(ref: np.ndarray, deg: np.ndarray) -> np.ndarray:
    """The stretch of the looping reference that ``deg`` is a received copy of: the clip
    padded to whole frames, tiled, and cut at the cross-correlation peak."""
    from scipy.signal import correlate

    clip = np.pad(ref, (0, -len(ref) % FRAME)).astype(np.float32)
    tiled = np.tile(clip, len(deg) // len(clip) + 3)
    c = correlate(tiled, deg, mode="valid", method="fft")
    lag = int(np.argmax(c[: len(clip)]))
    return tiled[lag: lag + len(deg)]


def pesq_wb(ref: np.ndarray, deg: np.ndarray) -> float:
    """PESQ-WB (ITU-T P.862.2) of ``deg`` against the matching stretch of the looped ``ref``."""
    try:
        from pesq import pesq
    except ImportError:
        raise LinkCheckError("PESQ needs the pesq package (pip install 'hushlink[host]')"
                             ) from None
    if len(deg) < 2 * RATE or float(np.max(np.abs(deg))) < 1e-4:
        raise LinkCheckError(f"the tap holds {len(deg) / RATE:.1f} s of sound; is the "
                             "receiver writing it (`edge-denoise receive --tap FILE`)?")
    return float(pesq(RATE, looped_reference(ref, deg), deg, "wb"))


def stretch_scores(ref: np.ndarray, deg: np.ndarray) -> list[float]:
    """PESQ-WB of each clip-long stretch of ``deg`` (the whole of it when shorter)."""
    n = len(ref) + (-len(ref) % FRAME)
    parts = [deg[i:i + n] for i in range(0, len(deg) - n + 1, n)] or [deg]
    return [pesq_wb(ref, p) for p in parts]


class AudioProbe:
    """PESQ-WB of the last ``seconds`` the receiver played, against the looped reference,
    per clip-long stretch. ``pesq_wb`` is the best stretch: the quality the parameters deliver
    where the link happened to lose least. Where random losses fall moves one stretch's score
    by 0.1–0.4 at 2–5 % loss (measured), more than bitrate moves it, so a mean or median of a
    few stretches compares luck; the median is reported as ``pesq_wb_median``."""

    def __init__(self, reference: str | Path, tap: str | Path):
        from edge.audio import load_audio

        self.ref = load_audio(reference).samples
        self.tap = Path(tap)

    def __call__(self, seconds: float) -> dict:
        scores = stretch_scores(self.ref, read_tap(self.tap, seconds))
        return {"pesq_wb": round(max(scores), 3),
                "pesq_wb_median": round(float(np.median(scores)), 3),
                "pesq_wb_stretches": [round(x, 3) for x in scores]}
