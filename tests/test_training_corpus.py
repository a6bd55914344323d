"""The corpus builder (training/corpus.py) and the cross-corpus split, on a small git
repository made here: pinned commit, include/exclude patterns, speakers and categories from
the path, held-out categories, quality gate, manifest round trip and --check."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training import corpus
from training.corpus import CorpusError, Source

RATE = 16_000


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                                          "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
                                          "HOME": str(repo)}).stdout.strip()


def _speechlike(rng, seconds: float, rate: int) -> np.ndarray:
    n = int(seconds * rate)
    t = np.arange(n) / rate
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    x = sum(np.sin(2 * np.pi * f * t) for f in (220, 440, 1200, 5200, 6500))
    return (0.05 * env * x + 0.002 * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture()
def mirror(tmp_path):
    """A repository with speech (two speakers, one at 48 kHz stereo, one band-limited file),
    noise in three categories (one a game rip by title) and a clipped file."""
    repo = tmp_path / "mirrors" / "acme+sounds"
    rng = np.random.default_rng(0)
    for spk in ("s1", "s2"):
        for i in range(2):
            p = repo / "speech" / spk / f"u{i}.wav"
            p.parent.mkdir(parents=True, exist_ok=True)
            x = _speechlike(rng, 1.5, 48_000)
            sf.write(p, np.stack([x, x], 1) if spk == "s2" else x, 48_000)
    lowpassed = np.sin(2 * np.pi * 300 * np.arange(RATE) / RATE).astype(np.float32) * 0.1
    sf.write(repo / "speech" / "s1" / "narrow.wav", lowpassed, RATE)
    for cat in ("rain", "wind", "kitchen"):
        (repo / cat).mkdir()
        sf.write(repo / cat / "a.wav", (0.05 * rng.standard_normal(RATE)).astype(np.float32),
                 RATE)
    sf.write(repo / "rain" / "Game Rain.wav", np.zeros(RATE, np.float32) + 0.01, RATE)
    sf.write(repo / "wind" / "loud.wav", np.ones(RATE, np.float32), RATE)
    _git(repo.parent, "init", "-q", str(repo))
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "audio")
    return tmp_path / "mirrors", _git(repo, "rev-parse", "HEAD")


def _sources(commit: str) -> list[Source]:
    return [Source(name="talk", repo="acme/sounds", commit=commit, kind="speech",
                   include=("speech/*/*.wav",), licence="CC BY 4.0", commercial=True,
                   speaker=1, speaker_prefix="t", bandwidth_gate_db=-25.0),
            Source(name="amb", repo="acme/sounds", commit=commit, kind="noise",
                   include=("rain/*.wav", "wind/*.wav", "kitchen/*.wav"),
                   exclude=("*Game*",), licence="unclear", commercial=False, category=0,
                   eval_categories=("kitchen",))]


def test_build_writes_flac_and_a_manifest_that_check_reproduces(mirror, tmp_path, monkeypatch):
    mirrors, commit = mirror
    out = tmp_path / "corpus"
    rep = corpus.build(_sources(commit), mirrors, out)
    files = {r["file"]: r for r in rep.rows}
    assert set(files) == {"train/speech/talk/ts1/u0.flac", "train/speech/talk/ts1/u1.flac",
                          "train/speech/talk/ts2/u0.flac", "train/speech/talk/ts2/u1.flac",
                          "train/noise/amb/rain/a.flac", "train/noise/amb/wind/a.flac",
                          "eval/noise/amb/kitchen/a.flac"}
    assert rep.dropped == {"band-limited": 1, "clipped": 1}  # the game rip is excluded
    x, sr = sf.read(out / "train/speech/talk/ts2/u0.flac")
    assert sr == RATE and x.ndim == 1 and abs(len(x) - 1.5 * RATE) < 10
    assert abs(float(np.mean(x))) < 1e-3
    r = files["train/speech/talk/ts1/u0.flac"]
    assert (r["speaker"], r["commit"], r["commercial"], r["licence"]) == (
        "ts1", commit, "yes", "CC BY 4.0")
    blob = subprocess.run(["git", "-C", str(mirrors / "acme+sounds"), "show",
                           f"{commit}:speech/s1/u0.wav"], capture_output=True).stdout
    import hashlib
    assert r["sha256"] == hashlib.sha256(blob).hexdigest()
    committed = tmp_path / "manifest.csv"
    corpus.write_manifest(committed, rep.rows)
    again = corpus.build(_sources(commit), mirrors, None)  # --check: nothing written
    assert corpus.check(again.rows, committed) == []
    assert corpus.check(again.rows[1:], committed) == [f"missing: {rep.rows[0]['file']}"]
    only = corpus.build(_sources(commit), mirrors, None, commercial_only=True)
    assert {r["kind"] for r in only.rows} == {"speech"}


def test_a_missing_mirror_or_commit_is_a_clear_error(mirror, tmp_path):
    mirrors, commit = mirror
    with pytest.raises(CorpusError, match="git clone --mirror https://github.com/acme/other"):
        corpus.find_mirror(mirrors, "acme/other")
    bad = [Source(**{**_sources(commit)[0].__dict__, "commit": "0" * 40})]
    with pytest.raises(CorpusError, match="ls-tree"):
        corpus.build(bad, mirrors, tmp_path / "c")


def test_noise_roles_hold_out_whole_categories_and_a_stable_share():
    src = _sources("x")[1]
    assert corpus.noise_role(src, "kitchen", "kitchen/a.wav") == "eval"
    shared = Source(**{**src.__dict__, "eval_share": 0.2})
    paths = [f"rain/{i}.wav" for i in range(400)]
    roles = [corpus.noise_role(shared, "rain", p) for p in paths]
    assert 0.12 < roles.count("eval") / len(roles) < 0.28
    assert roles == [corpus.noise_role(shared, "rain", p) for p in paths]  # deterministic


def test_the_shipped_sources_file_loads_and_pins_full_commits():
    srcs = corpus.load_sources()
    assert {s.name for s in srcs} >= {"librispeech", "ravdess", "ruiiwang"}
    assert all(len(s.commit) == 40 for s in srcs)
    assert {s.role for s in srcs if s.kind == "speech"} == {"train", "eval"}


def test_trim_silence_keeps_the_speech_and_a_margin():
    x = np.zeros(3 * RATE, np.float32)
    x[RATE:2 * RATE] = 0.1 * np.sin(np.arange(RATE) / 3)
    y = corpus.trim_silence(x, margin_s=0.1)
    assert 1.15 * RATE <= len(y) <= 1.25 * RATE


def test_cross_corpus_mixtures_use_only_eval_material(tmp_path):
    """Every category (held-out noise, babble, a competing talker) at every SNR, from the
    corpus's eval part only; the training rows are never read."""
    from edge.audio import load_audio
    from training.crosscorpus import SNRS, cross_corpus_mixtures
    from training.data import rms
    from training.metrics import si_sdr

    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        for k in range(2):
            f = f"eval/speech/x/sp{i}/u{k}.flac"
            (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
            sf.write(tmp_path / f, _speechlike(rng, 1.0, RATE), RATE)
            rows.append({"file": f, "role": "eval", "kind": "speech", "speaker": f"sp{i}"})
    for role, cat in (("eval", "kitchen"), ("train", "rain")):
        f = f"{role}/noise/x/{cat}/n.flac"
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / f, (0.05 * rng.standard_normal(RATE)).astype(np.float32), RATE)
        rows.append({"file": f, "role": role, "kind": "noise", "category": cat})
    rows.append({"file": "train/speech/x/t/missing.flac", "role": "train", "kind": "speech",
                 "speaker": "t"})  # never read: it does not exist
    corpus.write_manifest(tmp_path / "manifest.csv",
                          [{**{c: "" for c in corpus.COLUMNS}, **r} for r in rows])
    mixes = cross_corpus_mixtures(tmp_path, per_category=2)
    assert len(mixes) == 3 * 2 * len(SNRS)
    assert {m["category"] for m in mixes} == {"kitchen", "babble", "talker"}
    for m in mixes:
        noise = m["noisy"] - m["clean"]
        assert abs(20 * np.log10(rms(m["clean"]) / rms(noise)) - m["snr"]) < 0.01
        assert m["speaker"] not in m["noise"]  # a talker never competes with itself
    again = cross_corpus_mixtures(tmp_path, per_category=2)
    assert all(np.array_equal(a["noisy"], b["noisy"]) for a, b in zip(mixes, again,
                                                                      strict=True))
    clean = load_audio(tmp_path / rows[0]["file"]).samples
    assert si_sdr(mixes[0]["clean"][:len(clean)], clean) > 30  # the clip itself, rescaled


def test_cross_corpus_without_a_built_corpus_says_how_to_build_it(tmp_path):
    from training.crosscorpus import cross_corpus_mixtures
    from training.data import DataError

    with pytest.raises(DataError, match="make corpus"):
        cross_corpus_mixtures(tmp_path / "none")


def test_dnsmos_hears_noise(shared_data):
    """The DNS Challenge P.835 model from the speechmos wheel: clean speech scores higher
    on BAK and OVRL than the same speech under loud white noise."""
    from edge.audio import load_audio
    from training.metrics import dnsmos

    f = sorted((shared_data / "speech" / "vctk").rglob("*.flac"))[0]
    x = load_audio(f).samples
    x = 0.1 * x / np.max(np.abs(x))
    noisy = x + 0.03 * np.random.default_rng(0).standard_normal(len(x)).astype(np.float32)
    c, n = dnsmos(x, hop_s=9.01), dnsmos(noisy, hop_s=9.01)
    assert 1 <= n["ovrl"] < c["ovrl"] <= 5
    assert n["bak"] < c["bak"] - 0.5
