"""System benchmark (issue 20): `host-calibrate system up` with N devices on this machine,
observed through the dashboard's own source (every device over its serial line, once a
second), then impaired, re-parameterised and torn down.

Measures: seconds until healthy; per device over ``--observe`` s: PTP offset (median |x|,
max |x|) and port state, the live loop's CPU per hop p99, the link's loss, latency and
jitter; with `system impair` 10 % and 30 % loss on device 1 the loss the device reports
(mean over ``--observe`` s each); the seconds from `apply` (bitrate 96, on trial) to the
device's live loop sending at it; `down`'s seconds and what it left behind (must be nothing).

    .venv/bin/python benchmarks/system.py [--devices 2] [--observe 20]
Writes benchmarks/results/system.json and .md. Needs root (`make bench-system`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def observe(src, seconds: float) -> dict:
    """Per device lists of what the dashboard shows, one sample a second."""
    rows: dict[int, dict[str, list]] = {}
    t_end = time.monotonic() + seconds
    last_t: dict[int, float] = {}
    while time.monotonic() < t_end:
        time.sleep(1.0)
        for d in src.snapshot()["devices"]:
            r = rows.setdefault(d["index"], {k: [] for k in (
                "offset_ns", "port", "cpu_p99_ms", "loss_pct", "latency_ms", "jitter_ms")})
            r["offset_ns"].append(d["ptp"]["offset_ns"])
            r["port"].append(d["ptp"]["port_state"])
            r["cpu_p99_ms"].append(d["live"]["cpu_p99_ms"])
            if d["link"]["t"] and d["link"]["t"] != last_t.get(d["index"]):
                last_t[d["index"]] = d["link"]["t"]
                for k in ("loss_pct", "latency_ms", "jitter_ms"):
                    r[k].append(d["link"][k])
    return rows


def summary(r: dict) -> dict:
    def clean(xs):
        return [x for x in xs if x is not None]

    off = [abs(x) for x in clean(r["offset_ns"])]

    def mean(xs):
        return round(statistics.fmean(xs), 2) if xs else None

    return {"ptp_port": max(set(r["port"]), key=r["port"].count),
            "offset_median_abs_ns": round(statistics.median(off)) if off else None,
            "offset_max_abs_ns": round(max(off)) if off else None,
            "cpu_p99_ms": mean(clean(r["cpu_p99_ms"])), "loss_pct": mean(clean(r["loss_pct"])),
            "latency_ms": mean(clean(r["latency_ms"])), "jitter_ms": mean(clean(r["jitter_ms"])),
            "telemetry_records": len(clean(r["loss_pct"]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=2)
    ap.add_argument("--observe", type=float, default=20.0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()

    from host.dashboard.sources import SystemSource
    from host.system import netns, procs
    from host.system.stack import down, impair, up

    data = ROOT.parent / "shared" / "data"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "sys"
        prefix = f"b{os.getpid() % 100000}"
        t0 = time.monotonic()
        m = up(root, args.devices, prefix=prefix, data=data if data.is_dir() else None,
               dashboard_port=None, timeout_s=180)
        up_s = time.monotonic() - t0
        src = SystemSource(root)
        try:
            base = {i: summary(r) for i, r in observe(src, args.observe).items()}
            impaired = {}
            for loss in (10.0, 30.0):
                impair(root, 1, loss_pct=loss)
                time.sleep(3)  # the receiver's 1 s records of the old setting pass
                impaired[loss] = summary(observe(src, args.observe)[1])
            impair(root, 1, loss_pct=0.0)
            t_apply = time.monotonic()
            src.apply(1, {"bitrate_kbps": 96}, trial_s=120.0, confirm=False)
            live = root / "d1" / "state" / "live.json"
            apply_s = None
            while time.monotonic() - t_apply < 30:
                try:
                    if json.loads(live.read_text())["transport"]["bitrate_kbps"] == 96:
                        apply_s = time.monotonic() - t_apply
                        break
                except (OSError, ValueError, KeyError, TypeError):
                    pass
                time.sleep(0.05)
            crashed = [p["name"] for p in (procs.state(p) for p in m.procs)
                       if p["state"] != "running" and not p["name"].startswith("host.dash")]
        finally:
            src.close()
            t1 = time.monotonic()
            r = down(root, prefix=prefix)
            down_s = time.monotonic() - t1
    left = {**r["left"], "namespaces_after": netns.listed(prefix)}
    res = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "devices": args.devices,
           "observe_s": args.observe, "processes": len(m.procs), "up_s": round(up_s, 1),
           "baseline": base, "impaired_device1": {f"{k:g}": v for k, v in impaired.items()},
           "apply_to_in_force_s": None if apply_s is None else round(apply_s, 2),
           "crashed_during_run": crashed, "down_s": round(down_s, 1),
           "left_behind": {k: v for k, v in left.items() if v}}
    write_table(args.out, res)


def write_table(out: Path, res: dict) -> None:
    from results_io import write_results

    lines = ["| device | PTP port | offset median / max abs (ns) | CPU per hop p99 (ms) | "
             "loss % | latency ms | jitter ms |", "|---|---|---|---|---|---|---|"]
    for i, b in res["baseline"].items():
        lines.append(f"| {i} | {b['ptp_port']} | {b['offset_median_abs_ns']} / "
                     f"{b['offset_max_abs_ns']} | {b['cpu_p99_ms']} | {b['loss_pct']} | "
                     f"{b['latency_ms']} | {b['jitter_ms']} |")
    imp = ", ".join(f"{k} % set → {v['loss_pct']} % reported" for k, v in
                    res["impaired_device1"].items())
    lines += ["", f"{res['devices']} devices, {res['processes']} processes; up and healthy in "
              f"{res['up_s']} s; observed {res['observe_s']:g} s per phase. Device 1 impaired "
              f"(iptables random drop at the host): {imp}. `apply` bitrate 96 → in force in the "
              f"device's live loop after {res['apply_to_in_force_s']} s. Crashed during the run: "
              f"{res['crashed_during_run'] or 'none'}. `down` in {res['down_s']} s, left behind: "
              f"{res['left_behind'] or 'nothing'}.", ""]
    write_results(out, "system", res, "\n".join(lines))


if __name__ == "__main__":
    main()
