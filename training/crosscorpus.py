"""The cross-corpus evaluation set (SPEC §3): mixtures made only of material no training
example touches, so that a score on it predicts the field.

* Speech: the ``eval`` speech of the built corpus (training/corpus/sources.toml): a whole
  corpus (RAVDESS: 24 native adult North-American actors, studio microphones) that neither
  ../shared/data nor the training part of the corpus shares speakers, text or channel with.
* Noise: the corpus's ``eval`` noise: whole categories held out (kitchen, market, playground)
  and unseen recordings of the other categories, plus two categories made from other
  evaluation speakers: ``babble`` (4-6 talkers) and ``talker`` (one competing voice).

Each utterance (two clips of one speaker joined, about 5 s) meets one noise category, chosen
round-robin so that every category gets the same number of utterances, at every SNR.
Deterministic in ``seed``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.audio import load_audio
from training.corpus import read_manifest
from training.data import DataError, _loop_excerpt, mix_at_snr, rms

SNRS = (-5.0, 0.0, 5.0, 10.0, 15.0, 20.0)
SPEECH_CATEGORIES = ("babble", "talker")
GAP = 0.3  # seconds of silence between the two joined clips


def _corpus_root(corpus: Path) -> Path:
    if not (corpus / "manifest.csv").is_file():
        raise DataError(f"{corpus}: no built corpus (run `make corpus`: the cross-corpus "
                        "split is built from pinned public repositories)")
    return corpus


def cross_corpus_mixtures(corpus: Path, per_category: int = 3, snrs=SNRS, seed: int = 2024
                          ) -> list[dict]:
    """Mixtures like ``training.data.eval_mixtures`` (id, speaker, noise, snr, clean, noisy)
    plus ``category``; clean speech at -25 dBFS before mixing."""
    root = _corpus_root(Path(corpus))
    rows = [r for r in read_manifest(root / "manifest.csv") if r["role"] == "eval"]
    speech = [r for r in rows if r["kind"] == "speech"]
    by_spk: dict[str, list[dict]] = {}
    for r in speech:
        by_spk.setdefault(r["speaker"], []).append(r)
    noise_by_cat: dict[str, list[dict]] = {}
    for r in rows:
        if r["kind"] == "noise":
            noise_by_cat.setdefault(r["category"], []).append(r)
    if len(by_spk) < 8 or not noise_by_cat:
        raise DataError(f"{root}: the eval part needs >= 8 speakers and some noise")
    cats = sorted(noise_by_cat) + list(SPEECH_CATEGORIES)
    rng = np.random.default_rng(seed)
    speakers = sorted(by_spk)
    cache: dict[str, np.ndarray] = {}

    def load(r: dict) -> np.ndarray:
        if r["file"] not in cache:
            cache[r["file"]] = load_audio(root / r["file"]).samples.astype(np.float32)
        return cache[r["file"]]

    def utterance(spk: str) -> np.ndarray:
        a, b = rng.choice(len(by_spk[spk]), 2, replace=False)
        gap = np.zeros(int(GAP * 16_000), np.float32)
        return np.concatenate([load(by_spk[spk][a]), gap, load(by_spk[spk][b])])

    out = []
    k = 0
    for rep in range(per_category):
        for ci, cat in enumerate(cats):
            spk = speakers[(rep * len(cats) + ci) % len(speakers)]
            clean = utterance(spk)
            clean = clean * (10 ** (-25 / 20) / rms(clean))
            others = [s for s in speakers if s != spk]
            if cat == "babble":
                talkers = rng.choice(others, int(rng.integers(4, 7)), replace=False)
                voices = [utterance(s) for s in talkers]
                noise = sum(_loop_excerpt(v / max(rms(v), 1e-6), len(clean), rng)
                            for v in voices)
                label = "babble:" + "+".join(talkers)
            elif cat == "talker":
                s = others[int(rng.integers(len(others)))]
                noise, label = _loop_excerpt(utterance(s), len(clean), rng), f"talker:{s}"
            else:
                nr = noise_by_cat[cat][int(rng.integers(len(noise_by_cat[cat])))]
                noise, label = _loop_excerpt(load(nr), len(clean), rng), nr["file"]
            noise = np.asarray(noise, np.float32)
            for snr in snrs:
                noisy = clean + mix_at_snr(clean, noise, snr)
                peak = float(np.max(np.abs(noisy)))
                g = 0.99 / peak if peak > 0.99 else 1.0
                out.append({"id": f"x{k:03d}_{cat}_snr{snr:+.0f}", "speaker": spk,
                            "noise": label, "category": cat, "snr": snr,
                            "clean": (clean * g).astype(np.float32),
                            "noisy": (noisy * g).astype(np.float32)})
            k += 1
    return out
