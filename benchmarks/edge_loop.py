"""Benchmark of the on-device loop (issue 5). Writes benchmarks/results/edge_loop.{json,md}.

1. Per-hop cost of ``Denoiser.process_hop`` (STFT + int8 model + iSTFT) over noisy speech,
   on both interpreters: ai_edge_litert (project venv) and tflite_runtime 2.14 (build/venv-tflrt,
   numpy<2; built by tests/test_tflite_runtime_fallback.py or here). Each in a fresh process:
   latency distribution, real-time factor, CPU %, peak RSS.
2. The whole live loop for ``--minutes`` through a private PulseAudio server (null sink,
   48 kHz capture -> soxr -> 16 kHz -> model -> soxr -> sinks): per-hop loop time, overruns,
   RSS sampled every 2 s (flatness = slope of a line fit).
3. End-to-end added latency through PulseAudio: a duplex client plays noise bursts into sink
   ``vin`` and records ``vout.monitor`` while ``edge-denoise live --bypass`` runs vin -> vout
   (bypass: the same per-hop path and model call, mask not applied, so bursts survive); the
   client's own round trip (recording ``vin.monitor`` directly) is subtracted. A bare
   PortAudio passthrough (same streams, period and latency setting; callback -> deque ->
   callback, no resampling, no model) measured the same way gives what the sound-server path
   itself costs; the loop's own share is the difference.

Usage: .venv/bin/python benchmarks/edge_loop.py [--minutes 2] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data"
TFLRT_PY = ROOT / "build" / "venv-tflrt" / "bin" / "python"

WORKER = r"""
import json, sys, time
import numpy as np
from edge.denoise import Denoiser
from edge.model import StepModel
m = StepModel(sys.argv[1])
x = np.load(sys.argv[2])
den = Denoiser(m)
hop = den.hop
n = len(x) // hop
t = np.empty(n)
for i in range(min(n, 200)):  # warm-up
    den.process_hop(x[i * hop:(i + 1) * hop])
den.reset()
cpu0, w0 = time.process_time(), time.perf_counter()
for i in range(n):
    a = time.perf_counter()
    den.process_hop(x[i * hop:(i + 1) * hop])
    t[i] = time.perf_counter() - a
wall, cpu = time.perf_counter() - w0, time.process_time() - cpu0
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
ms = t * 1e3
print(json.dumps({"backend": m.backend, "numpy": np.__version__, "hops": n,
    "hop_ms": {k: round(float(v), 4) for k, v in zip(
        ["p50", "p90", "p99", "p99.9", "max"], np.percentile(ms, [50, 90, 99, 99.9, 100]))},
    "mean_ms": round(float(ms.mean()), 4), "rtf": round(wall / (n * hop / 16000), 5),
    "cpu_percent": round(100 * cpu / wall, 1),
    "peak_rss_mb": round(hwm / 1024, 1), "sched": sys.argv[3]}))
