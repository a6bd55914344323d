"""Data pipeline: scan speech/noise/RIR folders, split speakers, mix on the fly (SPEC §1).

* ``scan`` walks the folders (any format soundfile reads), skips and reports unreadable or
  empty files, and assigns each speech file a speaker: the ``label`` column of the corpus's
  ``manifest.csv`` when there is one, else the file's parent folder (a user's own folders).
* ``split_speakers`` makes a speaker-disjoint train/val/test split, deterministic with a seed;
  noise files are split by file the same way so the test noises are unseen too.
* ``Mixer`` builds training examples on the fly: random crop, speed perturbation, random EQ
  and spectral tilt, level changes within the utterance, room reverberation on a few mixtures
  (target = direct path + early reflections), noise at a random offset, a second noise or
  babble made from other training speakers, SNR in [-5, 20] dB and a random overall level.
  Every random choice comes from one ``numpy.random.Generator``, so a seed reproduces a batch.
* Features and targets come from ``edge.dsp`` (the one front end): log-power of the noisy STFT
  and the ideal ratio mask ``clip(|S| / (|X| + eps), 0, 1)``.

The narrowband digit recordings (speech_narrowband/) are not used: they carry no energy above
4 kHz and would teach the model that wideband speech is noise.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy.signal import fftconvolve, lfilter

from edge.audio import load_audio
from edge.dsp import DEFAULT_FRONT_END, FrontEnd, ideal_ratio_mask, log_power, stft
from edge.errors import AudioError, HushlinkError
from edge.outpaths import atomic_temp
from training.config import DataConfig

RATE = 16_000
AUDIO_EXT = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".opus"}
SPLITS = ("train", "val", "test")


class DataError(HushlinkError):
    """Data folders that cannot be used (missing, empty, no readable audio)."""


# ---------------------------------------------------------------------------------- scanning
def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXT and p.is_file())


def _labels(root: Path) -> dict[str, str]:
    """file (relative to root) -> speaker label from the corpus's manifest.csv, if present."""
    f = root / "manifest.csv"
    if not f.is_file():
        return {}
    with open(f, newline="") as fh:
        return {r["file"]: r["label"] for r in csv.DictReader(fh) if r.get("label")}


def _probe(p: Path) -> tuple[float | None, str | None]:
    """(seconds, None) for a usable file, (None, reason) otherwise."""
    try:
        info = sf.info(str(p))
    except Exception as e:  # soundfile raises several types for corrupt/unknown files
        return None, f"unreadable ({str(e).splitlines()[0][:80] if str(e) else type(e).__name__})"
    if info.frames <= 0 or info.samplerate <= 0:
        return None, "empty"
    return info.frames / info.samplerate, None


def _resolve(root: Path, d: str, corpus_root: str = "build/corpus") -> Path:
    """A data folder: absolute, ``corpus:SUB`` inside the built corpus cache, or relative
    to the data root."""
    if d.startswith("corpus:"):
        base = Path(corpus_root)
        base = base if base.is_absolute() else Path(__file__).resolve().parents[1] / base
        if not base.is_dir():
            raise DataError(f"{base}: corpus not built (run `make corpus`, or drop the "
                            f"corpus: folders from the config)")
        return base / d.removeprefix("corpus:")
    p = Path(d)
    return p if p.is_absolute() else root / p


def scan(cfg: DataConfig, root: Path, progress: Callable[[int, int], None] | None = None
         ) -> dict:
    """Walk the speech, noise and RIR folders; returns entries plus the skipped files."""
    labels = _labels(root)
    kinds = {"speech": cfg.speech_dirs, "noise": cfg.noise_dirs, "rir": cfg.rir_dirs}
    found: dict[str, list[tuple[Path, int]]] = {}
    for kind, dirs in kinds.items():
        files: list[tuple[Path, int]] = []
        for i, d in enumerate(dirs):
            folder = _resolve(root, d, cfg.corpus_root)
            if not folder.is_dir():
                if kind == "rir":
                    continue  # reverberation is optional
                raise DataError(f"{folder}: {kind} folder not found")
            got = _audio_files(folder)
            if not got and kind != "rir":
                raise DataError(f"{folder}: no audio files ({', '.join(sorted(AUDIO_EXT))})")
            files += [(g, i) for g in got]
        found[kind] = files
    total = sum(len(v) for v in found.values())
    out: dict = {"root": str(root), "speech": [], "noise": [], "rir": [], "skipped": []}
    done = 0
    for kind, files in found.items():
        for p, group in files:
            seconds, why = _probe(p)
            done += 1
            if progress is not None and done % 50 == 0:
                progress(done, total)
            rel = os.path.relpath(p, root)
            if why is not None:
                out["skipped"].append({"file": rel, "reason": why})
                continue
            entry = {"file": rel, "seconds": round(seconds, 3), "group": group}
            if kind == "speech":
                entry["speaker"] = labels.get(rel) or p.parent.name
            elif kind == "noise":
                entry["category"] = p.parent.name
            out[kind].append(entry)
    for kind in ("speech", "noise"):
        if not out[kind]:
            raise DataError(f"no readable {kind} files in {', '.join(kinds[kind])} "
                            f"({len(out['skipped'])} skipped)")
    return out


