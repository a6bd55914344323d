"""One sender, several receivers with PTP playout, each behind its own emulated link, as real
processes in network namespaces (test_transport_playout_netns.py, benchmarks/playout.py).

The sender's namespace is the hub: the sender sends one stream to one ``host-calibrate
emulate`` relay per receiver (``send --to A --to B``), each relay impairs its copy and forwards
it over the bridge to a receiver in its own namespace, which records with ``--playout ptp``.
All namespaces share the kernel's CLOCK_REALTIME, so here every host's "PTP-disciplined clock"
is the same clock: the run checks the media-clock chain (stamps, offset, codec delay,
concealment, late packets), not PTP's own accuracy (benchmarks/clock.py measures that).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf

from edge.transport.stats import lag_samples
from host.system import netns

BIN = Path(sys.executable).parent
RATE = 16_000
SAMPLE_NS = 1_000_000_000 // RATE
PORT = 5004


@contextmanager
def star(prefix: str, n: int) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """The sender's namespace and ``n`` receiver namespaces on its bridge (the same topology
    as ``host-calibrate system up``): yields (hub namespace, [(namespace, address), ...]),
    deleted at the end."""
    net = netns.names(prefix, n)
    made = [net["host_ns"], *(d["ns"] for d in net["devices"])]
    try:
        netns.add_host(net)
        for d in net["devices"]:
            netns.add_device(net, d)
        yield net["host_ns"], [(d["ns"], d["ip"]) for d in net["devices"]]
    finally:
        for ns in made:
            netns.delete(ns)


def _start(ns: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", ns, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def run(hub: str, spokes: list[tuple[str, str]], tmp: Path, wav: Path,
        impairments: list[list[str]], link_offset_ms: float, timeout_s: float,
        playout: str = "ptp", rx_args: tuple[str, ...] = ()) -> dict:
    """Stream ``wav`` from ``hub`` to receiver namespaces ``spokes`` ((namespace, address));
    link i impaired by emulator options ``impairments[i]``. Returns the sender's summary,
    each receiver's summary (+ its recording path) and each emulator's truth. ``playout``
    'adaptive' runs today's jitter buffer instead, as the baseline; ``rx_args`` go to each
    ``receive``."""
    procs: list[subprocess.Popen] = []
    try:
        rxs, emus = [], []
        for i, (ns, addr) in enumerate(spokes):
            rec = tmp / f"rx{i}.wav"
            p = _start(ns, str(BIN / "edge-denoise"), "receive", "--listen", f"{addr}:{PORT}",
                       "--playout", playout,
                       *(["--link-offset", str(link_offset_ms)] if playout == "ptp" else []),
                       "--record", str(rec), "--json", "--duration", str(timeout_s), *rx_args)
            procs.append(p)
            rxs.append((p, rec))
        for p, _ in rxs:
            line = p.stderr.readline()
            assert "listening" in line, line + p.stderr.read()
        for i, ((_, addr), imp) in enumerate(zip(spokes, impairments, strict=True)):
            p = _start(hub, str(BIN / "host-calibrate"), "emulate", "--listen",
                       f"127.0.0.1:{PORT + 1 + i}", "--forward", f"{addr}:{PORT}",
                       "--truth", str(tmp / f"truth{i}.json"), "--duration", str(timeout_s),
                       "--seed", str(11 + i), *imp)
            procs.append(p)
            emus.append(p)
            line = p.stderr.readline()
            assert "emulating" in line, line + p.stderr.read()
        snd = subprocess.run(["ip", "netns", "exec", hub, str(BIN / "edge-denoise"), "send",
                              str(wav), *[a for i in range(len(spokes)) for a in
                                          ("--to", f"udp://127.0.0.1:{PORT + 1 + i}")],
                              "--json"], capture_output=True, text=True, timeout=timeout_s)
        assert snd.returncode == 0, snd.stderr
        receivers = []
        for p, rec in rxs:
            out, err = p.communicate(timeout=30)
            assert p.returncode == 0, err
            receivers.append({**json.loads(out.strip().splitlines()[-1]), "record": str(rec)})
        truths = []
        for i, p in enumerate(emus):
            p.terminate()  # SIGTERM: the emulator writes its truth and exits cleanly
            p.communicate(timeout=30)
            truths.append(json.loads((tmp / f"truth{i}.json").read_text()))
        return {"sender": json.loads(snd.stdout.strip().splitlines()[-1]),
                "receivers": receivers, "truths": truths}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()


def speech(data: Path, seconds: float) -> np.ndarray:
    """VCTK utterances of the shared corpus back to back (repeated if need be), ``seconds``
    long, 16 kHz."""
    parts, n = [], 0
    files = sorted((data / "speech" / "vctk").glob("p2*/*.flac"))
    while n < seconds * RATE:
        for f in files:
            x, sr = sf.read(f, dtype="float32")
            assert sr == RATE
            parts.append(x)
            n += len(x)
            if n >= seconds * RATE:
                break
    return np.concatenate(parts)[: int(seconds * RATE)]


def recording(rx: dict) -> tuple[np.ndarray, int]:
    """(samples, output index of the first sample = PTP time x 16 000) of a receiver."""
    x, sr = sf.read(rx["record"], dtype="float32")
    assert sr == RATE
    return x, rx["record_start_ns"] // SAMPLE_NS


def windows(ref: np.ndarray, ref_start: int, deg: np.ndarray, deg_start: int,
            window_s: float, max_lag: int = 160, min_peak: float = 0.5) -> list[dict]:
    """Lag of ``deg`` against ``ref`` on the common PTP timeline, window by window: ``t_s``
    (window start, s from the common start), ``lag`` (16 kHz samples; 0 = aligned), ``peak``.
    Windows where the two hardly correlate (silence) are left out."""
    start = max(ref_start, deg_start)
    end = min(ref_start + len(ref), deg_start + len(deg))
    w = int(window_s * RATE)
    out = []
    for a in range(start + max_lag, end - w - max_lag + 1, w):
        r = ref[a - ref_start:a - ref_start + w]
        d = deg[a - deg_start - max_lag:a - deg_start + w + max_lag]
        lag, peak = lag_samples(r, d, max_lag=2 * max_lag)
        if peak >= min_peak:
            out.append({"t_s": (a - start) / RATE, "lag": lag - max_lag, "peak": peak})
    return out


def source_error(src: np.ndarray, rx: dict, capture_start_ns: int, link_offset_ms: float
                 ) -> tuple[float, float]:
    """How far from capture time + link offset the source plays in a recording: (error in
    16 kHz samples, correlation peak). Source sample 0 was captured at ``capture_start_ns``."""
    x, start = recording(rx)
    want = (capture_start_ns + int(link_offset_ms * 1e6)) / SAMPLE_NS - start
    j = 2 * RATE  # a stretch from 2 s on: the recording starts up to a second after sample 0
    n = min(20 * RATE, len(src) - j - RATE)
    lag, peak = lag_samples(src[j:j + n], x, max_lag=len(x))
    return lag - (want + j), peak
