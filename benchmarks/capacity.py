"""Issue 19.3 benchmark: the link-capacity estimate (probe-train dispersion) against the link
emulator's rate limit, and the bitrate `host-calibrate tune` then chooses without `--sweep`.

Every part in its own process on loopback, as a device would run them: `edge-denoise receive`,
`host-calibrate emulate --rate R` and `edge-denoise send CLIP --loop --telemetry tx.jsonl`
(64 kbit/s, the default parameters) for ``--seconds``; the sender's telemetry file (what the
serial agent serves to `collect`) is then tuned exactly as `host-calibrate tune --pin
protocol=udp` would. Rates 80, 150, 300 kbit/s and unlimited, with probing; 80 kbit/s and
unlimited also without (`--no-probe`: the old behaviour, and what the probes cost in latency).

    .venv/bin/python benchmarks/capacity.py [--seconds 20]

Writes benchmarks/results/capacity.json and capacity.md.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_io import write_results  # noqa: E402
from host import calibrate, ga  # noqa: E402
from host.linkcheck import is_live  # noqa: E402

CLIP = ROOT.parent / "shared" / "data" / "speech" / "vctk" / "p278" / "p278_003.flac"
RESULTS = ROOT / "benchmarks" / "results"
PY = sys.executable
RUNS = [(80, True), (150, True), (300, True), (0, True), (80, False), (0, False)]
SETTLE_S = 3.0  # records after this much of the stream count as the steady estimate


def _port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(log: Path, *argv: str, wait_for: bytes = b"") -> tuple[subprocess.Popen, object]:
    fh = log.open("wb")
    p = subprocess.Popen([PY, "-m", *argv], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while wait_for and wait_for not in log.read_bytes():
        if p.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{argv[:2]} did not start: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    return p, fh


def _stop(p: subprocess.Popen, fh) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    fh.close()


def run(rate: int, probe: bool, seconds: float, work: Path) -> dict:
    """One stream through the emulator at ``rate`` kbit/s (0: unlimited)."""
    rx_port, emu_port = _port(), _port()
    tx_tel = work / "tx.jsonl"
    rx = _start(work / "rx.log", "edge", "receive", "--listen", f"127.0.0.1:{rx_port}",
                wait_for=b"listening")
    emu = _start(work / "emu.log", "host", "emulate", "--listen", f"127.0.0.1:{emu_port}",
                 "--forward", f"127.0.0.1:{rx_port}", "--rate", f"{rate}kbit",
                 "--truth", str(work / "truth.json"), wait_for=b"emulating")
    tx = _start(work / "tx.log", "edge", "send", str(CLIP), "--loop", "--json", "--to",
                f"udp://127.0.0.1:{emu_port}", "--telemetry", str(tx_tel),
                "--probe" if probe else "--no-probe")
    time.sleep(seconds)
    for proc in (tx, emu, rx):
        _stop(*proc)
    stats = json.loads((work / "tx.log").read_text().strip().splitlines()[-1])
    truth = json.loads((work / "truth.json").read_text())
    recs = [r for r in (json.loads(x) for x in tx_tel.read_text().splitlines()) if is_live(r)]
    t0 = recs[0]["t"] - 1.0
    steady = [r for r in recs if r["t"] - t0 >= SETTLE_S]
    caps = [r["capacity_kbps"] for r in steady]
    first = next((r["t"] - t0 for r in recs if r["capacity_kbps"] > 0), None)
    records, _ = calibrate.read_records(tx_tel)
    res = calibrate.tune([r for r in records if is_live(r.telemetry.to_dict())],
                         cfg=ga.GAConfig(seed=0), pins={"protocol": "udp"})
    lat = [r["latency_ms"] for r in steady]
    out = {
        "rate_kbps": rate or None, "probe": probe, "seconds": seconds, "records": len(recs),
        "capacity_kbps": caps[-1] if caps else 0.0,
        "capacity_min_kbps": min(caps, default=0.0), "capacity_max_kbps": max(caps, default=0.0),
        "first_estimate_s": first,
        "bandwidth_util": float(np.mean([r["bandwidth_util"] for r in steady])),
        "stream_kbps": float(np.mean([r["bitrate_kbps"] for r in steady])),
        "probe_kbps": 8 * stats["probe_bytes"] / seconds / 1000,
        "loss_pct": truth["loss_pct"],
        "latency_ms_mean": float(np.mean(lat)), "latency_ms_max": float(np.max(lat)),
        "jitter_ms_mean": float(np.mean([r["jitter_ms"] for r in steady])),
        "tuned": res.params.to_dict(),
        "tune_capacity_kbps": [round(c.capacity_kbps, 1) for c in res.model.conditions],
    }
    if rate:
        out["error_pct"] = 100.0 * (out["capacity_kbps"] - rate) / rate
        out["worst_error_pct"] = 100.0 * max(abs(c - rate) for c in caps) / rate if caps else None
    return out


def table(rows: list[dict]) -> str:
    lines = ["| link limit | probing | capacity estimate, kbit/s (range over the seconds) | error "
             "| first estimate | utilisation | probes | loss | latency mean / max | jitter "
             "| tuned bitrate |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        limit = f"{r['rate_kbps']} kbit/s" if r["rate_kbps"] else "unlimited"
        if r["capacity_kbps"]:
            est = (f"{r['capacity_kbps']:.1f} ({r['capacity_min_kbps']:.1f}–"
                   f"{r['capacity_max_kbps']:.1f})" if r["rate_kbps"] else
                   f"{r['capacity_kbps'] / 1000:.0f} Mbit/s (a lower bound)")
            first = f"{r['first_estimate_s']:.1f} s"
        else:
            est, first = "— (utilisation of its own bitrate)", "—"
        err = (f"{round(r['error_pct'], 1) + 0.0:+.1f} % (worst {r['worst_error_pct']:.1f} %)"
               if r.get("error_pct") is not None and r["capacity_kbps"] else "—")
        t = r["tuned"]
        share = f" × share {t['share']:g}" if t["share"] < 1 else ""
        lines.append(
            f"| {limit} | {'on' if r['probe'] else 'off'} | {est} | {err} | {first} | "
            f"{r['bandwidth_util']:.2f} | {r['probe_kbps']:.1f} kbit/s | {r['loss_pct']:.2f} % | "
            f"{r['latency_ms_mean']:.1f} / {r['latency_ms_max']:.1f} ms | "
            f"{r['jitter_ms_mean']:.1f} ms | {t['bitrate_kbps']} kbit/s{share} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="Stream length per run.")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (rate, probe) in enumerate(RUNS):
            work = Path(tmp) / str(i)
            work.mkdir()
            rows.append(run(rate, probe, args.seconds, work))
            print(json.dumps(rows[-1]), file=sys.stderr)
    res = {"clip": str(CLIP.relative_to(ROOT.parent)), "bitrate_kbps": 64,
           "settle_s": SETTLE_S, "runs": rows}
    md = (f"Probe-train capacity estimate vs the emulator's rate limit ({args.seconds:g} s "
          "per run, 64 kbit/s stream, real processes on loopback; estimate and utilisation "
          f"from {SETTLE_S:g} s on; probes: their bits over the whole run, startup trains "
          "included; tuned = `host-calibrate tune --pin protocol=udp` on the telemetry; the "
          "share does not bind where share × capacity is above the bitrate)\n\n" + table(rows))
    write_results(args.out, "capacity", res, md)


if __name__ == "__main__":
    main()