def split_speakers(speakers: list[str], fractions: tuple[float, float, float], seed: int
                   ) -> dict[str, str]:
    """Speaker -> split name; disjoint, deterministic, every split gets at least one speaker
    when there are three or more."""
    names = sorted(set(speakers))
    order = np.random.default_rng(seed).permutation(len(names))
    n = len(names)
    n_test = max(1, round(fractions[2] * n)) if n >= 3 else 0
    n_val = max(1, round(fractions[1] * n)) if n >= 3 else 0
    out = {}
    for rank, i in enumerate(order):
        out[names[i]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return out


def make_manifest(cfg: DataConfig, root: Path, seed: int,
                  progress: Callable[[int, int], None] | None = None) -> dict:
    """Scan + speaker-disjoint split of speech and by-file split of noise.

    Each configured folder is split on its own (the first with ``seed``, as it always was),
    so adding a corpus folder leaves the split of the others unchanged: the old test
    speakers stay unseen and the old split stays comparable across recipes."""
    m = scan(cfg, root, progress)
    for kind, key, off in (("speech", "speaker", 0), ("noise", "file", 1)):
        for g in sorted({e["group"] for e in m[kind]}):
            es = [e for e in m[kind] if e["group"] == g]
            split = split_speakers([e[key] for e in es], cfg.split, seed + off + 10 * g)
            for e in es:
                e["split"] = split[e[key]]
    m["seed"] = seed
    m["summary"] = {
        k: {s: {"files": sum(e["split"] == s for e in m[k]),
                "seconds": round(sum(e["seconds"] for e in m[k] if e["split"] == s), 1),
                **({"speakers": len({e["speaker"] for e in m[k] if e["split"] == s})}
                   if k == "speech" else {})}
            for s in SPLITS}
        for k in ("speech", "noise")}
    m["summary"]["rir"] = len(m["rir"])
    m["summary"]["skipped"] = len(m["skipped"])
    return m


def write_json(path: Path, obj: dict) -> None:
    """Atomic JSON write (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = atomic_temp(path, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def load_manifest(path: Path) -> dict:
    try:
        m = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: manifest not found (run `train-denoiser prepare` first)"
                        ) from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not a valid manifest ({e})") from None
    if not {"root", "speech", "noise"} <= set(m):
        raise DataError(f"{path}: not a hushlink training manifest")
    return m


# ----------------------------------------------------------------------------------- mixing
def _load_many(root: Path, entries: list[dict], skipped: list[dict],
               limit_per_speaker: int = 0) -> list[np.ndarray]:
    """Audio at 16 kHz as int16 arrays (half the memory of float32); bad files are skipped."""
    out, per = [], {}
    for e in entries:
        if limit_per_speaker and "speaker" in e:
            per[e["speaker"]] = per.get(e["speaker"], 0) + 1
            if per[e["speaker"]] > limit_per_speaker:
                continue
        try:
            x = load_audio(root / e["file"]).samples
        except AudioError as err:
            skipped.append({"file": e["file"], "reason": str(err)[:120]})
            continue
        out.append(np.round(np.clip(x, -1, 1) * 32767).astype(np.int16))
    return out


def _f(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / 32767.0


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-12))


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Scale ``noise`` so that 10*log10(P_clean/P_noise) = snr_db; returns the scaled noise."""
    return (noise * (rms(clean) / (rms(noise) * 10 ** (snr_db / 20)))).astype(np.float32)


def _crop(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Random n-sample excerpt; shorter inputs are placed at a random offset in zeros."""
    if len(x) >= n:
        s = int(rng.integers(0, len(x) - n + 1))
        return x[s:s + n]
    out = np.zeros(n, dtype=x.dtype)
    s = int(rng.integers(0, n - len(x) + 1))
    out[s:s + len(x)] = x
    return out


def _loop_excerpt(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n samples from a random offset, looping short noises."""
    s = int(rng.integers(0, len(x)))
    reps = -(-(s + n) // len(x))
    return np.tile(x, reps)[s:s + n]


def random_eq(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random spectral tilt (first-order) and one random peaking band (+-6 dB)."""
    a = rng.uniform(-0.6, 0.6)
    y = lfilter([1.0, a], [1.0], x) / (1 + abs(a))
    f0, gain_db, q = rng.uniform(200, 6000), rng.uniform(-6, 6), rng.uniform(0.7, 2.0)
    w0 = 2 * np.pi * f0 / RATE
    A, alpha = 10 ** (gain_db / 40), np.sin(w0) / (2 * q)
    b = [1 + alpha * A, -2 * np.cos(w0), 1 - alpha * A]
    den = [1 + alpha / A, -2 * np.cos(w0), 1 - alpha / A]
    return lfilter(b, den, y).astype(np.float32)


def vary_noise(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """An n-sample excerpt of int16 noise ``x`` made into a noise the corpus does not hold:
    resampled (x0.7-1.4: other engines, fans, voices), reversed, filtered (random_eq),
    amplitude-modulated (0.3-8 Hz: passing cars, wipers, machines) and/or given synthetic
    transients (clicks, knocks). At least one of the five is applied."""
    picks = rng.random(5) < 0.4
    if not picks.any():
        picks[int(rng.integers(5))] = True
    if picks[0]:
        f = rng.uniform(0.7, 1.4)
        seg = _f(_loop_excerpt(x, int(n * f) + 16, rng))
        y = soxr.resample(seg, RATE, int(RATE / f))[:n].astype(np.float32)
        y = np.pad(y, (0, n - len(y)))
    else:
        y = _f(_loop_excerpt(x, n, rng))
    if picks[1]:
        y = y[::-1].copy()
    if picks[2]:
        y = random_eq(y, rng)
    if picks[3]:
        t = np.arange(n) / RATE
        depth = rng.uniform(0.3, 0.9)
        y = y * (1 - depth / 2 + depth / 2 * np.sin(2 * np.pi * rng.uniform(0.3, 8) * t
                                                    + rng.uniform(0, 6.3)))
    if picks[4]:
        level = max(rms(y), 1e-4) * rng.uniform(2, 10)
        for _ in range(int(rng.integers(1, 6))):
            s, ln = int(rng.integers(0, n)), int(rng.integers(RATE // 500, RATE // 20))
            burst = rng.standard_normal(ln) * np.exp(-np.arange(ln) / (ln / 5)) * level
            y[s:s + ln] += burst[: n - s].astype(np.float32)
    return y.astype(np.float32)


@dataclass
class Example:
    clean: np.ndarray  # (n,) float32, the target (dry or early-reverb speech)
    noisy: np.ndarray  # (n,) float32


class Mixer:
    """On-the-fly mixtures from one split of a manifest. Not thread-safe."""

    def __init__(self, manifest: dict, split: str, cfg: DataConfig):
        self.cfg = cfg
        self.root = Path(manifest["root"])
        self.skipped: list[dict] = []
        speech = [e for e in manifest["speech"] if e["split"] == split]
        noise = [e for e in manifest["noise"] if e["split"] == split] or manifest["noise"]
        if not speech:
            raise DataError(f"the {split} split has no speech (too few speakers?)")
        self.speech = _load_many(self.root, speech, self.skipped, cfg.max_files_per_speaker)
        if cfg.max_noise_files:  # an even spread over the sorted list (all folders)
            idx = np.linspace(0, len(noise) - 1, min(cfg.max_noise_files, len(noise)))
            noise = [noise[int(i)] for i in idx]
        self.noise = _load_many(self.root, noise, self.skipped)
        self.rirs = [_f(r) for r in _load_many(self.root, manifest.get("rir", []),
                                               self.skipped)]
        if not self.speech or not self.noise:
            raise DataError(f"the {split} split has no readable speech or noise "
                            f"({len(self.skipped)} files skipped)")
        self.n = int(cfg.segment_s * RATE)

    def _speech(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return _f(_crop(self.speech[int(rng.integers(len(self.speech)))], n, rng))

    def _noise(self, rng: np.random.Generator, n: int) -> np.ndarray:
        x = self.noise[int(rng.integers(len(self.noise)))]
        if self.cfg.p_noise_variety and rng.random() < self.cfg.p_noise_variety:
            return vary_noise(x, n, rng)
        return _f(_loop_excerpt(x, n, rng))

    def example(self, rng: np.random.Generator) -> Example:
        c, n = self.cfg, self.n
        if rng.random() < c.p_speed:  # speed perturbation (tempo and pitch together)
            raw = self.speech[int(rng.integers(len(self.speech)))]
            f = rng.uniform(*c.speed)
            seg = _crop(raw, int(n * f) + 1, rng)
            speech = soxr.resample(_f(seg), RATE, int(RATE / f))[:n].astype(np.float32)
            speech = np.pad(speech, (0, n - len(speech)))
        else:
            speech = self._speech(rng, n)
        if rng.random() < c.p_eq:
            speech = random_eq(speech, rng)
        if rng.random() < c.p_level_change:  # a smooth +-10 dB level ramp within the utterance
            g_db = np.interp(np.arange(n), [0, rng.integers(1, n), n],
                             rng.uniform(-10, 10, 3))
            speech = speech * (10 ** (g_db / 20)).astype(np.float32)
        target = speech
        if self.rirs and rng.random() < c.p_reverb:
            rir = self.rirs[int(rng.integers(len(self.rirs)))]
            d = int(np.argmax(np.abs(rir)))
            rir = rir[d:] / (np.abs(rir[d]) + 1e-9)
            early = rir[:int(0.05 * RATE)]
            speech = fftconvolve(speech, rir)[:n].astype(np.float32)
            target = fftconvolve(target, early)[:n].astype(np.float32)
        noise = self._noise(rng, n)
        if rng.random() < c.p_babble:
            babble = sum(self._speech(rng, n) for _ in range(int(rng.integers(3, 7))))
            noise = babble if rng.random() < 0.5 else noise + mix_at_snr(noise, babble, 0.0)
        if rng.random() < c.p_second_noise:
            noise = noise + mix_at_snr(noise, self._noise(rng, n), rng.uniform(0, 10))
        if rms(speech) < 1e-5:  # a crop of silence: keep the noise at a plausible level
            noisy_noise = noise * (10 ** (rng.uniform(-50, -25) / 20) / rms(noise))
        else:
            noisy_noise = mix_at_snr(speech, noise, rng.uniform(*c.snr_db))
        noisy = speech + noisy_noise
        g = 10 ** (rng.uniform(*c.level_db) / 20) / rms(noisy)
        peak = max(np.max(np.abs(noisy)) * g, 1e-9)
        if peak > 0.99:
            g *= 0.99 / peak
        return Example(clean=(target * g).astype(np.float32), noisy=(noisy * g).astype(np.float32))

    def batch(self, rng: np.random.Generator, size: int, fe: FrontEnd = DEFAULT_FRONT_END
              ) -> dict[str, np.ndarray]:
        """Features and targets of ``size`` fresh mixtures; see ``features``."""
        exs = [self.example(rng) for _ in range(size)]
        return features([e.clean for e in exs], [e.noisy for e in exs], fe)


def features(clean: list[np.ndarray], noisy: list[np.ndarray],
             fe: FrontEnd = DEFAULT_FRONT_END) -> dict[str, np.ndarray]:
    """Equal-length signals -> dict of arrays, all (batch, frames, bins) except the audio:

    ``feats`` log-power of the noisy STFT (float32), ``irm`` ideal ratio mask (float32),
    ``noisy_spec`` / ``clean_spec`` complex64, ``clean`` / ``noisy`` (batch, n) float32.
    """
    xs = np.stack([stft(x, fe) for x in noisy])
    ss = np.stack([stft(s, fe) for s in clean])
    return {"feats": log_power(xs, fe), "irm": ideal_ratio_mask(ss, xs), "noisy_spec": xs,
            "clean_spec": ss, "clean": np.stack(clean), "noisy": np.stack(noisy)}


def eval_mixtures(manifest: dict, n_utterances: int, snrs: tuple[float, ...], seed: int = 1234,
                  split: str = "test") -> list[dict]:
    """A fixed evaluation set: utterances of the split's speakers (spread over speakers) each
    mixed with a held-out noise at every SNR. No augmentation. Deterministic in ``seed``."""
    root = Path(manifest["root"])
    rng = np.random.default_rng(seed)
    speech = [e for e in manifest["speech"] if e["split"] == split and e["seconds"] >= 1.5]
    noise = [e for e in manifest["noise"] if e["split"] == split] or manifest["noise"]
    by_spk: dict[str, list[dict]] = {}
    for e in speech:
        by_spk.setdefault(e["speaker"], []).append(e)
    order = [by_spk[s] for s in sorted(by_spk)]
    picked, i = [], 0
    while len(picked) < n_utterances and any(order):  # round-robin over speakers
        lst = order[i % len(order)]
        if lst:
            picked.append(lst.pop(int(rng.integers(len(lst)))))
        i += 1
    out = []
    for k, e in enumerate(picked):
        try:
            clean = load_audio(root / e["file"]).samples
            ne = noise[int(rng.integers(len(noise)))]
            nz = load_audio(root / ne["file"]).samples
        except AudioError:
            continue
        clean = clean * (10 ** (-25 / 20) / rms(clean))
        excerpt = _loop_excerpt(nz, len(clean), rng)
        for snr in snrs:
            noisy = clean + mix_at_snr(clean, excerpt, snr)
            peak = float(np.max(np.abs(noisy)))
            g = 0.99 / peak if peak > 0.99 else 1.0
            out.append({"id": f"{k:03d}_{Path(e['file']).stem}_snr{snr:+.0f}",
                        "speaker": e["speaker"], "noise": ne["file"], "snr": snr,
                        "clean": (clean * g).astype(np.float32),
                        "noisy": (noisy * g).astype(np.float32)})
    return out
