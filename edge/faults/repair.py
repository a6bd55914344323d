"""Sample repairs of the capture before the denoiser (``live --fix-faults``): dropout fill and
clipping repair, the offline mixer's ``conceal`` and ``declip`` run on a stream.

Both faults are properties of single samples (runs of exact zeros; runs of samples stuck at
the clip level), so they are found sample by sample here, without waiting for the
classifier's one-second blocks: by the time an event closes the dropout is long played. The
stage holds back ``LOOKAHEAD`` samples (6 ms at 16 kHz) so a run is seen whole (or at least
``MIN_ZEROS`` long) and the spline of a clipped run has neighbours on both sides. Each call
repairs the not-yet-emitted raw samples with the already-emitted (repaired) ones as the
past, so a run that spans calls continues from what was played: no seam.

A dropout that is still running at the end of the window is extrapolated forward (linear
prediction fading to silence over 20 ms, as packet-loss concealment does); once its end is
in view, the backward prediction from the audio after it is crossfaded in (as ``fill_gap``
does offline; a gap longer than 40 ms is silent in its middle, as it is offline).
"""

from __future__ import annotations

import numpy as np

from edge.faults.mixer import declip, lpc_extrapolate

LOOKAHEAD = 96  # samples held back (6 ms at 16 kHz)
FADE = 320  # a prediction fades to silence over 20 ms (mixer.fill_gap)
HISTORY = 480  # repaired past kept for the linear prediction (30 ms)
MIN_ZEROS = 24  # a dropout is at least this many exact zeros (edge.faults.measure.zero_runs)
EPS = 1e-6  # |x| at or below this is digital silence
MIN_CLIP_LEVEL = 0.02  # a plateau below this is quiet audio, not a clipper
CLIP_RUN = 3  # samples at exactly the same |value|, in a row, to call it a flat top
CLIP_HITS = 2  # flat tops at that level within the window before declipping
CLIP_HOLD = 8_000  # keep repairing at a found clip level this many samples (0.5 s)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    d = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(),
                    strict=True))


def clip_plateau(x: np.ndarray) -> float | None:
    """The |level| of at least ``CLIP_HITS`` runs of ``CLIP_RUN`` identical samples (a hard
    clipper's flat tops) above ``MIN_CLIP_LEVEL``, or None."""
    a = np.abs(np.asarray(x, dtype=np.float64))
    same = (a[1:] == a[:-1]) & (a[1:] >= MIN_CLIP_LEVEL)
    levels: dict[float, int] = {}
    for s, e in _runs(same):
        if e - s + 1 >= CLIP_RUN:
            levels[float(a[s])] = levels.get(float(a[s]), 0) + 1
    hits = [lv for lv, n in levels.items() if n >= CLIP_HITS]
    return max(hits) if hits else None


class CaptureRepair:
    """``repair(block) -> block``: dropout fill and clipping repair, ``LOOKAHEAD`` samples late.

    ``counts`` says how many dropout runs and clipped windows it repaired.
    """

    def __init__(self, lookahead: int = LOOKAHEAD):
        self.lookahead = lookahead
        self._raw = np.zeros(0, dtype=np.float64)  # captured, not yet emitted
        self._hist = np.zeros(0, dtype=np.float64)  # emitted (repaired), newest last
        self._in_gap = False  # the last emitted sample was inside a dropout
        self._pos = 0  # samples of the current dropout already emitted
        self._fwd = np.zeros(FADE)  # its forward prediction, faded
        self._clip_level: float | None = None
        self._clip_left = 0
        self.counts = {"dropout": 0, "clipping": 0}

    def __call__(self, block: np.ndarray) -> np.ndarray:
        self._raw = np.concatenate([self._raw, np.asarray(block, dtype=np.float64)])
        n_emit = len(self._raw) - self.lookahead
        if n_emit <= 0:
            return np.zeros(0, dtype=np.float32)
        h = len(self._hist)
        y = np.concatenate([self._hist, self._raw])
        y = self._fill_dropouts(y, h, n_emit)
        y = self._declip(y, h, n_emit)
        out = y[h:h + n_emit]
        self._hist = np.concatenate([self._hist, out])[-HISTORY:]
        self._raw = self._raw[n_emit:]
        return out.astype(np.float32)

    def _fill_dropouts(self, y: np.ndarray, h: int, n_emit: int) -> np.ndarray:
        zero = np.abs(self._raw) <= EPS
        gap_at_end = False
        for s, e in _runs(zero):
            continuing = s == 0 and self._in_gap
            if s >= n_emit or (e - s < MIN_ZEROS and not continuing):
                continue  # not emitted yet, or too short to be a dropout (a zero crossing)
            if s == 0 and not continuing and h == 0:
                continue  # silence at the very start of the stream is not a dropout
            ended = e <= n_emit  # then LOOKAHEAD samples after it are in view
            if not continuing:  # a new dropout: predict forward from the real past
                self._pos = 0
                nf = min(e - s, FADE) if ended else FADE
                fade = np.zeros(FADE)
                fade[:nf] = 0.5 + 0.5 * np.cos(np.pi * np.arange(nf) / nf)
                self._fwd = lpc_extrapolate(y[max(0, h + s - HISTORY):h + s], FADE) * fade
                self.counts["dropout"] += 1
            n = e - s
            fwd = np.zeros(n)
            k = max(0, min(n, FADE - self._pos))
            fwd[:k] = self._fwd[self._pos:self._pos + k]
            if ended:  # crossfade into the backward prediction from the audio after it
                bwd = lpc_extrapolate(y[h + e:h + e + HISTORY][::-1], n)[::-1]
                fl = min(n, FADE)
                bwd[:n - fl] = 0.0
                bwd[n - fl:] *= 0.5 - 0.5 * np.cos(np.pi * np.arange(fl) / fl)
                w = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)
                y[h + s:h + e] = (1 - w) * fwd + w * bwd
            else:
                y[h + s:h + e] = fwd
                gap_at_end = True
                self._pos += n_emit - s
        self._in_gap = gap_at_end
        return y

    def _declip(self, y: np.ndarray, h: int, n_emit: int) -> np.ndarray:
        level = clip_plateau(self._raw)
        if level is not None:
            self._clip_level, self._clip_left = level, CLIP_HOLD
        elif self._clip_left <= 0:
            self._clip_level = None
        self._clip_left -= n_emit
        if self._clip_level is None:
            return y
        thr = self._clip_level
        # only samples stuck exactly at the level, two or more in a row: a louder passage
        # after the clipping ends passes the level without sitting on it and is left alone
        at = np.abs(np.abs(self._raw) - thr) <= 1e-6 * thr
        at &= np.r_[at[1:], False] | np.r_[False, at[:-1]]
        if not at[:n_emit].any():
            return y
        self.counts["clipping"] += 1
        a = max(0, h - 24)  # the spline's neighbours before the window are emitted samples
        bad = np.r_[np.abs(y[a:h]) >= 0.995 * thr, at]  # emitted part: earlier repairs
        y = y.copy()
        y[a:] = declip(y[a:], thr, bad=bad)
        return y
