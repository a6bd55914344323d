"""PTP playout benchmark (issue #19 item 2): do two receivers of one stream play in step?

One sender, two receivers in their own network namespaces behind different links (5 ± 1 ms;
40 ± 10 ms with 1 % loss), real processes (``edge-denoise send --to A --to B``,
``host-calibrate emulate`` per link, ``edge-denoise receive --playout ptp --record``); see
tests/playout_rig.py. For ``--minutes`` (default 5) of speech it measures, window by window
(10 s), the lag between the two recordings on the common PTP timeline by cross-correlation with
parabolic sub-sample refinement (target: within one sample at 48 kHz, ±20.8 µs), and where the
source plays in each recording against capture time + link offset. A 30 s baseline with
today's adaptive jitter buffer (``--playout adaptive``) shows the misalignment being fixed.
All namespaces share one CLOCK_REALTIME: this checks the media-clock chain, not PTP's own
accuracy (benchmarks/clock.py). Not in CI (tests/test_transport_playout_netns.py runs 24 s).

    .venv/bin/python benchmarks/playout.py [--minutes M]
Writes benchmarks/results/playout.json and .md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

DATA = ROOT.parent / "shared" / "data"
OFFSET_MS = 150.0
LINKS = [["--delay", "5ms", "--jitter", "1ms"],
         ["--delay", "40ms", "--jitter", "10ms", "--loss", "1%"]]
RX_KEYS = ("received", "lost", "late", "fec", "plc", "missed", "resyncs", "latency_ms_median",
           "jitter_ms", "seconds")
US_PER_SAMPLE = 1e6 / 16_000
TOLERANCE_US = 1e6 / 48_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--window", type=float, default=10.0, help="seconds per lag window")
    ap.add_argument("--baseline-seconds", type=float, default=30.0)
    ap.add_argument("--realtime-priority", type=int, default=10,
                    help="receive --realtime-priority (SCHED_FIFO) for the PTP run; 0: off")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("Error: network namespaces need root")

    import numpy as np
    import soundfile as sf
    from playout_rig import RATE, recording, run, source_error, speech, star, windows

    with star(f"hb{os.getpid()}", 2) as (hub, where), tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        # baseline: today's jitter buffer, recordings compared as they are
        src = speech(DATA, args.baseline_seconds)
        sf.write(tmp / "base.wav", src, RATE)
        (tmp / "base").mkdir()
        base = run(hub, where, tmp / "base", tmp / "base.wav", LINKS, OFFSET_MS,
                   timeout_s=args.baseline_seconds + 60, playout="adaptive")
        # its recordings hold frames, not play times: the play time after sending is the
        # receiver's path latency plus its jitter buffer's delay (both in its summary)
        play = [rx["latency_ms_median"] + rx["delay_ms"] for rx in base["receivers"]]
        # PTP playout, the long run
        seconds = args.minutes * 60
        src = speech(DATA, seconds)
        sf.write(tmp / "in.wav", src, RATE)
        (tmp / "ptp").mkdir()
        t0 = time.monotonic()
        res = run(hub, where, tmp / "ptp", tmp / "in.wav", LINKS, OFFSET_MS,
                  timeout_s=seconds + 120,
                  rx_args=("--realtime-priority", str(args.realtime_priority)))
        wall = time.monotonic() - t0
        (a, a0), (b, b0) = (recording(rx) for rx in res["receivers"])
        lags = windows(a, a0, b, b0, window_s=args.window)
        src_err = [source_error(src, rx, res["sender"]["capture_start_ns"], OFFSET_MS)
                   for rx in res["receivers"]]
    lag_us = np.array([w["lag"] for w in lags]) * US_PER_SAMPLE
    out = {
        "minutes": args.minutes, "window_s": args.window, "link_offset_ms": OFFSET_MS,
        "realtime_priority": args.realtime_priority,
        "links": [" ".join(x) for x in LINKS], "wall_s": round(wall, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1min_at_end": round(os.getloadavg()[0], 2)},
        "windows": len(lags), "windows_possible": int(min(len(a), len(b)) / RATE // args.window),
        "lag_us_max_abs": round(float(np.max(np.abs(lag_us))), 3),
        "lag_us_mean": round(float(np.mean(lag_us)), 3),
        "lag_us_p95_abs": round(float(np.percentile(np.abs(lag_us), 95)), 3),
        "tolerance_us": round(TOLERANCE_US, 1),
        "aligned": bool(np.max(np.abs(lag_us)) <= TOLERANCE_US),
        "per_window": [{"t_s": round(w["t_s"], 2), "lag_us": round(w["lag"] * US_PER_SAMPLE, 3),
                        "peak": round(w["peak"], 4)} for w in lags],
        "record_starts_equal": a0 == b0,
        "source_error_us": [round(e * US_PER_SAMPLE, 3) for e, _ in src_err],
        "source_peak": [round(p, 3) for _, p in src_err],
        "receivers": [{k: rx.get(k) for k in RX_KEYS} for rx in res["receivers"]],
        "truth": [{k: t["rtp"].get(k) for k in ("loss_pct", "delay_ms_median", "jitter_rfc3550_ms",
                                                 "dropped")} for t in res["truths"]],
        "baseline_adaptive": {
            "seconds": args.baseline_seconds, "lag_ms": round(play[1] - play[0], 1),
            "receivers": [{k: rx.get(k) for k in ("delay_ms", "latency_ms_median")}
                          for rx in base["receivers"]]},
    }
    write_table(args.out, out)


def write_table(out: Path, res: dict) -> None:
    from results_io import write_results

    r = res["receivers"]
    lines = ["| receiver (link) | received | lost | late | FEC / PLC | missed | latency median "
             "(ms) | source vs capture + offset (µs) |", "|---|---|---|---|---|---|---|---|"]
    for i, (rx, link) in enumerate(zip(r, res["links"], strict=True)):
        lines.append(f"| {'AB'[i]} ({link}) | {rx['received']} | {rx['lost']} | {rx['late']} | "
                     f"{rx['fec']} / {rx['plc']} | {rx['missed']} | {rx['latency_ms_median']} | "
                     f"{res['source_error_us'][i]:+.2f} |")
    b = res["baseline_adaptive"]
    lines += ["", f"{res['minutes']:g} min of speech, link offset {res['link_offset_ms']:g} ms, "
              f"receivers at SCHED_FIFO {res['realtime_priority']} (0: normal scheduling), "
              f"lag of B against A in {res['windows']} windows of {res['window_s']:g} s "
              f"({res['windows_possible']} possible; windows of silence are left out): max "
              f"|lag| {res['lag_us_max_abs']:.3f} µs, mean {res['lag_us_mean']:+.3f} µs, "
              f"p95 |lag| {res['lag_us_p95_abs']:.3f} µs (target ≤ {res['tolerance_us']} µs, "
              f"one sample at 48 kHz: {'met' if res['aligned'] else 'NOT met'}). "
              f"Recordings start on the same PTP second: {res['record_starts_equal']}. "
              f"Baseline, today's adaptive jitter buffer over {b['seconds']:g} s: B plays "
              f"about {b['lag_ms']:+.0f} ms after A (path latency + buffer delay from each "
              "receiver's summary). One CLOCK_REALTIME for all namespaces: the "
              "media-clock chain is measured, not PTP's accuracy (see clock.md). 'missed': "
              "frames decoded after their play time (the process stalled longer than the "
              "20 ms lead; "
              f"load average {res['machine']['load_avg_1min_at_end']} on "
              f"{res['machine']['cpus']} CPUs at the end), played as silence.", ""]
    write_results(out, "playout", res, "\n".join(lines))


if __name__ == "__main__":
    main()
