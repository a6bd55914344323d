"""Transport benchmark: glass-to-glass latency, quality vs loss, telemetry over time.

1. Glass-to-glass latency (real sockets, real time): a speech file paced as if captured, sent
   as RTP/Opus over loopback through the user-space emulator to the receiver; for every frame,
   the time its first sample was "captured" (the pacing clock) to the time the receiver hands
   it to the output (the sound card's own buffer is not included). Target: <= buffer + 30 ms.
2. Quality (PESQ-WB against the sent speech) vs random loss 0/1/5/10/20 %, FEC on/off, bitrate
   50/100/200 kbit/s. Runs in simulated time with the same parts as the live path: the
   sender's Opus encoder settings, the emulator's seeded LinkModel, the JitterBuffer and the
   Opus decoder (FEC/PLC); 3 speakers x 2 loss seeds per cell. Two cells are repeated over
   real sockets in real time to show the simulation agrees.
3. Timeline (real time, 24 s): the link changes every 6 s (clean; 5 % loss + 20 +- 10 ms;
   80 +- 20 ms; 20 % loss) while the receiver reports telemetry every second; plotted against
   the emulator's settings.

    .venv/bin/python benchmarks/transport.py [--quick]

Writes benchmarks/results/transport.json, transport.md, transport.png (timeline) and
transport-quality.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pesq import pesq  # noqa: E402

from edge.audio import load_audio  # noqa: E402
from edge.params import TransportParams  # noqa: E402
from edge.transport.codec import FRAME, OpusDecoder, OpusEncoder  # noqa: E402
from edge.transport.jitter import JitterBuffer  # noqa: E402
from edge.transport.receiver import Receiver  # noqa: E402
from edge.transport.sender import Sender, codec_bitrate_bps, send_file  # noqa: E402
from edge.transport.stats import align  # noqa: E402
from host.emulate import Impairment, LinkModel, start_emulator  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
CLIPS = ["speech/vctk/p278/p278_003.flac", "speech/vctk/p259/p259_200.flac",
         "speech/vctk/p295/p295_200.flac"]
RESULTS = ROOT / "benchmarks" / "results"
LOSSES = [0, 1, 5, 10, 20]
BITRATES = [50, 100, 200]


def pesq_wb(ref: np.ndarray, deg: np.ndarray) -> float:
    return float(pesq(16_000, ref, align(ref, deg), "wb"))


# ------------------------------------------------------------------ 1. glass to glass
def glass_to_glass(x: np.ndarray, buffer_ms: int, imp: Impairment) -> dict:
    capture: dict[int, int] = {}
    played: dict[int, int] = {}
    rx = Receiver("127.0.0.1:0", TransportParams(buffer_ms=buffer_ms), keep_audio=False,
                  on_frame=lambda seq, t, y: played.setdefault(seq, t))
    emu = start_emulator("udp", "127.0.0.1:0", f"127.0.0.1:{rx.port}", imp)
    tx = Sender(f"udp://127.0.0.1:{emu.listen[1]}", TransportParams(buffer_ms=buffer_ms))
    try:
        send_file(x, tx, on_frame=lambda k, t: capture.__setitem__(tx.first_seq + k, t))
        tx.close()
        rx.wait(3.0)
    finally:
        tx.close()
        rx.close()
        emu.stop()
    g2g = np.array([(played[s] - capture[s]) / 1e6 for s in capture if s in played])
    s = rx.summary()
    return {"buffer_ms": buffer_ms, "link_delay_ms": imp.delay_ms, "link_jitter_ms": imp.jitter_ms,
            "frames": len(g2g), "g2g_ms_median": float(np.median(g2g)),
            "g2g_ms_p95": float(np.percentile(g2g, 95)), "g2g_ms_max": float(g2g.max()),
            "one_way_ms": s["latency_ms"], "playout_delay_ms": s["delay_ms"],
            "target_ms": buffer_ms + 30, "late": s["late"], "concealed": s["fec"] + s["plc"],
            "ok": bool(np.percentile(g2g, 95) <= buffer_ms + 30 + imp.delay_ms)}


# ------------------------------------------------------------------ 2. quality vs loss
def simulate(x: np.ndarray, bitrate: int, fec: bool, loss_pct: float, seed: int,
             buffer_ms: int = 200) -> tuple[np.ndarray, dict]:
    """The live path in simulated time: encoder (as the sender sets it up, loss hint raised to
    the measured loss) -> LinkModel -> JitterBuffer -> decoder."""
    p = TransportParams(bitrate_kbps=bitrate, fec=fec, buffer_ms=buffer_ms)
    enc = OpusEncoder(codec_bitrate_bps(p), fec, max(p.loss_hint_pct, int(np.ceil(loss_pct))))
    dec = OpusDecoder()
    link = LinkModel(Impairment(loss=loss_pct / 100, seed=seed))
    jb = JitterBuffer(buffer_ms, fec=fec)
    n = int(np.ceil(len(x) / FRAME))
    xp = np.pad(x, (0, n * FRAME - len(x)))
    arrivals = []
    for k in range(n):
        t_send = (k + 1) * 0.02
        depart = link.decide(t_send, 200, k)
        if depart is not None:
            arrivals.append((depart, k, enc.encode(xp[k * FRAME:(k + 1) * FRAME])))
        else:
            enc.encode(xp[k * FRAME:(k + 1) * FRAME])
    out, i, t = [], 0, 0.0
    jb_end_set = False
    while t < (n + 40) * 0.02 and not jb.finished:
        while i < len(arrivals) and arrivals[i][0] <= t:
            jb.push(arrivals[i][1], arrivals[i][2], arrivals[i][0])
            i += 1
            if not jb_end_set:
                jb.set_end(n - 1)
                jb_end_set = True
        for slot in jb.pop(t):
            if slot.kind in ("packet", "discard"):
                y = dec.decode(slot.payload)
            elif slot.kind == "fec":
                y = dec.decode_fec(slot.payload)
            else:
                y = dec.conceal()
            if slot.kind != "discard":
                out.append(y)
        t += 0.005
    return np.concatenate(out), {"fec": jb.fec_frames, "plc": jb.plc_frames}


def quality_sweep(clips: list[np.ndarray], seeds: list[int]) -> list[dict]:
    rows = []
    for br in BITRATES:
        for fec in (False, True):
            for loss in LOSSES:
                scores = [pesq_wb(x, simulate(x, br, fec, loss, s)[0])
                          for x in clips for s in seeds]
                rows.append({"bitrate_kbps": br, "fec": fec, "loss_pct": loss,
                             "pesq_wb": float(np.mean(scores)),
                             "pesq_wb_min": float(np.min(scores)), "n": len(scores)})
                print(f"  {br:3d} kbit/s fec={fec!s:5s} loss={loss:2d}%  "
                      f"PESQ-WB {rows[-1]['pesq_wb']:.2f}", file=sys.stderr)
    return rows


@contextmanager
def emulated_link(params: TransportParams, impairment: Impairment):
    """Sender -> user-space emulator -> receiver over UDP on loopback. Yields
    ``(tx, rx, emu, out)``; on exit everything is closed and ``out["truth"]`` holds the
    emulator's ground truth."""
    rx = Receiver("127.0.0.1:0", params)
    emu = start_emulator("udp", "127.0.0.1:0", f"127.0.0.1:{rx.port}", impairment)
    tx = Sender(f"udp://127.0.0.1:{emu.listen[1]}", params)
    out: dict = {}
    try:
        yield tx, rx, emu, out
    finally:
        tx.close()
        rx.close()
        out["truth"] = emu.stop()


