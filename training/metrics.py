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


def stoi(est: np.ndarray, ref: np.ndarray, extended: bool = False) -> float:
    """STOI, or ESTOI with ``extended`` (Jensen & Taal 2016: also sensitive to the
    modulation distortions that strong masks cause)."""
    from pystoi import stoi as _stoi

    return float(_stoi(ref, est, RATE, extended=extended))


_DNSMOS = None
DNSMOS_SECONDS = 9.01  # the model's input length
# the DNS Challenge's published polynomial mapping of the raw outputs to P.835 MOS
_DNSMOS_POLY = {"sig": (-0.08397278, 1.22083953, 0.0052439),
                "bak": (-0.13166888, 1.60915514, -0.39604546),
                "ovrl": (-0.06766283, 1.11546468, 0.04602535)}


def dnsmos(x: np.ndarray, hop_s: float = 1.0) -> dict:
    """Non-intrusive DNSMOS P.835 (SIG, BAK, OVRL) of a 16 kHz signal, no reference needed.

    The model is the DNS Challenge's ``sig_bak_ovr.onnx`` as shipped inside the speechmos
    wheel (read from its folder, run with onnxruntime; speechmos itself is not imported:
    it pulls librosa only for the P.808 head, which P.835 does not use). As the reference
    implementation: the signal is looped to at least 9.01 s and scored on 9.01 s windows
    every ``hop_s`` (1 s there), the scores averaged. A long signal (many outputs back to
    back) with ``hop_s`` = 9.01 costs one model run per 9 s of audio instead of one a second.
    """
    global _DNSMOS
    if _DNSMOS is None:
        import importlib.util
        from pathlib import Path

        import onnxruntime as ort

        spec = importlib.util.find_spec("speechmos")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("DNSMOS needs the speechmos wheel (pip install speechmos)")
        path = Path(list(spec.submodule_search_locations)[0]) / "dnsmos_models" / (
            "sig_bak_ovr.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        _DNSMOS = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    n = int(DNSMOS_SECONDS * RATE)
    x = np.clip(np.asarray(x, np.float32), -1, 1)
    while len(x) < n:
        x = np.concatenate([x, x])
    hop = int(hop_s * RATE)
    raw = np.array([_DNSMOS.run(None, {"input_1": x[s:s + n][None]})[0][0]
                    for s in range(0, len(x) - n + 1, hop)])
    return {k: float(np.mean(np.polyval(_DNSMOS_POLY[k], raw[:, j])))
            for j, k in enumerate(("sig", "bak", "ovrl"))}


def score(est: np.ndarray, ref: np.ndarray, extended: bool = False) -> dict:
    """PESQ-WB, STOI and SI-SDR of one enhanced signal; lengths are matched first. With
    ``extended`` also ESTOI (DNSMOS is scored over many outputs at once: ``dnsmos``)."""
    n = min(len(est), len(ref))
    est, ref = est[:n], ref[:n]
    out = {"pesq": pesq_wb(est, ref), "stoi": stoi(est, ref), "si_sdr": si_sdr(est, ref)}
    if extended:
        out["estoi"] = stoi(est, ref, extended=True)
    return out
