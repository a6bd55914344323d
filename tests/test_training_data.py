"""The data pipeline on a user's own folders: scanning, speaker split, unreadable files,
deterministic mixing at the requested SNR, and features from edge.dsp."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from edge.dsp import ideal_ratio_mask, log_power, stft
from training.config import DataConfig
from training.data import (
    DataError,
    Mixer,
    eval_mixtures,
    features,
    make_manifest,
    mix_at_snr,
    rms,
    split_speakers,
)


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(32_000) / 16_000
    for spk in ("alice", "bob", "carol", "dave", "erin"):
        d = tmp_path / "speech" / spk
        d.mkdir(parents=True)
        for k in range(2):
            f0 = 120 + 20 * k + 10 * len(spk)
            x = 0.2 * np.sin(2 * np.pi * f0 * t) * (np.sin(2 * np.pi * 2 * t) > 0)
            sf.write(d / f"{spk}_{k}.wav", x, 16_000)
    (tmp_path / "noise").mkdir()
    for k in range(3):  # different rates and formats on purpose
        sf.write(tmp_path / "noise" / f"n{k}.flac", 0.1 * rng.standard_normal(24_000),
                 [16_000, 22_050, 48_000][k])
    (tmp_path / "speech" / "bob" / "broken.wav").write_text("not audio")
    return tmp_path


def _cfg(root, **kw):
    return DataConfig(data_root=str(root), rir_dirs=(), segment_s=1.0, **kw)


def test_manifest_split_is_speaker_disjoint_and_reports_unreadable(folders):
    m = make_manifest(_cfg(folders), folders, seed=3)
    assert [s["file"] for s in m["skipped"]] == ["speech/bob/broken.wav"]
    splits = {}
    for e in m["speech"]:
        assert e["speaker"] == e["file"].split("/")[1]  # folder = speaker for user data
        assert splits.setdefault(e["speaker"], e["split"]) == e["split"]
    assert set(splits.values()) == {"train", "val", "test"}
    assert make_manifest(_cfg(folders), folders, seed=3)["speech"] == m["speech"]


def test_split_speakers_deterministic_and_fractions():
    spk = [f"s{i}" for i in range(100)]
    a = split_speakers(spk, (0.8, 0.1, 0.1), 7)
    assert a == split_speakers(list(reversed(spk)), (0.8, 0.1, 0.1), 7)
    assert sorted(list(a.values()).count(s) for s in ("train", "val", "test")) == [10, 10, 80]


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    (tmp_path / "speech").mkdir()
    (tmp_path / "noise").mkdir()
    with pytest.raises(DataError, match="no audio files"):
        make_manifest(_cfg(tmp_path), tmp_path, 0)
    with pytest.raises(DataError, match="not found"):
        make_manifest(_cfg(tmp_path / "nope"), tmp_path / "nope", 0)


def test_mixer_is_deterministic_and_features_come_from_edge_dsp(folders):
    m = make_manifest(_cfg(folders), folders, seed=0)
    mixer = Mixer(m, "train", _cfg(folders))
    a = mixer.batch(np.random.default_rng([1, 2]), 3)
    b = mixer.batch(np.random.default_rng([1, 2]), 3)
    np.testing.assert_array_equal(a["noisy"], b["noisy"])
    assert a["feats"].shape == (3, 101, 161) and a["irm"].shape == a["feats"].shape
    assert np.all(np.abs(a["noisy"]) <= 0.99 + 1e-6)
    x, s = a["noisy"][0], a["clean"][0]
    np.testing.assert_array_equal(a["feats"][0], log_power(stft(x)))
    np.testing.assert_array_equal(a["irm"][0], ideal_ratio_mask(stft(s), stft(x)))
    assert a["irm"].min() >= 0 and a["irm"].max() <= 1


def test_mix_at_snr_hits_the_requested_snr():
    rng = np.random.default_rng(1)
    clean, noise = rng.standard_normal(8000), rng.standard_normal(8000) * 3
    for snr in (-5.0, 0.0, 20.0):
        n = mix_at_snr(clean, noise, snr)
        assert 20 * np.log10(rms(clean) / rms(n)) == pytest.approx(snr, abs=1e-3)


def test_test_mixtures_fixed_and_at_each_snr(folders):
    m = make_manifest(_cfg(folders), folders, seed=0)
    mx = eval_mixtures(m, 2, (0.0, 10.0), split="train")
    assert [x["snr"] for x in mx][:2] == [0.0, 10.0]
    for x in mx:
        snr = 20 * np.log10(rms(x["clean"]) / rms(x["noisy"] - x["clean"]))
        assert snr == pytest.approx(x["snr"], abs=0.01)
    again = eval_mixtures(m, 2, (0.0, 10.0), split="train")
    np.testing.assert_array_equal(mx[0]["noisy"], again[0]["noisy"])
    feats = features([mx[0]["clean"]], [mx[0]["noisy"]])
    assert feats["feats"].dtype == np.float32


def test_a_second_folder_leaves_the_first_folders_split_unchanged(folders, tmp_path):
    """Each configured folder is split on its own, so adding a corpus keeps the old test
    speakers unseen and the old split comparable (v2 recipe)."""
    more = tmp_path / "more"
    for spk in ("fred", "gina", "hank", "ivan"):
        (more / spk).mkdir(parents=True)
        sf.write(more / spk / "u.wav", 0.1 * np.ones(20_000), 16_000)
    old = make_manifest(DataConfig(), folders, seed=0)
    new = make_manifest(DataConfig(speech_dirs=("speech", str(more))), folders, seed=0)
    split = {e["file"]: e["split"] for e in new["speech"]}
    assert all(split[e["file"]] == e["split"] for e in old["speech"])
    assert {e["speaker"] for e in new["speech"] if e["group"] == 1} == {
        "fred", "gina", "hank", "ivan"}


def test_corpus_folders_name_the_built_corpus_or_say_how_to_build_it(folders, tmp_path):
    cfg = DataConfig(speech_dirs=("corpus:train/speech",), corpus_root=str(tmp_path / "no"))
    with pytest.raises(DataError, match="make corpus"):
        make_manifest(cfg, folders, seed=0)
    (tmp_path / "c" / "train").mkdir(parents=True)
    (folders / "speech").rename(tmp_path / "c" / "train" / "speech")
    cfg = DataConfig(speech_dirs=("corpus:train/speech",), corpus_root=str(tmp_path / "c"))
    assert len(make_manifest(cfg, folders, seed=0)["speech"]) == 10


def test_vary_noise_gives_new_noise_of_the_right_length():
    from training.data import vary_noise

    rng = np.random.default_rng(3)
    x = (3000 * rng.standard_normal(8000)).astype(np.int16)
    outs = [vary_noise(x, 16_000, rng) for _ in range(20)]
    assert all(o.shape == (16_000,) and o.dtype == np.float32 and np.isfinite(o).all()
               for o in outs)
    plain = x.astype(np.float32) / 32767
    assert all(not np.allclose(o[:8000], plain) for o in outs)