"""


def pick_model(tmp: Path) -> tuple[Path, str]:
    from edge.model import default_model_path

    if default_model_path().is_file():
        return default_model_path(), "shipped edge/models/default.tflite"
    sys.path.insert(0, str(ROOT / "tests"))
    from stepmodels import build_test_model

    return build_test_model(tmp / "stepmodel"), "tiny test model (tests/stepmodels.py)"


def noisy_speech(seconds: float) -> np.ndarray:
    from edge.audio import load_audio

    sys.path.insert(0, str(ROOT / "tests"))
    from stepmodels import mix

    files = sorted((DATA / "speech/speechocean762").rglob("*.flac"))[:40]
    clean = np.concatenate([load_audio(p).samples for p in files])
    noise = load_audio(DATA / "noise/freesound_cc0/cafe.flac").samples
    x = mix(clean, noise, 5.0)
    return np.resize(x, int(seconds * 16_000)).astype(np.float32)


def ensure_tflrt_venv() -> bool:
    ok = TFLRT_PY.exists() and subprocess.run(
        [str(TFLRT_PY), "-c", "import tflite_runtime.interpreter, soundfile, soxr"],
        capture_output=True).returncode == 0
    if ok:
        return True
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(TFLRT_PY.parents[1])],
                   check=True)
    r = subprocess.run([str(TFLRT_PY), "-m", "pip", "install", "-q", "tflite-runtime==2.14.0",
                        "numpy<2", "soundfile", "soxr"], capture_output=True, text=True)
    return r.returncode == 0


def per_hop(model: Path, x: np.ndarray, tmp: Path) -> list[dict]:
    np.save(tmp / "x.npy", x)
    out = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    pythons = [sys.executable] + ([str(TFLRT_PY)] if ensure_tflrt_venv() else [])
    scheds = [("normal", [])] + ([("SCHED_FIFO 50", ["chrt", "-f", "50"])]
                                 if os.geteuid() == 0 else [])
    for py in pythons:
        for name, prefix in scheds:  # FIFO = what the systemd unit + profile give a device
            r = subprocess.run([*prefix, py, "-c", WORKER, str(model), str(tmp / "x.npy"), name],
                               env=env, capture_output=True, text=True, timeout=1200)
            if r.returncode != 0:
                raise SystemExit(r.stderr[-2000:])
            out.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return out


# ----------------------------------------------------------------------------- PulseAudio
class Pulse:
    """A private PulseAudio server with null sinks vin and vout (48 kHz)."""

    def __init__(self, tmp: Path):
        home = tmp / "home"
        (home / "run").mkdir(parents=True)
        (home / ".asoundrc").write_text(
            "pcm.!default { type pulse }\nctl.!default { type pulse }\n")
        self.env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(home / "run")}
        self.proc = subprocess.Popen(
            ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "-F", "/dev/null",
             "--load=module-null-sink sink_name=vin rate=48000",
             "--load=module-null-sink sink_name=vout rate=48000",
             "--load=module-native-protocol-unix"], env=self.env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        while subprocess.run(["pactl", "info"], env=self.env, capture_output=True).returncode:
            if time.monotonic() - t0 > 15:
                raise SystemExit("PulseAudio did not start")
            time.sleep(0.1)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


LIVE = [sys.executable, "-m", "edge", "live", "--quiet", "--rate", "48000"]


def bench_profile(tmp: Path) -> Path:
    """generic-linux at 48 kHz / 10 ms periods, worker at SCHED_FIFO 50 when root (as the
    device profiles and the systemd unit run it)."""
    text = (ROOT / "hardware" / "generic-linux.toml").read_text()
    text = text.replace('name = "generic-linux"', 'name = "bench-48k"')
    text = text.replace("native_rate = 16000", "native_rate = 48000")
    text = text.replace("period_frames = 160", "period_frames = 480")
    if os.geteuid() == 0:
        text = text.replace("realtime_priority = 0", "realtime_priority = 50")
    p = tmp / "bench-48k.toml"
    p.write_text(text)
    return p


def long_run(pulse: Pulse, model: Path, minutes: float, tmp: Path) -> dict:
    """The live loop for ``minutes`` on vin.monitor while noisy speech loops into vin."""
    from edge.audio import save_audio

    save_audio(tmp / "loop.wav", noisy_speech(30.0), out_rate=48_000)
    player_stop = threading.Event()

    def player():
        while not player_stop.is_set():
            subprocess.run(["paplay", "--device=vin", str(tmp / "loop.wav")], env=pulse.env)

    threading.Thread(target=player, daemon=True).start()
    summary_path = tmp / "long.json"
    proc = subprocess.Popen([*LIVE, "--duration", str(minutes * 60), "--model", str(model),
                             "--profile", str(bench_profile(tmp)),
                             "--no-play", "--summary", str(summary_path)],
                            env={**pulse.env, "PULSE_SOURCE": "vin.monitor"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    import psutil

    ps = psutil.Process(proc.pid)
    samples = []
    t0 = time.monotonic()
    while proc.poll() is None:
        try:
            samples.append((time.monotonic() - t0, ps.memory_info().rss / 2 ** 20))
        except psutil.NoSuchProcess:
            break
        time.sleep(2.0)
    player_stop.set()
    if proc.returncode != 0:
        raise SystemExit(proc.stderr.read()[-2000:])
    s = json.loads(summary_path.read_text())
    t, rss = np.array(samples).T
    steady = t > 10  # after model load and first allocations
    slope = float(np.polyfit(t[steady], rss[steady], 1)[0]) * 60 if steady.sum() > 3 else None
    return {"minutes": minutes, "overruns": s["overruns"], "input_overflows": s["input_overflows"],
            "underruns": s["underruns"], "queue_max": s["queue_max"], "hops": s["hops"],
            "hop_ms": s["hop_ms"], "loop_ms_per_hop": s["loop_ms_per_hop"],
            "cpu_percent": s["cpu_percent"], "peak_rss_mb": s["peak_rss_mb"],
            "rss_mb_start": round(float(rss[steady][0]), 1) if steady.any() else None,
            "rss_mb_end": round(float(rss[-1]), 1),
            "rss_slope_mb_per_min": None if slope is None else round(slope, 3),
            "capture_rate": s["capture_rate"], "period_frames": s["period_frames"]}


CLIENT = r"""
import sys, numpy as np, sounddevice as sd
x = np.load(sys.argv[1])
y = sd.playrec(x, samplerate=48000, channels=1, dtype="float32", blocking=True)
np.save(sys.argv[2], y[:, 0])
"""


def bursts(seconds: float = 6.0, rate: int = 48_000) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = np.zeros(int(seconds * rate), dtype=np.float32)
    for start in range(rate // 2, len(x) - rate // 2, rate // 2):
        x[start:start + rate // 20] = 0.3 * rng.standard_normal(rate // 20)
    return x


def client_delay_ms(pulse: Pulse, source: str, x: np.ndarray, tmp: Path) -> float:
    np.save(tmp / "play.npy", x)
    env = {**pulse.env, "PULSE_SINK": "vin", "PULSE_SOURCE": source}
    subprocess.run([sys.executable, "-c", CLIENT, str(tmp / "play.npy"), str(tmp / "rec.npy")],
                   env=env, check=True, timeout=60)
    y = np.load(tmp / "rec.npy")
    n = len(x) + len(y)
    xc = np.fft.irfft(np.fft.rfft(y, n) * np.conj(np.fft.rfft(x, n)), n)[:len(y)]
    return float(np.argmax(xc)) / 48.0


PASSTHROUGH = r"""
import collections, sys, time
import numpy as np, sounddevice as sd
period = int(sys.argv[1])
q, buf = collections.deque(), [np.zeros(0, np.float32)]
def incb(indata, frames, t, status):
    q.append(indata[:, 0].copy())
