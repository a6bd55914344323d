"""Speech-quality metrics on 16 kHz waveforms (numpy in, floats out)."""

from __future__ import annotations

import numpy as np

RATE = 16_000


def si_sdr(est: np.ndarray, ref: np.ndarray, eps: float = 1e-9) -> float:
    """Scale-invariant SDR in dB of (n,) ``est`` against (n,) ``ref``."""
    est = est.astype(np.float64) - np.mean(est)
    ref = ref.astype(np.float64) - np.mean(ref)
    alpha = np.dot(est, ref) / (np.dot(ref, ref) + eps)
    t = alpha * ref
    return float(10 * np.log10((np.dot(t, t) + eps) / (np.dot(est - t, est - t) + eps)))


def pesq_wb(est: np.ndarray, ref: np.ndarray) -> float:
    """Wideband PESQ (ITU-T P.862.2, MOS-LQO 1.04..4.64); NaN when PESQ cannot score it."""
    from pesq import pesq

    try:
        return float(pesq(RATE, ref.astype(np.float64), est.astype(np.float64), "wb"))
    except Exception:  # pesq raises on e.g. no utterance detected
        return float("nan")


def stoi(est: np.ndarray, ref: np.ndarray) -> float:
    from pystoi import stoi as _stoi

    return float(_stoi(ref, est, RATE, extended=False))


def score(est: np.ndarray, ref: np.ndarray) -> dict:
    """PESQ-WB, STOI and SI-SDR of one enhanced signal; lengths are matched first."""
    n = min(len(est), len(ref))
    est, ref = est[:n], ref[:n]
    return {"pesq": pesq_wb(est, ref), "stoi": stoi(est, ref), "si_sdr": si_sdr(est, ref)}
