"""edge/stream_resample.py: the live loop's streaming resamplers."""

from __future__ import annotations

import numpy as np
import pytest

from edge.stream_resample import MinPhaseResampler, StreamResampler


def _stream(rs, x: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    out, i, k = [], 0, 0
    while i < len(x):
        n = int(sizes[k % len(sizes)])
        out.append(rs(x[i:i + n]))
        i, k = i + n, k + 1
    return np.concatenate(out)


def _tone(f: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    return np.sin(2 * np.pi * f * np.arange(int(rate * seconds)) / rate).astype(np.float32)


def _db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(x ** 2)) / np.sqrt(0.5))


@pytest.mark.parametrize("rate", [48_000, 32_000])
def test_passband_kept_aliases_removed_any_block_size(rate):
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 1000, 50)
    one_shot = StreamResampler(rate, 16_000)(_tone(1000, rate))
    blocks = _stream(StreamResampler(rate, 16_000), _tone(1000, rate), sizes)
    assert len(one_shot) == len(blocks) == 16_000
    np.testing.assert_allclose(blocks, one_shot, atol=1e-6)  # block size never matters
    assert abs(_db(one_shot[800:])) < 0.05  # 1 kHz passes
    assert abs(_db(StreamResampler(rate, 16_000)(_tone(7000, rate))[800:])) < 0.1
    # 9 kHz would fold onto 7 kHz: the anti-alias filter takes it down by > 80 dB
    assert _db(StreamResampler(rate, 16_000)(_tone(9000, rate))[800:]) < -80


def test_upsampling_removes_images_and_keeps_level():
    up = StreamResampler(16_000, 48_000)
    y = _stream(up, _tone(3000, 16_000), np.array([160, 7, 333]))
    assert len(y) == 48_000 and abs(_db(y[2400:])) < 0.05
    spec = np.abs(np.fft.rfft(y[2400:2400 + 38_400] * np.hanning(38_400)))
    f = np.fft.rfftfreq(38_400, 1 / 48_000)
    image = spec[(f > 12_900) & (f < 13_100)].max()  # 16 k - 3 k: the first image
    assert 20 * np.log10(image / spec.max()) < -80


def test_minimum_phase_delay_is_a_fraction_of_soxr_lq():
    """An impulse through 48 k -> 16 k -> 48 k peaks within 0.5 ms; soxr LQ holds back
    6.25 ms each way."""
    x = np.zeros(9600, dtype=np.float32)
    x[4800] = 1.0
    down, up = StreamResampler(48_000, 16_000), StreamResampler(16_000, 48_000)
    y = _stream(up, _stream(down, x, np.array([480])), np.array([160]))
    assert down.kind == up.kind == "min-phase"
    assert 0 <= (np.argmax(np.abs(y)) - 4800) / 48 < 0.5
    lq = StreamResampler(48_000, 16_000, "LQ")
    held = 16_000 - len(_stream(lq, np.zeros(48_000, np.float32), np.array([480])))
    assert held / 16 > 5  # ms withheld by soxr LQ's linear-phase filter


def test_other_ratios_fall_back_to_soxr_and_identity_is_free():
    assert StreamResampler(44_100, 16_000).kind == "soxr-LQ"
    assert StreamResampler(48_000, 16_000, "HQ").kind == "soxr-HQ"
    same = StreamResampler(16_000, 16_000)
    x = np.ones(10, np.float32)
    assert same.kind == "identity" and same(x) is x
    with pytest.raises(ValueError, match="not an integer ratio"):
        MinPhaseResampler(44_100, 16_000)
