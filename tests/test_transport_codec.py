"""Opus through the system libopus: CBR sizes, quality, FEC and PLC."""

from __future__ import annotations

import numpy as np
import pytest

from edge.transport.codec import FRAME, OpusDecoder, OpusEncoder


def _speechlike(n_frames: int) -> np.ndarray:
    t = np.arange(n_frames * FRAME) / 16_000
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (0.3 * env * np.sin(2 * np.pi * 220 * t + 3 * np.sin(2 * np.pi * 5 * t))
            ).astype(np.float32)


@pytest.mark.parametrize("kbps", [36, 52, 188])
@pytest.mark.parametrize("fec", [False, True])
def test_packet_size_follows_bitrate(kbps, fec):
    enc = OpusEncoder(kbps * 1000, fec=fec)
    x = _speechlike(100)
    sizes = np.array([len(enc.encode(x[i * FRAME:(i + 1) * FRAME])) for i in range(100)])
    target = kbps * 1000 * 20 // 8000
    assert enc.packet_bytes == target
    # padded to the budget; an overshoot is repaid by the following packets
    assert sizes.sum() <= 100 * target + sizes.max() - target
    assert sizes.mean() == pytest.approx(target, rel=0.02)


def test_decode_reconstructs_and_conceals():
    enc, dec = OpusEncoder(64_000, fec=True, loss_pct=10), OpusDecoder()
    x = _speechlike(50)
    pk = [enc.encode(x[i * FRAME:(i + 1) * FRAME]) for i in range(50)]
    y = np.concatenate([dec.decode(p) for p in pk])
    d = 104  # Opus decoder delay at 16 kHz (encoder lookahead)
    err = y[d:] - x[:-d]
    assert 10 * np.log10(np.mean(x ** 2) / np.mean(err ** 2)) > 15
    assert dec.decode_fec(pk[10]).shape == (FRAME,)
    assert dec.conceal().shape == (FRAME,)


def test_runtime_reconfigure_and_corrupt_payload():
    enc = OpusEncoder(64_000)
    enc.configure(128_000, fec=False, loss_pct=0)
    assert (enc.bitrate_bps, enc.fec, enc.loss_pct) == (128_000, False, 0)
    assert len(enc.encode(np.zeros(FRAME, np.float32))) == 320  # padded even for silence
    with pytest.raises(Exception, match="corrupt"):
        OpusDecoder().decode(b"\xff\xff\xff")
    with pytest.raises(Exception, match="frame"):
        enc.encode(np.zeros(10, np.float32))
