"""Serial link through a byte-corrupting relay (issue 18 item 9): probes and 10^4 exchanges.

Host <-> socat pty pair <-> relay (flips, drops or inserts a byte with probability RATE,
a third each, both directions; tests/test_link_util.Relay) <-> pty pair <-> `edge-denoise
serve`. Measures:

1. `host-calibrate probe` on 10 fresh links (a new relay seed each) at 1 % and 5 %;
2. N echo exchanges (default 10^4) with payloads of 1 B - 4 KiB (log-uniform) at 1 %: how
   many came back different (accepted corrupt), the rounds per exchange (request resends +
   NEED rounds, ``Requester.last_retries``) p50/p99/max, wall time per exchange.

    .venv/bin/python benchmarks/serial_noise.py [--exchanges N]
Writes benchmarks/results/serial_noise.json and .md.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from click.testing import CliRunner  # noqa: E402
from results_io import write_results  # noqa: E402
from test_link_util import AgentProc, PtyPair, Relay  # noqa: E402

from host.cli import cli  # noqa: E402
from host.link import connect  # noqa: E402


def probes(port: str, rate: float, n: int, host_a: str, dev_b: str) -> dict:
    ok, secs = 0, []
    for i in range(n):
        relay = Relay(host_a, dev_b, rate, seed=100 + i)
        t = time.monotonic()
        r = CliRunner().invoke(cli, ["probe", port, "--json"])
        secs.append(time.monotonic() - t)
        ok += r.exit_code == 0
        relay.stop()
    return {"rate": rate, "ok": ok, "of": n, "max_s": round(max(secs), 2),
            "mean_s": round(sum(secs) / n, 2)}


def exchanges(port: str, n: int, host_a: str, dev_b: str) -> dict:
    relay = Relay(host_a, dev_b, 0.01, seed=5)
    rng = random.Random(3)
    rounds, corrupt, t0 = [], 0, time.monotonic()
    with connect(port, timeout=0.2, retries=20) as dev:
        for i in range(n):
            payload = {"i": i, "d": rng.randbytes(int(2 ** rng.uniform(0, 12)))}
            corrupt += dev.call("echo", payload) != payload
            rounds.append(dev.rpc.last_retries)
        pieces = dev.link.piece_stats
    wall = time.monotonic() - t0
    hits = dict(kv.split("=") for kv in relay.stop().split())
    rounds.sort()
    return {"exchanges": n, "accepted_corrupt": corrupt, "rounds_p50": rounds[n // 2],
            "rounds_p99": rounds[int(0.99 * n)], "rounds_max": rounds[-1],
            "ms_per_exchange": round(1000 * wall / n, 1),
            "relay_bytes": int(hits["bytes"]),
            "relay_hits": sum(int(hits[k]) for k in ("flip", "drop", "insert")),
            "host_pieces_sent": pieces.pieces_sent, "host_pieces_got": pieces.pieces_got}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exchanges", type=int, default=10_000)
    ap.add_argument("--probes", type=int, default=10)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tag = f"b{os.getpid()}"
        host, dev = PtyPair(tmp, tag + "h"), PtyPair(tmp, tag + "d")
        agent = AgentProc(dev.a, tmp / "state")
        try:
            res = {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
                   "probes": [probes(host.b, r, args.probes, host.a, dev.b)
                              for r in (0.01, 0.05)],
                   "exchanges": exchanges(host.b, args.exchanges, host.a, dev.b)}
        finally:
            agent.stop()
            host.stop()
            dev.stop()
    ex = res["exchanges"]
    table = ("| measure (byte-corrupting relay, both ways) | result |\n|---|---|\n"
             + "".join(f"| `host-calibrate probe` at {p['rate']:.0%} | {p['ok']}/{p['of']} "
                       f"(mean {p['mean_s']} s, max {p['max_s']} s) |\n"
                       for p in res["probes"])
             + f"| {ex['exchanges']:,} echo exchanges, 1 B–4 KiB, at 1 % "
               f"({ex['relay_hits']:,} bytes hit) | {ex['accepted_corrupt']} accepted corrupt; "
               f"rounds p50 {ex['rounds_p50']}, p99 {ex['rounds_p99']}, max "
               f"{ex['rounds_max']}; {ex['ms_per_exchange']} ms each |\n")
    write_results(args.out, "serial_noise", res, table)


if __name__ == "__main__":
    main()