def real_cell(x: np.ndarray, bitrate: int, fec: bool, loss_pct: float) -> dict:
    p = TransportParams(bitrate_kbps=bitrate, fec=fec)
    with emulated_link(p, Impairment(loss=loss_pct / 100, seed=1)) as (tx, rx, _, out):
        send_file(x, tx)
        tx.close()
        rx.wait(3.0)
    return {"bitrate_kbps": bitrate, "fec": fec, "loss_pct": loss_pct,
            "measured_loss_pct": rx.summary()["loss_pct"],
            "truth_loss_pct": out["truth"]["rtp"]["loss_pct"], "pesq_wb": pesq_wb(x, rx.audio())}


# ------------------------------------------------------------------ 3. timeline
PHASES = [("clean", Impairment()),
          ("5% loss, 20±10 ms", Impairment(loss=0.05, delay_ms=20, jitter_ms=10, seed=1)),
          ("80±20 ms", Impairment(delay_ms=80, jitter_ms=20, seed=2)),
          ("20% loss", Impairment(loss=0.20, delay_ms=20, seed=3))]


def timeline(x: np.ndarray, phase_s: float) -> dict:
    n = int(phase_s * len(PHASES) * 16_000)
    x = np.resize(x, n)
    marks = []

    with emulated_link(TransportParams(buffer_ms=200), PHASES[0][1]) as (tx, rx, emu, out):

        def on_frame(k, t_ns):
            if k % int(phase_s * 50) == 0:
                ph = k // int(phase_s * 50)
                emu.set_impairment(PHASES[ph][1])
                marks.append({"t": t_ns / 1e9, "phase": PHASES[ph][0],
                              "delay_ms": PHASES[ph][1].delay_ms,
                              "jitter_ms": PHASES[ph][1].jitter_ms,
                              "loss_pct": 100 * PHASES[ph][1].loss})

        send_file(x, tx, on_frame=on_frame)
        time.sleep(0.3)
        tx.close()
        rx.wait(3.0)
    truth = out["truth"]
    t0 = marks[0]["t"]
    recs = [{**r.to_dict(), "t": r.t - t0} for r in rx.telemetry.window(3600)]
    for m in marks:
        m["t"] -= t0
    truth["rtp"].pop("dropped_seqs")
    return {"phase_s": phase_s, "phases": marks, "telemetry": recs,
            "sender_received": len(tx.telemetry), "summary": rx.summary(), "truth": truth}


