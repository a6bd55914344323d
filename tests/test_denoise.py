"""edge/denoise.py and `edge-denoise file`: one streaming code path, latency compensated."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from edge.audio import load_audio, save_audio
from edge.cli import cli
from edge.denoise import Denoiser, denoise_offline
from edge.model import StepModel

pytestmark = pytest.mark.train  # the fixture model is exported with torch + litert-torch


@pytest.fixture(scope="module")
def test_model(tmp_path_factory) -> Path:
    from stepmodels import build_test_model

    return build_test_model(tmp_path_factory.getbasetemp() / "stepmodel")


@pytest.fixture(scope="module")
def noisy_speech(shared_data) -> np.ndarray:
    from stepmodels import mix

    clean = np.concatenate([load_audio(p).samples
                            for p in sorted((shared_data / "speech/vctk/p230").glob("*.flac"))])
    noise = load_audio(shared_data / "noise/freesound_cc0/cafe.flac").samples
    return mix(clean, noise, 5.0)


def test_streaming_equals_offline_whole_denoiser(test_model, noisy_speech):
    """process_hop over the file == stft -> masks -> istft over the whole file."""
    m = StepModel(test_model)
    y_stream = Denoiser(m).process(noisy_speech)
    y_off = denoise_offline(m, noisy_speech)
    assert y_stream.shape == noisy_speech.shape
    # the hop loop's float32 matrix DFT and the offline FFT agree to rounding (test_dsp.py);
    # an int8 model turns such a difference into an occasional one-level step of a mask value,
    # which its recurrence carries on: equal to far below audibility, not bit for bit
    err = (y_stream - y_off).astype(np.float64)
    snr_db = 10 * np.log10(np.sum(y_off.astype(np.float64) ** 2) / np.sum(err ** 2))
    assert snr_db > 50 and np.max(np.abs(err)) < 2e-3, (snr_db, np.max(np.abs(err)))
    assert np.std(y_stream - noisy_speech) > 1e-3  # the model really changed the audio


def test_bypass_is_the_input_latency_compensated(test_model, noisy_speech):
    y = Denoiser(StepModel(test_model), bypass=True).process(noisy_speech)
    np.testing.assert_allclose(y, noisy_speech, atol=1e-5)


def test_process_hop_has_the_documented_delay(test_model):
    den = Denoiser(StepModel(test_model), bypass=True)
    x = np.zeros(16 * den.hop, dtype=np.float32)
    x[100] = 1.0
    y = np.concatenate([den.process_hop(x[i:i + den.hop]) for i in range(0, len(x), den.hop)])
    assert int(np.argmax(np.abs(y))) == 100 + den.delay_samples
    assert den.delay_samples == 160 and den.algorithmic_latency_s == pytest.approx(0.02)


def test_reset_gives_identical_runs(test_model, noisy_speech):
    den = Denoiser(StepModel(test_model))
    a = den.process(noisy_speech[:8000])
    b = den.process(noisy_speech[:8000])
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("rate", "suffix", "subtype"), [(16_000, ".wav", "PCM_16"),
                                                         (44_100, ".flac", "PCM_24"),
                                                         (48_000, ".wav", "FLOAT")])
def test_file_command_keeps_rate_and_exact_length(test_model, noisy_speech, tmp_path, rate,
                                                  suffix, subtype):
    from edge.audio import resample

    x = resample(noisy_speech[:24_001], 16_000, rate)
    src = tmp_path / f"in{suffix}"
    sf.write(src, np.stack([x, 0.5 * x], axis=1), rate, subtype=subtype)  # stereo in
    dst = tmp_path / f"out{suffix}"
    r = CliRunner().invoke(cli, ["file", str(src), str(dst), "--model", str(test_model)])
    assert r.exit_code == 0, r.output
    assert "real-time factor" in r.output
    info = sf.info(dst)
    assert info.samplerate == rate and info.frames == len(x) and info.channels == 2  # kept


def test_file_command_json_and_same_result_as_the_api(test_model, noisy_speech, tmp_path):
    import json

    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    save_audio(src, noisy_speech, subtype="FLOAT")
    r = CliRunner().invoke(cli, ["file", str(src), str(dst), "-m", str(test_model), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output.strip().splitlines()[-1])
    assert out["frames"] == len(noisy_speech) and 0 < out["rtf"] < 1
    y = sf.read(dst, dtype="float32")[0]
    expect = Denoiser(StepModel(test_model)).process(load_audio(src).samples)
    np.testing.assert_allclose(y, np.clip(expect, -1, 1), atol=1e-6)


def test_file_command_refuses_to_overwrite_its_input(test_model, tone, tmp_path):
    src = tmp_path / "in.wav"
    save_audio(src, tone)
    before = src.read_bytes()
    for dst in (src, tmp_path / "." / "in.wav"):
        r = CliRunner().invoke(cli, ["file", str(src), str(dst), "-m", str(test_model)])
        assert r.exit_code == 1 and "refusing to overwrite the input" in r.output
    assert src.read_bytes() == before


def test_file_command_bad_inputs_are_one_line_errors(test_model, tone, tmp_path):
    src = tmp_path / "in.wav"
    save_audio(src, tone)
    bad_out = CliRunner().invoke(cli, ["file", str(src), str(tmp_path / "o.mp3"),
                                       "-m", str(test_model)])
    assert bad_out.exit_code == 1 and "unsupported output format" in bad_out.output
    (tmp_path / "text.wav").write_text("not audio")
    bad_in = CliRunner().invoke(cli, ["file", str(tmp_path / "text.wav"),
                                      str(tmp_path / "o.wav"), "-m", str(test_model)])
    assert bad_in.exit_code == 1 and bad_in.output.startswith("Error: ")
    assert not (tmp_path / "o.wav").exists() and not list(tmp_path.glob("*.part"))


def test_file_command_checks_its_input_before_loading_a_model(tmp_path):
    """A typo in the path answers with one line, without the interpreter's start-up log:
    the input is checked before any model is loaded (a model path that does not exist
    would fail too, so reaching that error would show the order is wrong)."""
    r = subprocess.run([sys.executable, "-m", "edge", "file", str(tmp_path / "nope.wav"),
                        str(tmp_path / "o.wav"), "-m", str(tmp_path / "no-model.tflite")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert (r.stdout + r.stderr).strip() == f"Error: {tmp_path / 'nope.wav'}: no such file"


def test_residual_tap_is_what_the_mask_removed(noisy_speech):
    """Issue 19 item 1: ``tap_residual`` resynthesises X·(1−m) every hop: output + residual is
    the input (delayed), the residual is not trivial, and bypass leaves nothing behind."""
    den = Denoiser(StepModel(), tap_residual=True)  # the shipped model
    x = noisy_speech[:32_000]
    hop = den.hop
    ys, rs = [], []
    for i in range(0, len(x) - hop + 1, hop):
        ys.append(den.process_hop(x[i:i + hop]))
        rs.append(den.residual.copy())
    y, r = np.concatenate(ys), np.concatenate(rs)
    d = den.delay_samples
    np.testing.assert_allclose(y[d:] + r[d:], x[:len(x) - d], atol=1e-4)
    assert np.std(r) > 0.1 * np.std(x) and np.std(y) > 0.1 * np.std(x)
    den.bypass = True
    den.process_hop(x[:hop])
    den.process_hop(x[hop:2 * hop])
    assert np.abs(den.residual).max() < 1e-6
