"""Flash benchmark: push throughput over a paced serial pty, and time from push to confirmed.

1. Throughput: `edge-denoise serve --pace --baud B` in a subprocess on one end of a socat pty
   pair, `flash-to-device push` (host.flash.push_serial, also paced) on the other, at 115200
   and 921600 baud. A pty moves ~50 MB/s whatever the baud, so both ends pace their writes
   to the UART line rate (8N1: 10 bits per byte); the fraction is bundle bytes per second of
   upload over baud/10 (framing, COBS, CBOR, CRC and the per-chunk replies are the overhead).
2. Push to confirmed: the whole push of the default model bundle (upload + verify + write
   inactive slot + health check + switch + start check + confirm) at 921600 baud over the
   paced pty, and the same bundle with `push --root DIR` (no transfer).

The bundle holds edge/models/default.tflite when it exists, else the tiny int8 test model of
tests/stepmodels.py (the results say which).

    .venv/bin/python benchmarks/flash.py [--repeats N]
Writes benchmarks/results/flash.json and .md.
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
sys.path.insert(0, str(ROOT / "tests"))

from edge.model import default_model_path  # noqa: E402
from edge.slots import SlotStore  # noqa: E402
from host.bundle import build, keygen  # noqa: E402
from host.flash import push_root, push_serial  # noqa: E402


def model_for_bundle(work: Path) -> tuple[Path, str]:
    p = default_model_path()
    if p.is_file() and p.with_suffix(".json").is_file():
        return p, "edge/models/default.tflite"
    from stepmodels import build_test_model

    return (build_test_model(work / "stepmodel"),
            "tests/stepmodels.py tiny int8 GRU: no default model was shipped yet")


def fresh_device(d: Path, pub: Path) -> Path:
    root = d / f"state{time.monotonic_ns()}"
    SlotStore(root).init([pub.read_bytes()])
    return root


def serial_push(bundle: Path, pub: Path, d: Path, baud: int) -> dict:
    from test_link_util import AgentProc, PtyPair

    state = fresh_device(d, pub)
    pair = PtyPair(d, f"fb{os.getpid()}")
    agent = AgentProc(pair.a, state, "--baud", str(baud), "--pace")
    try:
        t0 = time.perf_counter()
        out = push_serial(bundle, pair.b, baud, pace=True)
        total = time.perf_counter() - t0
    finally:
        agent.stop()
        pair.stop()
    line = baud / 10
    return {"baud": baud, "bytes": out["bytes"], "upload_s": out["upload_s"],
            "bytes_per_s": out["bytes"] / out["upload_s"], "line_bytes_per_s": line,
            "fraction_of_line_rate": out["bytes"] / out["upload_s"] / line,
            "push_to_confirmed_s": total, "install_and_confirm_s": total - out["upload_s"],
            "state": out["state"], "health_max_error": out["health"]["max_error"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    res: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count()}}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        model, what = model_for_bundle(d)
        key, pub, _ = keygen(d / "bench")
        bundle = d / "bench.hlb"
        build(model, key, bundle, version="1.0.0")
        res["bundle"] = {"model": what, "bytes": bundle.stat().st_size}
        runs = {b: [serial_push(bundle, pub, d, b) for _ in range(args.repeats)]
                for b in (115_200, 921_600)}
        res["serial"] = {str(b): {"runs": r,
                                  "fraction_of_line_rate": statistics.median(
                                      x["fraction_of_line_rate"] for x in r),
                                  "bytes_per_s": statistics.median(x["bytes_per_s"] for x in r),
                                  "push_to_confirmed_s": statistics.median(
                                      x["push_to_confirmed_s"] for x in r),
                                  "install_and_confirm_s": statistics.median(
                                      x["install_and_confirm_s"] for x in r)}
                         for b, r in runs.items()}
        roots = []
        for _ in range(args.repeats):
            root = fresh_device(d, pub)
            roots.append(push_root(bundle, root)["seconds"])
        res["root_push_to_confirmed_s"] = statistics.median(roots)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "flash.json").write_text(json.dumps(res, indent=1))
    md = ["# Flash benchmark", "",
          f"Bundle: {res['bundle']['bytes']:,} bytes ({res['bundle']['model']}); median of "
          f"{args.repeats} runs; {res['machine']['cpus']} shared CPU cores. A pty ignores the "
          "baud rate, so agent and host pace their writes to the line rate (10 bits per byte).",
          "", "| baud | upload bytes/s | of line rate (target ≥ 80%) | push → confirmed s | "
          "install + health + confirm s |", "|---|---|---|---|---|"]
    for b, r in res["serial"].items():
        md.append(f"| {int(b):,} | {r['bytes_per_s']:,.0f} | "
                  f"{100 * r['fraction_of_line_rate']:.1f}% | {r['push_to_confirmed_s']:.2f} | "
                  f"{r['install_and_confirm_s']:.2f} |")
    md += ["", f"`push --root DIR` (no transfer) to confirmed: "
           f"{res['root_push_to_confirmed_s']:.2f} s.", ""]
    (out / "flash.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
