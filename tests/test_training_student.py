"""The student's two masks: the trained one (the loss's m_s) and the applied, post-filtered one
that the step model and the TFLite export compute."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training.config import ConfigError, load_config  # noqa: E402
from training.student import Student, post_filter, step_module  # noqa: E402


def test_post_filter_identity_by_default():
    torch.manual_seed(0)
    s = Student(hidden=16, embed=8, mask_floor=0.1).eval()
    x = torch.randn(2, 20, 161)
    assert torch.equal(s(x), s.train_mask(x)[0])


def test_post_filter_maps_gate_ends_to_floor_and_one():
    g = torch.tensor([0.0, 0.5, 1.0])
    m = post_filter(g, 2.0, 0.05)
    assert torch.allclose(m, torch.tensor([0.05, 0.05 + 0.95 * 0.25, 1.0]))
    assert torch.all(post_filter(torch.rand(100), 1.7, 0.03) >= 0.03)


def test_step_form_applies_the_same_post_filter():
    torch.manual_seed(1)
    s = Student(hidden=16, embed=8, mask_floor=0.1, mask_power=1.7, out_floor=0.03).eval()
    x = torch.randn(1, 25, 161)
    with torch.no_grad():
        seq = s(x)[0]
        step, h, outs = step_module(s), torch.zeros(1, 16), []
        for t in range(25):
            m, h = step(x[:, t], h)
            outs.append(m[0])
    assert torch.allclose(torch.stack(outs), seq, atol=1e-6)
    assert float(seq.min()) >= 0.03 - 1e-6
    assert not torch.allclose(seq, s.train_mask(x)[0][0].detach())  # the filter did something


def test_config_out_floor_is_optional_float(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[student]\nmask_floor = 0.1\n")
    sc = load_config(p).student
    assert (sc.out_floor, sc.mask_power) == (None, 1.0)  # no post-filter unless asked
    p.write_text("[student]\nout_floor = 0\nmask_power = 2\n")
    sc = load_config(p).student
    assert (sc.out_floor, sc.mask_power) == (0.0, 2.0)
    p.write_text('[student]\nout_floor = "low"\n')
    with pytest.raises(ConfigError, match="out_floor must be a number"):
        load_config(p)


def test_postfilter_choice_keeps_the_trained_masks_stoi():
    """benchmarks/mask_postfilter.py picks the best PESQ that does not cost intelligibility."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "mask_postfilter.py"
    spec = importlib.util.spec_from_file_location("mask_postfilter", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def row(pesq, stoi):
        return {"all": {"pesq": pesq, "stoi": stoi, "si_sdr": 0.0, "si_sdr_i": 0.0}}

    grid = {"1/0.1": row(1.79, 0.839), "1.7/0.03": row(1.947, 0.839),
            "2/0.03": row(1.958, 0.837)}
    assert mod.choose(grid, 0.1) == "1.7/0.03"
    assert "(chosen)" in mod.markdown({"mixtures": 3, "snrs": (0.0,), "trained_floor": 0.1,
                                       "chosen": "1.7/0.03", "grid": grid})


def test_headroom_oracle_is_the_ideal_mask_and_beats_the_noisy_input():
    """benchmarks/denoise_headroom.py: the oracle row is m_ref applied, which must clean up
    a mixture far past the noisy input; the table names every split and system."""
    import importlib.util
    from pathlib import Path

    from training.metrics import si_sdr

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "denoise_headroom.py"
    spec = importlib.util.spec_from_file_location("denoise_headroom", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rng = np.random.default_rng(0)
    t = np.arange(16_000) / 16_000
    clean = (0.1 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(
        np.float32)
    noisy = (clean + 0.1 * rng.standard_normal(16_000)).astype(np.float32)
    y = mod.oracle_irm({"clean": clean, "noisy": noisy})
    assert y.shape == noisy.shape
    assert si_sdr(y, clean) > si_sdr(noisy, clean) + 10

    def row(v):
        cell = {"pesq": 1.5, "stoi": 0.8, "si_sdr": v, "si_sdr_i": v}
        return {"all": cell, "snr": {"+0": cell}}

    table = mod.markdown({"utterances": 2, "snrs": (0.0,), "model": "m.tflite", "splits": {
        s: {"systems": {"student_int8": row(5.0), "oracle_irm": row(12.0)}}
        for s in mod.SPLITS}})
    assert all(f"| {s} | oracle_irm | +12.0 (1.50)" in table for s in mod.SPLITS)


def test_carry_state_keeps_or_zeroes_each_sequence():
    from training.distill import carry_state

    h = torch.ones(1, 4, 3)
    draws = np.array([0.1, 0.6, 0.49, 0.5])
    out = carry_state(h, draws, 0.5)
    assert out[0, :, 0].tolist() == [0.0, 1.0, 0.0, 1.0]  # zeroed where draw < p_reset
    assert carry_state(h, draws, 1.0) is None  # always fresh: the old behaviour
    assert carry_state(None, draws, 0.5) is None  # the first batch starts at zero
    assert torch.equal(carry_state(h, draws, 0.0), h)


def test_train_mask_continues_from_a_given_state():
    """Two halves run with the state carried equal one whole run: what distillation relies
    on when a batch starts from the state the previous batch left behind."""
    torch.manual_seed(0)
    s = Student(hidden=16, embed=8, mask_floor=0.1).eval()
    x = torch.randn(2, 30, 161)
    with torch.no_grad():
        whole, _ = s.train_mask(x)
        a, h = s.train_mask(x[:, :12])
        b, _ = s.train_mask(x[:, 12:], h)
    assert torch.allclose(torch.cat([a, b], 1), whole, atol=1e-6)


def test_config_rejects_a_bad_speed_range_or_reset_share(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[data]\nspeed = [1.1, 0.9]\n")
    with pytest.raises(ConfigError, match="speed must be"):
        load_config(p)
    p.write_text("[student]\nsi_sdr_weight = -0.1\n")
    with pytest.raises(ConfigError, match="si_sdr_weight must be"):
        load_config(p)
    p.write_text("[student]\np_state_reset = 2\n")
    with pytest.raises(ConfigError, match="p_state_reset is a share"):
        load_config(p)
    p.write_text("[data]\nspeed = [0.8, 1.2]\n[student]\np_state_reset = 0.5\n")
    cfg = load_config(p)
    assert cfg.data.speed == (0.8, 1.2) and cfg.student.p_state_reset == 0.5


def test_continuous_runs_one_stream_and_per_mixture_sees_the_whole_mixture():
    """training.evaluate: both answer only their mixtures' own noisy arrays (as run_systems
    calls them); ``continuous`` runs the system once over the concatenation, so a stateful
    system carries its state from one mixture into the next."""
    from training.evaluate import continuous, per_mixture

    mixtures = [{"noisy": np.ones(3, np.float32), "clean": np.full(3, 2.0, np.float32)},
                {"noisy": np.ones(4, np.float32), "clean": np.full(4, 5.0, np.float32)}]
    calls = []

    def running_sum(x):  # the output depends on everything heard before
        calls.append(len(x))
        return np.cumsum(x)

    sys_ = continuous(running_sum, mixtures)
    np.testing.assert_array_equal(sys_(mixtures[1]["noisy"]), [4, 5, 6, 7])
    np.testing.assert_array_equal(sys_(mixtures[0]["noisy"]), [1, 2, 3])
    assert calls == [7]  # one stream, run once
    oracle = per_mixture(lambda m: m["clean"] * 10, mixtures)
    np.testing.assert_array_equal(oracle(mixtures[1]["noisy"]), np.full(4, 50.0))
    for s in (sys_, oracle):
        with pytest.raises(ValueError, match="not one of its mixtures"):
            s(np.ones(3, np.float32))  # equal values, but not a mixture's own array
