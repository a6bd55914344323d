import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.dsp import (
    FrameDft,
    FrontEnd,
    StreamingFrontEnd,
    apply_mask,
    ideal_ratio_mask,
    istft,
    log_power,
    n_frames,
    stft,
)


def _stream(x: np.ndarray, fe: FrontEnd) -> tuple[np.ndarray, np.ndarray]:
    """Push x hop by hop (zero-padded to flush), return frames and the delay-compensated output."""
    t = n_frames(len(x), fe)
    padded = np.zeros(t * fe.hop, dtype=np.float32)
    padded[: len(x)] = x
    s = StreamingFrontEnd(fe)
    frames, out = [], []
    for i in range(t):
        spec = s.analyse(padded[i * fe.hop:(i + 1) * fe.hop])
        frames.append(spec)
        out.append(s.synthesise(spec))
    y = np.concatenate(out)[fe.overlap:fe.overlap + len(x)]
    return np.array(frames), y


@settings(max_examples=40, deadline=None)
@given(hop=st.sampled_from([16, 64, 160]), overlap_factor=st.sampled_from([2, 3]),
       pad=st.sampled_from([0, 32]), seed=st.integers(0, 2**16))
def test_frame_dft_matches_the_fft_path(hop, overlap_factor, pad, seed):
    """The hop loop's matrix transform (edge.denoise) gives the FFT path's frames, log-power
    features and output, masked or not, to float32 rounding; n_fft > win zero-pads."""
    win = hop * overlap_factor
    fe = FrontEnd(win=win, hop=hop, n_fft=win + pad)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, 12 * hop).astype(np.float32)
    masks = rng.uniform(0, 1, (12, fe.n_bins)).astype(np.float32)
    ref, d = StreamingFrontEnd(fe), FrameDft(fe)
    d.reset()
    b = fe.n_bins
    for i in range(12):
        hop_in = x[i * hop:(i + 1) * hop]
        spec = ref.analyse(hop_in)
        st_ = d.analyse(hop_in)
        np.testing.assert_allclose(st_[:b] + 1j * st_[b:], spec, atol=2e-5)
        np.testing.assert_allclose(d.log_power(st_.copy()), log_power(spec, fe), atol=1e-3,
                                   rtol=1e-4)
        st_[:b] *= masks[i]
        st_[b:] *= masks[i]
        np.testing.assert_allclose(d.synthesise(st_), ref.synthesise(apply_mask(spec, masks[i])),
                                   atol=2e-6)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3000), hop=st.sampled_from([8, 16, 40, 64, 160]),
       overlap_factor=st.sampled_from([2, 3, 4]), seed=st.integers(0, 2**16))
def test_streaming_matches_offline(n, hop, overlap_factor, seed):
    fe = FrontEnd(win=hop * overlap_factor, hop=hop, n_fft=hop * overlap_factor)
    x = np.random.default_rng(seed).uniform(-1, 1, n).astype(np.float32)
    spec = stft(x, fe)
    frames, y_stream = _stream(x, fe)
    np.testing.assert_allclose(frames, spec, atol=1e-4)
    y = istft(spec, len(x), fe)
    np.testing.assert_allclose(y_stream, y, atol=1e-5)
    np.testing.assert_allclose(y, x, atol=1e-5)  # analysis + synthesis reconstructs perfectly
    assert np.isfinite(fe.synthesis_window).all()


def test_window_must_overlap():
    with pytest.raises(ValueError, match="at least two hops"):
        FrontEnd(win=160, hop=160, n_fft=160)


def test_default_front_end():
    fe = FrontEnd()
    assert (fe.win, fe.hop, fe.n_bins) == (320, 160, 161)
    assert fe.latency_s == 0.02


def test_irm_and_masking():
    rng = np.random.default_rng(1)
    s = rng.standard_normal(4000).astype(np.float32)
    n = rng.standard_normal(4000).astype(np.float32)
    S, X = stft(s), stft(s + n)
    m = ideal_ratio_mask(S, X)
    assert m.dtype == np.float32 and m.min() >= 0 and m.max() <= 1
    np.testing.assert_array_equal(ideal_ratio_mask(S, S) > 0.99, np.abs(S) > 1e-3)
    y = istft(apply_mask(X, m), len(s))
    assert np.mean((y - s) ** 2) < np.mean(n**2)  # the IRM removes most of the noise
