"""A coarse pre-check of each detected span before the precise recognition stands.

Stage one, coarse: cheap statistics of the span (its length, its 20 ms STFT frames) that a
real fault of the kind shows, with loose thresholds. Stage two, precise: the classifier's
event and ``measure.confirmed`` (a 0.01 Hz hum comb, the howl's growth, flat tops). A span
must pass both. The coarse stage adds persistence, which neither the classifier (one frame's
probability) nor the measurement (one long spectrum) looks at: hum, hiss and howl are steady
faults (the synthesis makes none shorter than 0.3 s; a beep or a noise burst in the room is
shorter; a howl, found late as it grows, may be short if its one tone holds on nearly every
frame), a howl is one tone that holds on most frames while it grows, hiss raises the noise
floor of its span over the audio around it, and a clipping call shorter than 0.1 s shows
flat tops. Pure numpy, no I/O.
"""

from __future__ import annotations

import numpy as np

from edge.dsp import DEFAULT_FRONT_END, stft

SR = 16_000
# the loose thresholds, each below every true event of its kind in 30 held-out clips
# (benchmarks/faults.py measures the recall they keep on other clips)
MIN_DURATION_S = {"hum": 0.3, "hiss": 0.3}  # the synthesis' shortest fault
# share of frames whose strongest bin is the howl's (±1), over the span or its last half
# (the tone grows out of the programme, so it may hold only there): true ≥ 0.75
HOWL_PERSISTENCE = 0.6
# a howl is found late, so a short one is allowed, but only as one tone held over the whole
# span (short beeps in the household recordings hold less: 0.59, 0.62)
HOWL_SHORT_S, HOWL_SHORT_PERSISTENCE = 0.3, 0.65
# a clipping call shorter than this must show flat tops at one level (repair.clip_plateau):
# a soft-clipping call that short is as often a loud vowel as a clipper
CLIP_SHORT_S = 0.1
HISS_ABOVE_CONTEXT_DB = 8.0  # the span's 3-8 kHz floor over the 0.5 s around it; true ≥ 10.9


def _frames_db(x: np.ndarray, s: int, e: int) -> np.ndarray:
    seg = np.asarray(x[max(0, s):min(len(x), e)], dtype=np.float32)
    if len(seg) < DEFAULT_FRONT_END.win:
        seg = np.pad(seg, (0, DEFAULT_FRONT_END.win - len(seg)))
    p = np.abs(stft(seg, DEFAULT_FRONT_END)) ** 2
    return 10 * np.log10(p + 1e-12)  # (frames, bins), 50 Hz per bin


def span_evidence(kind: str, x: np.ndarray, s: int, e: int, sr: int = SR) -> dict:
    """The coarse statistics of ``kind`` over samples [s, e) of ``x``."""
    hz = sr / DEFAULT_FRONT_END.n_fft
    if kind == "howl":
        db = _frames_db(x, s, e)
        lo, hi = int(150 / hz), int(7000 / hz)
        band = db[:, lo:hi]
        top = np.argmax(band, axis=1)
        mode = np.bincount(top).argmax()
        late = top[len(top) // 2:]
        held = np.mean(np.abs(late - np.bincount(late).argmax()) <= 1)
        return {"persistence": round(float(np.mean(np.abs(top - mode) <= 1)), 3),
                "persistence_late": round(float(held), 3)}
    if kind == "hiss":
        db = _frames_db(x, s, e)
        high = 10 * np.log10(np.sum(10 ** (db[:, int(3000 / hz):] / 10), axis=1) + 1e-12)
        full = 10 * np.log10(np.sum(10 ** (db / 10), axis=1) + 1e-12)
        w = int(0.5 * sr)
        ctx = np.r_[x[max(0, s - w):max(0, s)], x[min(len(x), e):e + w]]
        out = {"floor_db": round(float(np.percentile(high, 10) - np.percentile(full, 90)), 1)}
        if len(ctx) >= 1600:
            dc = _frames_db(ctx, 0, len(ctx))
            hc = 10 * np.log10(np.sum(10 ** (dc[:, int(3000 / hz):] / 10), axis=1) + 1e-12)
            out["above_ctx_db"] = round(float(np.percentile(high, 10) - np.percentile(hc, 10)),
                                        1)
        return out
    if kind == "clipping":
        from edge.faults.repair import clip_plateau

        return {"plateau": clip_plateau(x[max(0, s - 160):min(len(x), e + 160)]) is not None}
    return {}


def passes(kind: str, duration_s: float, ev: dict) -> bool:
    """Whether the coarse statistics allow a fault of ``kind`` lasting ``duration_s``."""
    if duration_s < MIN_DURATION_S.get(kind, 0.0):
        return False
    if kind == "howl":
        if duration_s < HOWL_SHORT_S:
            return ev["persistence"] >= HOWL_SHORT_PERSISTENCE
        return max(ev["persistence"], ev["persistence_late"]) >= HOWL_PERSISTENCE
    if kind == "hiss":  # hiss over the whole stream has no context to compare with
        return ev.get("above_ctx_db", np.inf) >= HISS_ABOVE_CONTEXT_DB
    if kind == "clipping" and duration_s < CLIP_SHORT_S:
        return ev["plateau"]
    return True


def precheck(kind: str, x: np.ndarray, s: int, e: int, sr: int = SR) -> bool:
    """The coarse stage for one span [s, e) of ``x``: ``passes`` of ``span_evidence``."""
    return passes(kind, (e - s) / sr, span_evidence(kind, x, s, e, sr))
