import numpy as np
import pytest
import soundfile as sf

from edge.audio import load_audio, resample, save_audio, to_mono
from edge.errors import AudioError


def test_roundtrip_other_rate_and_stereo(tmp_path, tone):
    x44 = resample(tone, 16_000, 44_100)
    stereo = np.stack([x44, 0.5 * x44], axis=1)
    sf.write(tmp_path / "in.flac", stereo, 44_100)
    clip = load_audio(tmp_path / "in.flac")
    assert clip.rate == 16_000 and clip.source_rate == 44_100 and clip.source_channels == 2
    assert abs(len(clip.samples) - 16_000) <= 1
    np.testing.assert_allclose(np.std(clip.samples), 0.75 * np.std(tone), rtol=0.02)
    right = load_audio(tmp_path / "in.flac", channel=1)
    np.testing.assert_allclose(np.std(right.samples), 0.5 * np.std(tone), rtol=0.02)
    out = save_audio(tmp_path / "out.wav", clip.samples, out_rate=clip.source_rate)
    info = sf.info(out)
    assert info.samplerate == 44_100 and abs(info.frames - len(x44)) <= 3
    assert not list(tmp_path.glob("*.part"))


def test_to_mono_bad_channel():
    with pytest.raises(AudioError, match="channel 3 does not exist"):
        to_mono(np.zeros((10, 2)), channel=3)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "nope.wav")


def test_text_renamed_wav(tmp_path):
    p = tmp_path / "notes.wav"
    p.write_text("this is not audio\n")
    with pytest.raises(AudioError, match="not a readable audio file"):
        load_audio(p)


def test_zero_length(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16_000)
    with pytest.raises(AudioError, match="no audio samples"):
        load_audio(tmp_path / "empty.wav")


def test_nan_samples(tmp_path, tone):
    tone[100] = np.nan
    sf.write(tmp_path / "nan.wav", tone, 16_000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN/inf"):
        load_audio(tmp_path / "nan.wav")


def test_silence_rejected_unless_allowed(tmp_path):
    sf.write(tmp_path / "silent.wav", np.zeros(1600, dtype=np.float32), 16_000)
    with pytest.raises(AudioError, match="digital silence"):
        load_audio(tmp_path / "silent.wav")
    assert load_audio(tmp_path / "silent.wav", allow_silence=True).samples.size == 1600


def test_absurd_length(tmp_path, tone):
    sf.write(tmp_path / "long.wav", tone, 16_000)
    with pytest.raises(AudioError, match="longer than"):
        load_audio(tmp_path / "long.wav", max_seconds=0.5)


def test_unsupported_output_format(tmp_path, tone):
    with pytest.raises(AudioError, match="unsupported output format"):
        save_audio(tmp_path / "out.mp4", tone)
    assert not list(tmp_path.iterdir())
