"""Make the demo's noisy input: a speech file from ../shared/data mixed with real noise at 5 dB.

The team's recordings are never copied into the repository; when ../shared/data is absent
(a user's own clone) a synthetic voiced signal in pink noise stands in, and we say so.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from edge.audio import load_audio, save_audio

SPEECH = "speech/speechocean762/0001"  # overridden by --speech
NOISE = "noise/freesound_cc0/cafe.flac"


def mix(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    noise = np.resize(noise, len(clean))
    gain = np.sqrt(np.mean(clean**2) / (np.mean(noise**2) * 10 ** (snr_db / 10) + 1e-12))
    y = clean + gain * noise
    return (y / max(1.0, np.abs(y).max() / 0.9)).astype(np.float32)


def synthetic(sr: int = 16_000, seconds: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(int(sr * seconds)) / sr
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 20)) * (np.sin(2 * np.pi * 2 * t) > 0)
    clean = 0.1 * voiced.astype(np.float32)
    white = rng.standard_normal(len(t) + 1)
    pink = np.fft.irfft(np.fft.rfft(white) / np.sqrt(np.arange(1, len(white) // 2 + 2)))
    return clean, pink[: len(t)].astype(np.float32)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shared", type=Path, default=Path("../shared"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--snr", type=float, default=5.0)
    args = ap.parse_args()
    data = args.shared / "data"
    speech = sorted((data / SPEECH).glob("*.flac"))[:3] if data.is_dir() else []
    if speech and (data / NOISE).is_file():
        clean = np.concatenate([load_audio(p).samples for p in speech])
        noise = load_audio(data / NOISE).samples
        src = f"{len(speech)} utterances from {SPEECH} + {NOISE}"
    else:
        clean, noise = synthetic()
        src = "synthetic voiced signal + pink noise (../shared/data not found)"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_audio(args.out, mix(clean, noise, args.snr))
    save_audio(args.out.with_name("clean.wav"), clean)
    print(f"demo input: {args.out} ({len(clean) / 16000:.1f} s, {args.snr:g} dB SNR; {src})",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
