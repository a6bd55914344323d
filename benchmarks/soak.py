"""Soak benchmark (issue 18): the stream and the serial control link together, for minutes.

    sender (subprocess, speech looped in real time; SIGKILLed and restarted half-way: a new
      SSRC and sequence, no BYE)
      -> host.emulate UDP emulator (seeded loss, delay, jitter, reorder; its ground truth)
      -> injector (duplicates 1 % of packets; every 20 s a stray copy of a real packet with
         seq +500, as issue 18 item 1 reproduced it)
      -> receiver (subprocess, telemetry to a JSON-lines file, counts played frames)
    and at the same time
    host loop (get_telemetry, get_params, echo of 1 B - 4 KiB) -> 1 % byte-corrupting relay
      -> `edge-denoise serve --telemetry` reading the receiver's log.

Every minute: the receiver's reported loss (its 1 s telemetry records, averaged) against
the emulator's truth for the packets that entered it in that minute; concealed frames
(the recording's gaps) against the packets really lost; the RSS of the receiver and the
agent; the serial loop's calls, failures, rounds. ``--minutes`` (default 30, the issue's
soak; `make bench-soak`). Not in CI.

    .venv/bin/python benchmarks/soak.py [--minutes M]
Writes benchmarks/results/soak.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

CLIP = ROOT.parent / "shared" / "data" / "speech" / "vctk" / "p278" / "p278_003.flac"
IMPAIRMENT = dict(loss=0.03, delay_ms=20.0, jitter_ms=5.0, reorder=0.02, reorder_ms=30.0)
DUP_P = 0.01
STRAY_EVERY_S = 20.0
PY = sys.executable


# ---------------------------------------------------------------- roles (subprocesses)

def run_sender(url: str) -> None:
    """Loop the clip in real time until killed."""
    import numpy as np

    from edge.audio import load_audio
    from edge.params import TransportParams
    from edge.transport.codec import FRAME
    from edge.transport.sender import Sender

    x = load_audio(str(CLIP)).samples if CLIP.exists() else \
        (0.1 * np.sin(np.arange(16_000 * 3) * 0.05)).astype(np.float32)
    tx = Sender(url, TransportParams())
    t0, k = time.monotonic(), 0
    while True:
        i = (k * FRAME) % (len(x) - FRAME)
        wait = t0 + (k + 1) * 0.02 - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        tx.write(x[i:i + FRAME])
        k += 1


def run_receiver(port: int, telemetry: str, status: str) -> None:
    """Receive until SIGTERM; every second write played-frame counts and the summary."""
    from edge.params import TransportParams
    from edge.transport.receiver import Receiver
    from edge.transport.telemetry import TelemetryLog

    played = [0]
    log = TelemetryLog(telemetry)
    rx = Receiver(f"127.0.0.1:{port}", TransportParams(), keep_audio=False, telemetry=log,
                  on_frame=lambda seq, t, y: played.__setitem__(0, played[0] + 1))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    while not stop.wait(1.0):
        tmp = status + ".tmp"
        Path(tmp).write_text(json.dumps({"t": time.time(), "played": played[0],
                                         "summary": rx.summary()}))
        os.replace(tmp, status)
    rx.close()
    log.close()


# ---------------------------------------------------------------- the parent's parts

class Injector:
    """UDP relay emulator -> receiver that duplicates and injects strays (and relays the
    receiver's back channel to the emulator). All from one socket: one source address."""

    def __init__(self, receiver: tuple[str, int], seed: int = 7):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.receiver = receiver
        self.rng = random.Random(seed)
        self.counts = {"forwarded": 0, "duplicates": 0, "strays": 0}
        self._emu = None
        self._stop = threading.Event()
        self._next_stray = time.monotonic() + STRAY_EVERY_S
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            r, _, _ = select.select([self.sock], [], [], 0.1)
            if not r:
                continue
            try:
                data, src = self.sock.recvfrom(65536)
            except OSError:
                continue
            try:
                if src == self.receiver:
                    if self._emu is not None:
                        self.sock.sendto(data, self._emu)
                    continue
                self._emu = src
                self.sock.sendto(data, self.receiver)
                self.counts["forwarded"] += 1
                is_rtp = len(data) >= 12 and data[0] >> 6 == 2 and not 192 <= data[1] <= 223
                if is_rtp and self.rng.random() < DUP_P:
                    self.sock.sendto(data, self.receiver)
                    self.counts["duplicates"] += 1
                if is_rtp and time.monotonic() >= self._next_stray:
                    self._next_stray += STRAY_EVERY_S
                    seq = (int.from_bytes(data[2:4], "big") + 500) & 0xFFFF
                    self.sock.sendto(data[:2] + seq.to_bytes(2, "big") + data[4:], self.receiver)
                    self.counts["strays"] += 1
            except OSError:
                pass

    def stop(self) -> None:
        self._stop.set()
        self._t.join(2)
        self.sock.close()


class SerialLoop:
    """The host side: through the corrupting relay, ask for telemetry and params and echo
    mixed payloads, about once a second, for as long as the soak runs."""

    def __init__(self, port: str):
        self.port = port
        self.calls = self.failures = self.corrupt = 0
        self.rounds: list[int] = []
        self.telemetry_rows = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        from edge.errors import HushlinkError
        from host.link import connect

        rng = random.Random(11)
        while not self._stop.is_set():
            try:
                with connect(self.port, timeout=0.3, retries=10) as dev:
                    while not self._stop.is_set():
                        self.telemetry_rows += len(dev.call("get_telemetry",
                                                            {"window": 5.0})["rows"])
                        dev.get_params()
                        p = {"d": rng.randbytes(int(2 ** rng.uniform(0, 12)))}
                        self.corrupt += dev.call("echo", p) != p
                        self.calls += 3
                        self.rounds.append(dev.rpc.last_retries)
                        self._stop.wait(1.0)
            except HushlinkError as e:  # counted; the loop reconnects like a user would
                self.failures += 1
                self.last_error = str(e)
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        self._t.join(60)


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def start_sender(url: str) -> subprocess.Popen:
    return subprocess.Popen([PY, __file__, "--role", "sender", "--url", url], cwd=ROOT,
                            stderr=subprocess.DEVNULL)


def minute_row(m: int, truth0: dict, truth1: dict, tel: list[dict], st0: dict, st1: dict,
               rss: dict) -> dict:
    """One minute's comparison; ``tel``: the receiver's records of that minute."""
    n_in = truth1["packets_in"] - truth0["packets_in"]
    dropped = truth1["dropped"] - truth0["dropped"]
    truth_pct = 100.0 * dropped / n_in if n_in else 0.0
    losses = [r["loss_pct"] for r in tel if r.get("loss_pct") is not None]
    reported = sum(losses) / len(losses) if losses else float("nan")
    concealed = sum(int(r.get("concealed") or 0) for r in tel)
    played = st1.get("played", 0) - st0.get("played", 0)
    return {"minute": m, "packets": n_in, "truth_loss_pct": round(truth_pct, 2),
            "reported_loss_pct": round(reported, 2),
            "error_points": round(abs(reported - truth_pct), 2),
            "truly_lost": dropped, "concealed": concealed, "played_frames": played,
            "unplayed_frames": n_in - played,  # 20 ms of recording missing, not even concealed
            "telemetry_records": len(tel), **{f"rss_{k}_mb": v for k, v in rss.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--role", choices=["sender", "receiver"], help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--telemetry", help=argparse.SUPPRESS)
    ap.add_argument("--status", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "sender":
        return run_sender(args.url)
    if args.role == "receiver":
        return run_receiver(args.port, args.telemetry, args.status)

    from test_link_util import AgentProc, PtyPair, Relay

    from host.emulate import Impairment, start_emulator

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tel_path, status_path = tmp / "telemetry.jsonl", tmp / "status.json"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            rx_port = s.getsockname()[1]
        receiver = subprocess.Popen([PY, __file__, "--role", "receiver", "--port", str(rx_port),
                                     "--telemetry", str(tel_path), "--status",
                                     str(status_path)], cwd=ROOT)
        inj = Injector(("127.0.0.1", rx_port))
        emu = start_emulator("udp", "127.0.0.1:0", f"127.0.0.1:{inj.port}",
                             Impairment(**IMPAIRMENT, seed=3))
        url = f"udp://127.0.0.1:{emu.listen[1]}"
        tag = f"s{os.getpid()}"
        host_side, dev_side = PtyPair(tmp, tag + "h"), PtyPair(tmp, tag + "d")
        tel_path.touch()
        agent = AgentProc(dev_side.a, tmp / "state", "--telemetry", str(tel_path))
        relay = Relay(host_side.a, dev_side.b, 0.01, seed=9)
        sender = start_sender(url)
        loop = SerialLoop(host_side.b)
        rows, restarted = [], None
        t_start = time.monotonic()
        total = args.minutes * 60
        try:
            truth0 = emu.truth()["rtp"]
            st0: dict = {}
            tel_seen = 0
            m = 0
            while time.monotonic() - t_start < total:
                m += 1
                t_min_end = t_start + min(60.0 * m, total)
                while time.monotonic() < t_min_end:
                    if restarted is None and time.monotonic() - t_start >= total / 2:
                        sender.send_signal(signal.SIGKILL)  # a crash: no BYE
                        sender.wait()
                        sender = start_sender(url)
                        restarted = round(time.monotonic() - t_start, 1)
                    time.sleep(min(1.0, max(0.0, t_min_end - time.monotonic())))
                truth1 = emu.truth()["rtp"]
                lines = tel_path.read_text().splitlines()
                tel = [json.loads(x) for x in lines[tel_seen:] if x.strip()]
                tel_seen = len(lines)
                try:
                    st1 = json.loads(status_path.read_text())
                except (OSError, ValueError):
                    st1 = {}
                rows.append(minute_row(m, truth0, truth1, tel, st0, st1, {
                    "receiver": rss_mb(receiver.pid), "agent": rss_mb(agent.proc.pid)}))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                truth0, st0 = truth1, st1
        finally:
            loop.stop()
            sender.kill()
            sender.wait()
            relay_stats = relay.stop()
            agent.stop()
            host_side.stop()
            dev_side.stop()
            truth = emu.stop()
            inj.stop()
            receiver.send_signal(signal.SIGTERM)
            receiver.wait(10)
        try:
            summary = json.loads(status_path.read_text())["summary"]
        except (OSError, ValueError, KeyError):
            summary = {}

    rounds = sorted(loop.rounds) or [0]
    rss = {k: [r[f"rss_{k}_mb"] for r in rows if r[f"rss_{k}_mb"]] for k in ("receiver", "agent")}
    res = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "minutes": args.minutes,
        "impairment": {**IMPAIRMENT, "duplicates": DUP_P, "stray_every_s": STRAY_EVERY_S,
                       "sender_restart_at_s": restarted, "serial_byte_corruption": 0.01},
        "per_minute": rows,
        "worst_error_points": max((r["error_points"] for r in rows), default=None),
        "unplayed_frames": sum(r["unplayed_frames"] for r in rows),
        "rss_growth_mb": {k: round(v[-1] - v[0], 1) if v else None for k, v in rss.items()},
        "injector": inj.counts,
        "truth": {k: v for k, v in truth["rtp"].items() if k != "dropped_seqs"},
        "receiver_summary": summary,
        "serial": {"loops": len(loop.rounds), "calls": loop.calls, "failures": loop.failures,
                   "accepted_corrupt": loop.corrupt, "telemetry_rows": loop.telemetry_rows,
                   "rounds_p99": rounds[int(0.99 * (len(rounds) - 1))],
                   "rounds_max": rounds[-1], "last_error": loop.last_error,
                   "relay": relay_stats.strip()},
    }
    write_table(args.out, res)


def write_table(out: Path, res: dict) -> None:
    from results_io import write_results

    s = res["serial"]
    lines = ["| minute | packets | truth loss % | reported loss % | error (points) | truly lost "
             "| concealed | unplayed frames | RSS receiver / agent (MB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["per_minute"]:
        lines.append(f"| {r['minute']} | {r['packets']} | {r['truth_loss_pct']:.2f} | "
                     f"{r['reported_loss_pct']:.2f} | {r['error_points']:.2f} | "
                     f"{r['truly_lost']} | {r['concealed']} | {r['unplayed_frames']} | "
                     f"{r['rss_receiver_mb'] or 0:.1f} / {r['rss_agent_mb'] or 0:.1f} |")
    imp = res["impairment"]
    lines += ["", f"{res['minutes']} min; link: {imp['loss']:.0%} loss, {imp['delay_ms']:.0f}±"
              f"{imp['jitter_ms']:.0f} ms, {imp['reorder']:.0%} reordered by "
              f"{imp['reorder_ms']:.0f} ms, {imp['duplicates']:.0%} duplicated, a stray "
              f"(seq +500) every {imp['stray_every_s']:.0f} s, sender SIGKILLed and restarted "
              f"at {imp['sender_restart_at_s']} s. Worst minute: "
              f"{res['worst_error_points']} points off the truth (target ≤ 0.5); "
              f"{res['unplayed_frames']} frames of 20 ms never played (recording gaps; target "
              f"0: lost packets are concealed, not skipped); RSS growth receiver "
              f"{res['rss_growth_mb']['receiver']} MB, agent {res['rss_growth_mb']['agent']} MB.",
              "", f"Serial loop through a 1 % corrupting relay at the same time: {s['loops']} "
              f"loops ({s['calls']} calls), {s['failures']} failed sessions, "
              f"{s['accepted_corrupt']} accepted corrupt, rounds p99 {s['rounds_p99']} "
              f"(max {s['rounds_max']}), {s['telemetry_rows']} telemetry rows read.", ""]
    write_results(out, "soak", res, "\n".join(lines))


if __name__ == "__main__":
    main()
