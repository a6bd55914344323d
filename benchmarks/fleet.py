"""Fleet benchmark: `flash-to-device push` to N devices one after another vs all at once.

N agents (`edge-denoise serve`), each on its own socat pty pair with a fresh state directory,
get the same bundle through host/fleet.py's runner (the code behind `push --port A --port B
...`): once with one worker (sequential), once with N workers (concurrent). Two lines:

- paced: agent and host pace their writes to 921,600 baud (a pty ignores the baud rate), as a
  real UART would: the upload is bound by the line, one per device, so devices overlap;
- unpaced: the pty's own speed, so the push is bound by the host's CPU (verify, the health
  check's interpreter subprocess twice per device), which concurrency cannot multiply.

Agent start-up is not timed. The bundle holds edge/models/default.tflite.

    .venv/bin/python benchmarks/fleet.py [--devices 8]
Writes benchmarks/results/fleet.json and .md.
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

from results_io import write_results  # noqa: E402

from edge.model import default_model_path  # noqa: E402
from edge.slots import SlotStore  # noqa: E402
from host import fleet  # noqa: E402
from host.bundle import build, keygen  # noqa: E402
from host.flash import push_serial  # noqa: E402

BAUD = 921_600


def push_all(d: Path, bundle: Path, pub: Path, n: int, workers: int, pace: bool) -> dict:
    from test_link_util import AgentProc, PtyPair

    tag = f"{'p' if pace else 'u'}{workers}"
    states = [d / f"{tag}-state{i}" for i in range(n)]
    for s in states:
        SlotStore(s).init([pub.read_bytes()])
    extra = ("--baud", str(BAUD), "--pace") if pace else ()
    pairs, agents = [], []
    try:
        for i in range(n):
            pairs.append(PtyPair(d, f"{tag}-{i}"))
            agents.append(AgentProc(pairs[i].a, states[i], *extra))
        devices = [fleet.Target(f"dev{i + 1}", p.b) for i, p in enumerate(pairs)]
        t0 = time.perf_counter()
        res = fleet.run(devices, lambda t, rep: push_serial(
            bundle, t.port, BAUD, pace=pace, rollback_on_failure=True), workers=workers)
        wall = time.perf_counter() - t0
    finally:
        for a in agents:
            a.stop()
        for p in pairs:
            p.stop()
    bad = [r for r in res if r.status != fleet.OK]
    if bad:
        raise SystemExit(f"push failed: {bad}")
    return {"workers": workers, "wall_s": round(wall, 2),
            "per_device_s": [r.seconds for r in res],
            "upload_s": [r.detail["upload_s"] for r in res],
            "bytes": res[0].detail["bytes"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=8)
    args = ap.parse_args()
    n = args.devices
    res: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                             "load_average_1min_at_start": round(os.getloadavg()[0], 1)},
                 "devices": n, "baud": BAUD}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        key, pub, _ = keygen(d / "bench")
        bundle = d / "bench.hlb"
        build(default_model_path(), key, bundle, version="1.0.0")
        res["bundle"] = {"model": "edge/models/default.tflite", "bytes": bundle.stat().st_size}
        for pace in (True, False):
            line = "paced" if pace else "unpaced"
            seq = push_all(d, bundle, pub, n, 1, pace)
            par = push_all(d, bundle, pub, n, n, pace)
            res[line] = {"sequential": seq, "concurrent": par,
                         "speedup": round(seq["wall_s"] / par["wall_s"], 2)}
    md = ["# Fleet benchmark", "",
          f"`flash-to-device push` of one bundle ({res['bundle']['bytes']:,} bytes, the default "
          f"model) to {n} agents on socat pty pairs, one at a time vs all at once "
          f"(host/fleet.py); {res['machine']['cpus']} CPU cores shared with other work "
          f"(1-minute load average {res['machine']['load_average_1min_at_start']} at the "
          "start). Paced: both ends pace "
          f"their writes to {BAUD:,} baud as a UART would; unpaced: pty speed (CPU-bound).", "",
          "| link | sequential s | concurrent s | speedup | per device s (concurrent, median) |",
          "|---|---|---|---|---|"]
    for line in ("paced", "unpaced"):
        r = res[line]
        per = sorted(r["concurrent"]["per_device_s"])[n // 2]
        md.append(f"| {line} | {r['sequential']['wall_s']:.1f} | {r['concurrent']['wall_s']:.1f}"
                  f" | {r['speedup']:.1f}x | {per:.1f} |")
    md.append("")
    write_results(ROOT / "benchmarks" / "results", "fleet", res, "\n".join(md))


if __name__ == "__main__":
    main()
