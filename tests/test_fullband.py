"""Full band (issue 22, item 2): 48 kHz in, 48 kHz out with the band above 8 kHz kept and
attenuated by the gain extended from the model's mask, delay-aligned; bypass bit-exact;
stereo denoised per channel, never downmixed."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from edge.denoise import Denoiser
from edge.dsp import FrontEnd
from edge.fullband import EXTEND_HZ, band_bins, denoise_channels

R = 48_000


class StepMask:
    """A mask of ``before`` for the first ``switch`` frames, then ``after`` (every bin)."""

    front_end = FrontEnd()

    def __init__(self, before=0.5, after=0.5, switch=0):
        self.before, self.after, self.switch = before, after, switch

    def init_state(self):
        return [np.zeros(1, np.float32)]

    def step(self, features, state):
        t = int(state[0][0])
        g = self.before if t < self.switch else self.after
        return np.full(161, g, np.float32), [np.array([t + 1], np.float32)]


def band_energy(x, lo, hi, rate=R):
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / rate)
    return float(spec[(f >= lo) & (f < hi)].sum())


def wideband(seconds=2.0, seed=0):
    """A 300 Hz..20 kHz test signal: harmonics below 8 kHz, noise 9-18 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(R * seconds)) / R
    low = sum(0.05 * np.sin(2 * np.pi * f * t) for f in (300, 1200, 3100, 6000))
    hi = np.fft.rfft(rng.standard_normal(len(t)))
    f = np.fft.rfftfreq(len(t), 1 / R)
    hi[(f < 9_000) | (f > 18_000)] = 0
    return (low + 0.05 * np.fft.irfft(hi, len(t)) / 0.3).astype(np.float32)


def test_the_band_above_8_khz_is_kept_and_takes_the_extended_gain():
    x = wideband()
    y = denoise_channels(x, R, Denoiser(StepMask(0.5, 0.5)))[:, 0]
    ratio = band_energy(y, 8_500, 20_000) / band_energy(x, 8_500, 20_000)
    assert ratio == pytest.approx(0.25, rel=0.05)  # gain 0.5 -> power 0.25, not 0
    low = band_energy(y, 200, 7_000) / band_energy(x, 200, 7_000)
    assert low == pytest.approx(0.25, rel=0.05)


def test_the_upper_band_gain_changes_when_the_mask_does():
    """Mask 1 for 1 s, then 0.1: the upper band's envelope steps at the same time as the
    low band's (delay-aligned, within one 10 ms hop)."""
    x = wideband(2.0)
    y = denoise_channels(x, R, Denoiser(StepMask(1.0, 0.1, switch=100)))[:, 0]

    def step_time(sig, lo, hi):
        spec = np.fft.rfft(sig)
        f = np.fft.rfftfreq(len(sig), 1 / R)
        spec[(f < lo) | (f >= hi)] = 0
        env = np.convolve(np.fft.irfft(spec, len(sig)) ** 2, np.ones(240) / 240, "same")
        mid = 0.5 * (np.median(env[: R // 2 + R // 4]) + np.median(env[-R // 2:]))
        return int(np.argmax(env[R // 2:] < mid)) + R // 2

    t_low, t_high = step_time(y, 200, 7_000), step_time(y, 9_000, 18_000)
    assert abs(t_low - R) < 0.02 * R and abs(t_high - t_low) <= 480, (t_low, t_high)


def test_band_bins_are_the_models_top_4_khz():
    b = band_bins(FrontEnd())
    assert (b.start, b.stop) == (80, 161) and EXTEND_HZ == (4_000.0, 8_000.0)


@pytest.mark.parametrize(("rate", "subtype"), [(48_000, "FLOAT"), (44_100, "PCM_24"),
                                               (16_000, "PCM_16")])
def test_file_bypass_is_bit_exact_and_stereo_stays_stereo(tmp_path, monkeypatch, rate, subtype):
    import edge.model
    from edge.cli import cli

    monkeypatch.setattr(edge.model, "StepModel", lambda *a, **k: _Described(StepMask()))
    x = wideband(1.0)[: rate]
    st = np.stack([x, -0.5 * x[::-1]], axis=1)
    src, dst, den = tmp_path / "in.wav", tmp_path / "byp.wav", tmp_path / "den.wav"
    sf.write(src, st, rate, subtype=subtype)
    ref = sf.read(src, dtype="float32")[0]
    r = CliRunner().invoke(cli, ["file", str(src), str(dst), "--bypass"])
    assert r.exit_code == 0, r.output
    out, sr = sf.read(dst, dtype="float32")
    assert sr == rate and out.shape == ref.shape and np.array_equal(out, ref)
    r = CliRunner().invoke(cli, ["file", str(src), str(den), "--json"])
    assert r.exit_code == 0, r.output
    y = sf.read(den, dtype="float32")[0]
    assert y.shape == ref.shape
    for c in (0, 1):  # each channel is its own input at half amplitude, not a downmix
        corr = np.dot(y[:, c], ref[:, c]) / np.linalg.norm(y[:, c]) / np.linalg.norm(ref[:, c])
        assert corr > 0.95 and np.std(y[:, c]) == pytest.approx(0.5 * np.std(ref[:, c]),
                                                                rel=0.1)


class _Described:
    """StepMask with what the file command prints about a model."""

    def __init__(self, m):
        self._m, self.front_end, self.backend = m, m.front_end, "test"
        self.metadata = type("M", (), {"name": "stepmask"})()

    def init_state(self):
        return self._m.init_state()

    def step(self, f, s):
        return self._m.step(f, s)

    def describe(self):
        return {"name": "stepmask"}
