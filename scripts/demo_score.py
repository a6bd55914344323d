"""Print the demo's SI-SDR before and after denoising, against the clean speech."""

from __future__ import annotations

import sys

import numpy as np

from edge.audio import load_audio


def si_sdr(ref: np.ndarray, est: np.ndarray) -> float:
    a = np.dot(est, ref) / np.dot(ref, ref)
    return float(10 * np.log10(np.sum((a * ref) ** 2) / np.sum((a * ref - est) ** 2)))


def main(clean: str, noisy: str, denoised: str) -> None:
    s = load_audio(clean).samples
    x, y = (load_audio(p).samples[: len(s)] for p in (noisy, denoised))
    before, after = si_sdr(s, x), si_sdr(s, y)
    print(f"SI-SDR vs clean speech: noisy {before:.1f} dB -> denoised {after:.1f} dB "
          f"({after - before:+.1f} dB)")


if __name__ == "__main__":
    main(*sys.argv[1:4])