# ------------------------------------------------------------------ output
def plot(result: dict, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = result["timeline"]
    tel = tl["telemetry"]
    t = [r["t"] for r in tel]
    end = tl["phase_s"] * len(tl["phases"])
    fig, ax = plt.subplots(3, 1, figsize=(8, 6.5), sharex=True)
    series = [("latency_ms", "one-way latency (ms)", "delay_ms"),
              ("loss_pct", "loss (%)", "loss_pct"),
              ("jitter_ms", "RFC 3550 jitter (ms)", None)]
    for a, (key, label, truth_key) in zip(ax, series, strict=True):
        a.plot(t, [np.nan if r[key] is None else r[key] for r in tel], "o-", ms=3,
               label="receiver telemetry")
        if truth_key:
            xs, ys = [], []
            for i, m in enumerate(tl["phases"]):
                t1 = tl["phases"][i + 1]["t"] if i + 1 < len(tl["phases"]) else end
                xs += [m["t"], t1]
                ys += [m[truth_key]] * 2
            a.plot(xs, ys, "--", color="gray", label="emulator setting")
        a.set_ylabel(label)
        a.grid(alpha=0.3)
        for m in tl["phases"]:
            a.axvline(m["t"], color="k", lw=0.5, alpha=0.3)
    for m in tl["phases"]:
        ax[0].text(m["t"] + 0.2, ax[0].get_ylim()[1] * 0.85, m["phase"], fontsize=8)
    ax[0].legend(loc="center right", fontsize=8)
    ax[-1].set_xlabel("time (s)")
    fig.suptitle("RTP/Opus link telemetry, 1 s intervals (64 kbit/s, buffer 200 ms)")
    fig.tight_layout()
    fig.savefig(out_dir / "transport.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(BITRATES), figsize=(10, 3.4), sharey=True)
    for a, br in zip(axes, BITRATES, strict=True):
        for fec, style in ((True, "o-"), (False, "s--")):
            rows = [r for r in result["quality"] if r["bitrate_kbps"] == br and r["fec"] == fec]
            a.plot([r["loss_pct"] for r in rows], [r["pesq_wb"] for r in rows], style,
                   label=f"FEC {'on' if fec else 'off'}")
        a.set_title(f"{br} kbit/s")
        a.set_xlabel("random loss (%)")
        a.grid(alpha=0.3)
    axes[0].set_ylabel("PESQ-WB")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out_dir / "transport-quality.png", dpi=110)
    plt.close(fig)


def markdown(r: dict) -> str:
    lines = ["# Transport benchmark", "",
             f"Run {r['date']} on {r['machine']}; {r['runtime_s']:.0f} s.", "",
             "## Glass-to-glass latency (capture of a frame's first sample → hand-off to the "
             "output)", "",
             "| buffer (ms) | link | median (ms) | p95 (ms) | max (ms) | target (ms) | "
             "playout delay (ms) | ok |", "|---|---|---|---|---|---|---|---|"]
    for g in r["glass_to_glass"]:
        link = "loopback" if not g["link_delay_ms"] else \
            f"{g['link_delay_ms']:.0f}±{g['link_jitter_ms']:.0f} ms"
        tgt = g["target_ms"] + g["link_delay_ms"]
        lines.append(f"| {g['buffer_ms']} | {link} | {g['g2g_ms_median']:.1f} | "
                     f"{g['g2g_ms_p95']:.1f} | {g['g2g_ms_max']:.1f} | ≤ {tgt:.0f} | "
                     f"{g['playout_delay_ms']:.0f} | {'yes' if g['ok'] else 'NO'} |")
    lines += ["", "## PESQ-WB vs random loss (simulated time, same codec/link model/jitter "
              "buffer)", "", "| bitrate | FEC | " + " | ".join(f"{x}%" for x in LOSSES) + " |",
              "|---|---|" + "---|" * len(LOSSES)]
    for br in BITRATES:
        for fec in (True, False):
            rows = [q for q in r["quality"] if q["bitrate_kbps"] == br and q["fec"] == fec]
            lines.append(f"| {br} kbit/s | {'on' if fec else 'off'} | "
                         + " | ".join(f"{q['pesq_wb']:.2f}" for q in rows) + " |")
    lines += ["", "Real sockets, real time, same cells (simulation check):", "",
              "| bitrate | FEC | loss | measured loss | emulator truth | PESQ-WB real | "
              "PESQ-WB sim |", "|---|---|---|---|---|---|---|"]
    for c in r["real_cells"]:
        sim = next(q for q in r["quality"] if q["bitrate_kbps"] == c["bitrate_kbps"]
                   and q["fec"] == c["fec"] and q["loss_pct"] == c["loss_pct"])
        lines.append(f"| {c['bitrate_kbps']} | {'on' if c['fec'] else 'off'} | "
                     f"{c['loss_pct']}% | {c['measured_loss_pct']:.2f}% | "
                     f"{c['truth_loss_pct']:.2f}% | {c['pesq_wb']:.2f} | {sim['pesq_wb']:.2f} |")
    tl = r["timeline"]
    lines += ["", "## Telemetry timeline", "", "| phase | latency (ms) | loss (%) | "
              "jitter (ms) | concealed/s |", "|---|---|---|---|---|"]
    for i, m in enumerate(tl["phases"]):
        t1 = tl["phases"][i + 1]["t"] if i + 1 < len(tl["phases"]) else 1e9
        recs = [x for x in tl["telemetry"] if m["t"] + 1.5 < x["t"] <= t1 + 0.5]
        if not recs:
            continue
        lat = [x["latency_ms"] for x in recs if x["latency_ms"] is not None]
        lines.append(f"| {m['phase']} | {np.mean(lat):.1f} | "
                     f"{np.mean([x['loss_pct'] for x in recs]):.1f} | "
                     f"{np.mean([x['jitter_ms'] for x in recs]):.1f} | "
                     f"{np.mean([x['concealed'] for x in recs]):.1f} |")
    s, t = tl["summary"], tl["truth"]["rtp"]
    lines += ["", f"Whole run: receiver loss {s['loss_pct']:.2f}% vs emulator "
              f"{t['loss_pct']:.2f}%; {tl['sender_received']} telemetry records reached the "
              "sender over the back channel.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer clips/seeds, shorter timeline")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    t0 = time.time()
    clips = [load_audio(DATA / c).samples[:4 * 16_000] for c in CLIPS]
    if args.quick:
        clips = clips[:1]
    seeds = [1] if args.quick else [1, 2]
    import platform

    import psutil

    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "machine": f"{platform.machine()}, {psutil.cpu_count()} CPUs, "
                               f"Python {platform.python_version()}"}
    print("glass to glass ...", file=sys.stderr)
    result["glass_to_glass"] = [
        glass_to_glass(clips[0], b, Impairment()) for b in (100, 200, 500)
    ] + [glass_to_glass(clips[0], 200, Impairment(delay_ms=20, jitter_ms=10, seed=1))]
    print("quality vs loss ...", file=sys.stderr)
    result["quality"] = quality_sweep(clips, seeds)
    result["real_cells"] = [real_cell(clips[0], 100, fec, 5) for fec in (True, False)]
    print("timeline ...", file=sys.stderr)
    result["timeline"] = timeline(np.concatenate(clips), 3.0 if args.quick else 6.0)
    result["runtime_s"] = time.time() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "transport.json").write_text(json.dumps(result, indent=1))
    (args.out / "transport.md").write_text(markdown(result))
    plot(result, args.out)
    print(markdown(result))


if __name__ == "__main__":
    main()
