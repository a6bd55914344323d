"""Fault synthesis: inject recording faults into real speech + room noise, with exact labels.

Every fault is a pure function ``inject_<kind>(x, start, end, rng, **params) -> (y, Fault)``
over 16 kHz float32 audio; ``start``/``end`` are sample indices and the returned ``Fault``
holds the span where the fault really alters the audio (clipping: first/last sample whose
input exceeded the clip level) and the parameters used, so tests can inject a known fault at
a known time and the classifier is trained on sample-exact labels.

Parameters are drawn from realistic ranges: mains hum 50/60 Hz (±0.4 %) with 3-7 decaying
harmonics; hard or soft clipping at 12-50 % of the segment's peak; broadband (white or pink)
hiss; dropouts (digital zeros) of 5-200 ms; DC offsets of 0.03-0.3 FS; low-frequency
wind/rumble bursts (noise low-passed at 30-120 Hz, gusting); feedback howl as a narrowband
tone at 400-4000 Hz growing by 15-30 dB. Additive faults fade in/out over 2-10 ms (the label
spans the fade) so the synthesis itself adds no clicks. ``Synth`` makes whole training clips
(several faults each) from a speaker-disjoint split of ../shared/data, deterministic per seed.

Clipping is labelled where it is measurable, not over the whole injected span: a frame is
"clipping" when its 20 ms window holds at least ``CLIP_MIN_SAMPLES`` samples whose input
exceeded the clip level (hard: cut flat; soft: saturated by tanh to <= 76 % of the input).
Quiet syllables and pauses inside the span pass the clipper unchanged, and no classifier
can (or should) call them clipped.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.signal import butter, lfilter, sosfilt

from edge.audio import load_audio
from edge.errors import HushlinkError
from edge.faults import FAULT_TYPES

RATE = 16_000
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
HOLDOUT_BUCKETS = 5  # 1 in 5 speakers (by label hash) is held out for test/eval
CLIP_JOIN = 960  # samples (60 ms): clipped runs closer than this are one audible span
CLIP_MIN_SAMPLES = 3  # clipped samples a 20 ms frame needs to be labelled clipping
PROGRAMME_PEAK = 0.98  # the fault-free programme is scaled down to stay below this (no clipping)
FLOOR_DBFS = (-85.0, -70.0)  # a microphone + ADC self-noise: a live recording is never 0.0


@dataclass(frozen=True)
class Fault:
    """One injected fault: ``kind`` over samples ``[start, end)`` with its parameters."""

    kind: str
    start: int
    end: int
    params: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "start": self.start, "end": self.end,
                "start_s": self.start / RATE, "end_s": self.end / RATE, **self.params}


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def _fade(n: int, fade: int) -> np.ndarray:
    """(n,) envelope rising/falling over ``fade`` samples (raised cosine)."""
    env = np.ones(n)
    fade = max(1, min(fade, n // 2))
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
    env[:fade] = ramp
    env[n - fade:] = ramp[::-1]
    return env


def _ref_level(x: np.ndarray, start: int, end: int) -> float:
    """Speech level the fault is scaled against: RMS of the louder half of the context."""
    ctx = x[max(0, start - RATE):min(len(x), end + RATE)]
    frames = ctx[: len(ctx) // 160 * 160].reshape(-1, 160)
    if len(frames) == 0:
        return 0.05
    e = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    return float(max(np.mean(np.sort(e)[len(e) // 2:]), 1e-3))


def _add(x: np.ndarray, start: int, end: int, sig: np.ndarray, fade: int) -> np.ndarray:
    y = x.copy()
    y[start:end] += (sig * _fade(end - start, fade)).astype(np.float32)
    return y


# --------------------------------------------------------------------------------- faults
def inject_hum(x, start, end, rng, f0=None, snr_db=None, n_harm=None):
    f0 = float(f0 if f0 is not None else rng.choice([50.0, 60.0]) * (1 + rng.uniform(-4e-3, 4e-3)))
    snr_db = float(snr_db if snr_db is not None else rng.uniform(-5.0, 15.0))
    n_harm = int(n_harm if n_harm is not None else rng.integers(3, 8))
    t = np.arange(end - start) / RATE
    decay = rng.uniform(0.3, 0.8)
    sig = sum(decay ** (k - 1) * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
              for k in range(1, n_harm + 1))
    sig *= _ref_level(x, start, end) / rms(sig) * 10 ** (-snr_db / 20)
    fade = int(rng.integers(32, 160))
    return _add(x, start, end, sig, fade), Fault("hum", start, end, {
        "f0_hz": round(f0, 3), "snr_db": round(snr_db, 2), "harmonics": n_harm})


def inject_hiss(x, start, end, rng, snr_db=None, colour=None):
    snr_db = float(snr_db if snr_db is not None else rng.uniform(0.0, 18.0))
    colour = colour or str(rng.choice(["white", "pink"]))
    sig = rng.standard_normal(end - start)
    if colour == "pink":  # Paul Kellet's economy pink filter
        sig = lfilter([0.049922, -0.095993, 0.050612, -0.004408],
                      [1, -2.494956, 2.017265, -0.522189], sig)
    sig = sosfilt(butter(2, 120, "highpass", fs=RATE, output="sos"), sig)
    sig *= _ref_level(x, start, end) / rms(sig) * 10 ** (-snr_db / 20)
    return _add(x, start, end, sig, int(rng.integers(32, 160))), Fault("hiss", start, end, {
        "snr_db": round(snr_db, 2), "colour": colour})


def inject_rumble(x, start, end, rng, corner_hz=None, snr_db=None):
    corner = float(corner_hz if corner_hz is not None else rng.uniform(30.0, 120.0))
    snr_db = float(snr_db if snr_db is not None else rng.uniform(-12.0, 3.0))
    n = end - start
    sig = sosfilt(butter(4, corner, "lowpass", fs=RATE, output="sos"), rng.standard_normal(n))
    gust_hz = rng.uniform(0.5, 3.0)  # wind gusts: slow amplitude modulation
    sig *= 0.6 + 0.4 * np.sin(2 * np.pi * gust_hz * np.arange(n) / RATE + rng.uniform(0, 6.3))
    sig *= _ref_level(x, start, end) / rms(sig) * 10 ** (-snr_db / 20)
    return _add(x, start, end, sig, int(rng.integers(32, 160))), Fault("rumble", start, end, {
        "corner_hz": round(corner, 1), "snr_db": round(snr_db, 2)})


def inject_howl(x, start, end, rng, freq_hz=None, final_db=None, growth_db=None):
    f = float(freq_hz if freq_hz is not None else np.exp(rng.uniform(np.log(400), np.log(4000))))
    final_db = float(final_db if final_db is not None else rng.uniform(0.0, 12.0))
    growth = float(growth_db if growth_db is not None else rng.uniform(15.0, 30.0))
    n = end - start
    t = np.arange(n) / RATE
    env_db = final_db - growth * (1 - t / t[-1]) if n > 1 else np.array([final_db])
    sig = np.sqrt(2) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    sig *= _ref_level(x, start, end) * 10 ** (env_db / 20)
    sig = np.clip(sig, -0.95, 0.95)
    return _add(x, start, end, sig, int(rng.integers(32, 160))), Fault("howl", start, end, {
        "freq_hz": round(f, 2), "final_db": round(final_db, 2), "growth_db": round(growth, 2)})


def inject_dc(x, start, end, rng, offset=None):
    off = float(offset if offset is not None else rng.choice([-1, 1]) * rng.uniform(0.03, 0.3))
    y = x.copy()
    y[start:end] += np.float32(off)
    return y, Fault("dc", start, end, {"offset": round(off, 4)})


def inject_clipping(x, start, end, rng, level=None, mode=None):
    """Clip at ``level`` x the segment's peak (hard) or saturate softly (tanh).

    The clipped samples are those whose input exceeded the clip level ``thr`` (hard: cut to
    it; soft: squashed to ``thr * tanh(x / thr)``, at least 24 % below the input); the Fault
    spans the first to the last of them, ``runs`` lists their exact runs and ``spans`` the
    runs joined across gaps under 60 ms (one audible event).
    """
    level = float(level if level is not None else rng.uniform(0.12, 0.5))
    mode = mode or str(rng.choice(["hard", "soft"]))
    seg = x[start:end].astype(np.float64)
    thr = level * float(np.max(np.abs(seg)) + 1e-9)
    out = np.clip(seg, -thr, thr) if mode == "hard" else thr * np.tanh(seg / thr)
    y = x.copy()
    y[start:end] = out.astype(np.float32)
    d = np.diff(np.r_[0, (np.abs(seg) > thr).astype(np.int8), 0])
    runs = [[start + int(a), start + int(b)]
            for a, b in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1), strict=True)]
    s, e = (runs[0][0], runs[-1][1]) if runs else (start, start)
    spans: list[list[int]] = []
    for a, b in runs:
        if spans and a - spans[-1][1] <= CLIP_JOIN:
            spans[-1][1] = b
        else:
            spans.append([a, b])
    return y, Fault("clipping", s, e, {"threshold": round(thr, 5), "mode": mode,
                                       "spans": spans, "runs": runs})


def inject_dropout(x, start, end, rng):
    y = x.copy()
    y[start:end] = 0.0
    return y, Fault("dropout", start, end, {"ms": round((end - start) / RATE * 1000, 1)})


INJECT = {"hum": inject_hum, "clipping": inject_clipping, "hiss": inject_hiss,
          "dropout": inject_dropout, "dc": inject_dc, "rumble": inject_rumble,
          "howl": inject_howl}
ORDER = ("hum", "hiss", "rumble", "howl", "dc", "clipping", "dropout")  # physical order


def inject(x: np.ndarray, kind: str, start: int, end: int, seed: int = 0, **params
           ) -> tuple[np.ndarray, Fault]:
    """Inject one fault of ``kind`` over samples [start, end) of (n,) float32 ``x``."""
    if kind not in INJECT:
        raise HushlinkError(f"unknown fault {kind!r}; use one of {', '.join(FAULT_TYPES)}")
    if not 0 <= start < end <= len(x):
        raise HushlinkError(f"fault span [{start}, {end}) outside the clip of {len(x)} samples")
    return INJECT[kind](np.asarray(x, dtype=np.float32), start, end,
                        np.random.default_rng(seed), **params)


def label_spans(f: Fault) -> list[tuple[int, int]]:
    """The [start, end) sample spans where a fault is audible (clipping: its clipped runs)."""
    spans = f.params.get("spans")
    return [(int(a), int(b)) for a, b in spans] if spans else [(f.start, f.end)]


def clipped_frames(f: Fault, n_frames: int, hop: int = 160) -> np.ndarray:
    """(n_frames,) bool: frame t's window ``[t*hop - hop, t*hop + hop)`` holds at least
    ``CLIP_MIN_SAMPLES`` clipped samples (edge.dsp's 20 ms / 10 ms framing)."""
    n = n_frames * hop + 2 * hop
    mask = np.zeros(n + 1, dtype=np.int32)
    for a, b in f.params.get("runs", []):
        a, b = min(a + hop, n), min(b + hop, n)  # index + hop: room for frame 0's past
        mask[a] += 1
        mask[b] -= 1
    c = np.concatenate([[0], np.cumsum(np.cumsum(mask)[:n])])  # c[i] = clipped before i
    lo = np.arange(n_frames) * hop
    return (c[lo + 2 * hop] - c[lo]) >= CLIP_MIN_SAMPLES


def frame_labels(faults: list[Fault], n_frames: int, hop: int = 160) -> np.ndarray:
    """(n_frames, n_types) 0/1: frame t (centred on sample t*hop) lies inside a fault span
    (clipping: its window holds clipped samples, ``clipped_frames``).

    Inside a dropout only ``dropout`` is on: nothing else can be heard in digital silence.
    """
    y = np.zeros((n_frames, len(FAULT_TYPES)), dtype=np.float32)
    centres = np.arange(n_frames) * hop
    drop = np.zeros(n_frames, dtype=bool)
    for f in faults:
        on = np.zeros(n_frames, dtype=bool)
        if f.kind == "clipping" and "runs" in f.params:
            on |= clipped_frames(f, n_frames, hop)
        else:
            for s, e in label_spans(f):
                on |= (centres >= s) & (centres < e)
        if f.kind == "dropout":  # short dropouts: the frame that holds them
            on |= (np.abs(centres - (f.start + f.end) / 2) <= hop / 2)
            drop |= (centres >= f.start) & (centres < f.end)
        y[on, FAULT_TYPES.index(f.kind)] = 1.0
    y[drop] = 0.0
    y[drop, FAULT_TYPES.index("dropout")] = 1.0
    return y


# ------------------------------------------------------------------------------- corpus
def _bucket(key: str) -> int:
    return int(hashlib.sha1(key.encode()).hexdigest(), 16) % HOLDOUT_BUCKETS


def corpus(split: str, shared: Path = SHARED) -> tuple[list[Path], list[Path]]:
    """(speech files, noise files) of ``split`` ("train" or "test"), speaker/file disjoint."""
    man = shared / "data" / "manifest.csv"
    if not man.is_file():
        raise HushlinkError(f"{man}: corpus manifest not found (expected ../shared/data)")
    speech, noise = [], []
    with open(man, newline="") as fh:
        for r in csv.DictReader(fh):
            f = r["file"]
            held = _bucket(r["label"] if f.startswith("speech/") else f) == 0
            if held != (split == "test"):
                continue
            if f.startswith("speech/"):
                speech.append(shared / "data" / f)
            elif f.startswith("noise/"):
                noise.append(shared / "data" / f)
    return speech, noise


class AudioCache:
    """Loads corpus files once (16 kHz mono float32)."""

    def __init__(self) -> None:
        self._d: dict[Path, np.ndarray] = {}

    def get(self, p: Path) -> np.ndarray:
        if p not in self._d:
            self._d[p] = load_audio(p, allow_silence=True).samples
        return self._d[p]


@dataclass
class Clip:
    audio: np.ndarray  # (n,) float32 with faults
    clean: np.ndarray  # (n,) float32 the same programme without faults
    faults: list[Fault]


class Synth:
    """Random training/test clips: speech + quiet room noise + 0-3 faults, one rng per seed."""

    def __init__(self, split: str = "train", seconds: float = 4.0, shared: Path = SHARED,
                 p_clean: float = 0.3):
        self.speech, self.noise = corpus(split, shared)
        if not self.speech or not self.noise:
            raise HushlinkError(f"no {split} speech/noise found under {shared / 'data'}")
        self.n = int(seconds * RATE)
        self.p_clean = p_clean
        self.cache = AudioCache()

    def programme(self, rng: np.random.Generator) -> np.ndarray:
        """Fault-free programme: speech utterances back to back + room noise at 25-50 dB SNR +
        the self-noise of a microphone and ADC (-85 to -70 dBFS; the corpus's noise files have
        stretches of digital zeros, which where they meet a pause between utterances made
        "clean" programme with real dropouts in it), scaled down where its peak would pass
        ``PROGRAMME_PEAK`` (it was clipped at full scale: real clipping in "clean" audio)."""
        out = np.zeros(0, dtype=np.float32)
        while len(out) < self.n:
            s = self.cache.get(self.speech[rng.integers(len(self.speech))])
            s = s / (rms(s) + 1e-9) * 10 ** (rng.uniform(-30, -18) / 20)
            out = np.concatenate([out, np.zeros(int(rng.integers(0, 4000)), np.float32), s])
        off = int(rng.integers(0, max(1, len(out) - self.n)))
        speech = out[off:off + self.n].astype(np.float32)
        nz = self.cache.get(self.noise[rng.integers(len(self.noise))])
        if len(nz) < self.n:
            nz = np.tile(nz, self.n // max(len(nz), 1) + 1)
        o = int(rng.integers(0, len(nz) - self.n + 1))
        nz = nz[o:o + self.n]
        nz = nz / (rms(nz) + 1e-9) * rms(speech) * 10 ** (-rng.uniform(25, 50) / 20)
        floor = rng.standard_normal(self.n) * 10 ** (rng.uniform(*FLOOR_DBFS) / 20)
        y = speech + nz + floor
        peak = float(np.max(np.abs(y)))  # a careful engineer's gain: the programme never clips
        return (y * (PROGRAMME_PEAK / peak if peak > PROGRAMME_PEAK else 1.0)).astype(np.float32)

    def spans(self, rng: np.random.Generator) -> list[tuple[str, int, int]]:
        if rng.random() < self.p_clean:
            return []
        kinds = rng.choice(FAULT_TYPES, size=int(rng.integers(1, 4)), replace=False)
        out = []
        for k in kinds:
            if k == "dropout":
                length = int(rng.uniform(0.005, 0.2) * RATE)
            else:
                length = int(rng.uniform(0.3, 0.6 * self.n / RATE) * RATE)
            s = int(rng.integers(0, self.n - length))
            out.append((str(k), s, s + length))
        return sorted(out, key=lambda t: ORDER.index(t[0]))

    def clip(self, seed: int) -> Clip:
        rng = np.random.default_rng(seed)
        clean = self.programme(rng)
        x, faults = clean, []
        for kind, s, e in self.spans(rng):
            x, f = INJECT[kind](x, s, e, rng)
            if f.end > f.start:
                faults.append(f)
        return Clip(np.clip(x, -1, 1).astype(np.float32), clean, faults)