def outcb(outdata, frames, t, status):
    b = buf[0]
    while len(b) < frames and q:
        b = np.concatenate([b, q.popleft()])
    n = min(frames, len(b))
    outdata[:n, 0], outdata[n:, 0] = b[:n], 0.0
    buf[0] = b[n:]
    while sum(len(c) for c in q) > 2 * period:  # as the loop's sink: no standing backlog
        q.popleft()
kw = dict(samplerate=48000, blocksize=period, channels=1, dtype="float32", latency="low")
i, o = sd.InputStream(callback=incb, **kw), sd.OutputStream(callback=outcb, **kw)
i.start(); o.start()
time.sleep(float(sys.argv[2]))
"""


def added_latency(pulse: Pulse, model: Path, tmp: Path, rounds: int = 3,
                  repeats: int = 2) -> dict:
    """Interleaved rounds (a fresh passthrough, then a fresh loop, each measured ``repeats``
    times): where a stream lands against the null sinks' timers varies from start to start
    by up to a period or two, so each side gets several starts."""
    x = bursts()
    base = [client_delay_ms(pulse, "vin.monitor", x, tmp) for _ in range(3)]
    env = {**pulse.env, "PULSE_SOURCE": "vin.monitor", "PULSE_SINK": "vout"}
    passthrough, through, summaries = [], [], []
    for r in range(rounds):
        bare = subprocess.Popen([sys.executable, "-c", PASSTHROUGH, "480", "60"], env=env)
        time.sleep(2.0)
        passthrough += [client_delay_ms(pulse, "vout.monitor", x, tmp) for _ in range(repeats)]
        bare.kill()
        bare.wait()
        summary = tmp / f"lat{r}.json"
        live = subprocess.Popen([*LIVE, "--model", str(model), "--bypass", "--play",
                                 "--profile", str(bench_profile(tmp)), "--summary", str(summary)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(4.0)  # model loaded, streams running
        through += [client_delay_ms(pulse, "vout.monitor", x, tmp) for _ in range(repeats)]
        live.terminate()
        live.wait(20)
        summaries.append(json.loads(summary.read_text()))
    s = summaries[-1]
    added = np.array(through) - np.median(base)
    server = np.array(passthrough) - np.median(base)
    own = np.median(through) - np.median(passthrough)
    period_ms = s["period_frames"] / s["capture_rate"] * 1e3
    return {"client_round_trip_ms": [round(v, 2) for v in base],
            "through_passthrough_ms": [round(v, 2) for v in passthrough],
            "through_loop_ms": [round(v, 2) for v in through],
            "added_ms_median": round(float(np.median(added)), 2),
            "added_ms_max": round(float(np.max(added)), 2),
            "sound_server_path_ms_median": round(float(np.median(server)), 2),
            "sound_server_path_ms_range": [round(float(server.min()), 2),
                                           round(float(server.max()), 2)],
            "loop_own_ms_median": round(float(own), 2),
            "resampler": s.get("resampler"),
            "playback_trimmed_ms": [x.get("playback_trimmed_ms", 0.0) for x in summaries],
            "algorithmic_latency_ms": s["algorithmic_latency_ms"],
            "device_period_ms": round(period_ms, 2),
            "target_ms": round(s["algorithmic_latency_ms"] + period_ms + 10, 2),
            "loop_underruns": [x["underruns"] for x in summaries],
            "loop_overruns": [x["overruns"] for x in summaries],
            "playback_dropped_periods": [x["playback_dropped_periods"] for x in summaries]}


def markdown(res: dict) -> str:
    lines = [f"# edge loop benchmark ({res['date']}, {res['machine']})", "",
             f"Model: {res['model']}. {res['per_hop_seconds']} s of noisy speech per interpreter;"
             f" live loop through PulseAudio for {res['long_run']['minutes']} min.", "",
             "| interpreter | numpy | scheduling | hop p50 ms | p99 ms | p99.9 ms | max ms | RTF |"
             " CPU % | peak RSS MB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["per_hop"]:
        h = r["hop_ms"]
        lines.append(f"| {r['backend']} | {r['numpy']} | {r['sched']} | {h['p50']} | {h['p99']} | "
                     f"{h['p99.9']} | {h['max']} | {r['rtf']} | {r['cpu_percent']} | "
                     f"{r['peak_rss_mb']} |")
    lr, lat = res["long_run"], res["latency"]
    lines += ["", "| live loop (PulseAudio, 48 kHz) | value | target |", "|---|---|---|",
              f"| whole loop per hop p50 / p99 / max ms | {lr['loop_ms_per_hop']['p50']} / "
              f"{lr['loop_ms_per_hop']['p99']} / {lr['loop_ms_per_hop']['max']} | p99 <= 1 ms |",
              f"| model hop p50 / p99 ms | {lr['hop_ms']['p50']} / {lr['hop_ms']['p99']} | |",
              f"| overruns / input overflows | {lr['overruns']} / {lr['input_overflows']} | 0 |",
              f"| queue max (blocks) | {lr['queue_max']} | |",
              f"| RSS start -> end MB (slope MB/min) | {lr['rss_mb_start']} -> {lr['rss_mb_end']}"
              f" ({lr['rss_slope_mb_per_min']}) | flat |",
              f"| CPU % of one core | {lr['cpu_percent']} | |",
              f"| end to end through PulseAudio (loop), median / max ms | "
              f"{lat['added_ms_median']} / {lat['added_ms_max']} | |",
              f"| of which the sound-server path (bare passthrough), median ms | "
              f"{lat['sound_server_path_ms_median']} | |",
              f"| of which the loop itself (median loop - median passthrough) ms | "
              f"{lat['loop_own_ms_median']} | <= {lat['target_ms']} (algorithmic "
              f"{lat['algorithmic_latency_ms']} + period {lat['device_period_ms']} + 10) |",
              f"| sound-server path spread over {len(lat['through_passthrough_ms'])} starts ms | "
              f"{lat['sound_server_path_ms_range'][0]} - {lat['sound_server_path_ms_range'][1]}"
              " | |",
              f"| playback per run: start-up blocks dropped / backlog trimmed ms / underruns | "
              f"{lat['playback_dropped_periods']} / {lat['playback_trimmed_ms']} / "
              f"{lat['loop_underruns']} | |", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=2.0, help="live-loop run length")
    ap.add_argument("--seconds", type=float, default=60.0, help="audio per interpreter")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        model, model_desc = pick_model(tmp)
        print(f"model: {model_desc}", file=sys.stderr)
        res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
               "model": model_desc, "per_hop_seconds": args.seconds}
        res["per_hop"] = per_hop(model, noisy_speech(args.seconds), tmp)
        print(json.dumps(res["per_hop"]), file=sys.stderr)
        pulse = Pulse(tmp)
        try:
            res["latency"] = added_latency(pulse, model, tmp)
            print(json.dumps(res["latency"]), file=sys.stderr)
            res["long_run"] = long_run(pulse, model, args.minutes, tmp)
        finally:
            pulse.close()
        res["bench_peak_rss_mb"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    (RESULTS / "edge_loop.json").write_text(json.dumps(res, indent=1) + "\n")
    (RESULTS / "edge_loop.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
