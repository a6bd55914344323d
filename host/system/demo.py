"""``host-calibrate system demo`` (``make system-demo``): the whole system in a few minutes.

Brings a host and N devices up (host/system/stack.py, receivers tapping what they play),
impairs device 1's link (random loss at the host and a tbf rate cap, which queues: delay),
calibrates it over its serial line (collect with a parameter sweep, tune, apply with the
before/after measurement and PESQ-WB of the received audio), pushes a newly signed bundle to
every device with device 1 as the canary (the fleet CLI, ``flash-to-device push``), plays a
mains hum into the last device's microphone and reads the fault event back over serial with
the hum that reached the host before and after the fixer's notches, then tears everything
down, on failure and Ctrl-C too. The numbers go to ``OUT/system_demo.json`` and ``.md``.

PESQ-WB always scores the received audio against the clean speech the device's noisy feed
was mixed from (aligned by cross-correlation, host/linkcheck.py): the denoiser and the link
together, next to the PESQ-WB of the noisy feed itself.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from host.system import pulse
from host.system.stack import down, health, impair, up

RATE = 16_000


# ------------------------------------------------------------------ pure audio measurements

def hum_signal(seconds: float, rms: float, f0: float = 50.0, harmonics: int = 4,
               decay: float = 0.6) -> np.ndarray:
    """Mains hum: ``f0`` and its harmonics falling by ``decay`` each, at ``rms``."""
    t = np.arange(int(seconds * RATE)) / RATE
    x = sum(decay ** (k - 1) * np.sin(2 * np.pi * k * f0 * t) for k in range(1, harmonics + 1))
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)  # no click at either end
    x = x * fade
    return (x * rms / np.sqrt(np.mean(x ** 2))).astype(np.float32)


def hum_dbfs(x: np.ndarray, f0: float = 50.0, harmonics: int = 4, bw_hz: float = 2.0) -> float:
    """RMS level (dBFS) of ``x`` within ``bw_hz`` of ``f0`` and its harmonics."""
    spec = np.fft.rfft(x * np.hanning(len(x)))
    f = np.fft.rfftfreq(len(x), 1 / RATE)
    near = np.zeros(len(f), bool)
    for k in range(1, harmonics + 1):
        near |= np.abs(f - k * f0) <= bw_hz
    # Parseval with the Hann window's power gain (3/8)
    power = 2 * np.sum(np.abs(spec[near]) ** 2) / (len(x) ** 2 * 0.375)
    return round(10 * np.log10(power + 1e-20), 1)


def windows_dbfs(x: np.ndarray, seconds: float = 0.5) -> list[float]:
    n = int(seconds * RATE)
    return [hum_dbfs(x[i:i + n]) for i in range(0, len(x) - n + 1, n)]


# ------------------------------------------------------------------ the demo

class Sampler(threading.Thread):
    """PTP offset and port state of every device, once a second, for the whole run, by
    ``phase`` (device 1's impairment caps its PTP messages too)."""

    def __init__(self, m):
        super().__init__(daemon=True)
        self.m, self.rows, self.stop, self.phase = m, [], threading.Event(), "before"

    def run(self):
        while not self.stop.wait(1.0):
            with contextlib.suppress(Exception):
                for d in health(self.m)["devices"]:
                    self.rows.append((d["index"], self.phase, d["ptp_port"],
                                      d["ptp_offset_ns"]))

    def summary(self) -> dict:
        out = {}
        order = ["before", "d1 impaired", "after"]
        for key in sorted({(r[0], r[1]) for r in self.rows},
                          key=lambda k: (k[0], order.index(k[1]))):
            rows = [r for r in self.rows if (r[0], r[1]) == key]
            # a FAULTY or LISTENING port keeps its last offset: only a tracking port's count
            off = [abs(r[3]) for r in rows
                   if r[3] is not None and r[2] in ("UNCALIBRATED", "SLAVE")]
            ports = [r[2] or "none" for r in rows]
            out[f"{key[0]} {key[1]}"] = {
                "device": key[0], "phase": key[1], "seconds": len(rows),
                "ports": {p: ports.count(p) for p in sorted(set(ports))},
                "offset_median_abs_us": round(statistics.median(off) / 1e3, 1) if off else None,
                "offset_max_abs_us": round(max(off) / 1e3, 1) if off else None}
        return out


def tap_size(dev: dict) -> int:
    try:
        return Path(dev["tap"]).stat().st_size // 4
    except OSError:
        return 0


def tap_slice(dev: dict, a: int, b: int) -> np.ndarray:
    with open(dev["tap"], "rb") as f:
        f.seek(4 * a)
        return np.frombuffer(f.read(4 * max(0, b - a)), "<f4").astype(np.float32)


def link_window(dev: dict, t0: float, t1: float) -> dict:
    """The host receiver's telemetry of this device between two wall-clock times."""
    from host.linkcheck import summarize

    recs = []
    with contextlib.suppress(OSError):
        for ln in Path(dev["rx_telemetry"]).read_text().splitlines():
            with contextlib.suppress(ValueError):
                r = json.loads(ln)
                if t0 <= r.get("t", 0) <= t1:
                    recs.append(r)
    return summarize(recs)


def pesq_windows(clean: np.ndarray, deg: np.ndarray, seconds: float = 8.0) -> list[float]:
    """PESQ-WB of each ``seconds`` piece of ``deg``, each aligned on its own to the looping
    ``clean`` (the feed's loop restarts with a small gap: one alignment would drift)."""
    from host.linkcheck import pesq_wb

    n = int(seconds * RATE)
    return [round(pesq_wb(clean, deg[k:k + n]), 3) for k in range(0, len(deg) - n + 1, n)]


def pesq_received(dev: dict, seconds: float) -> dict:
    from edge.audio import load_audio
    from host.linkcheck import read_tap

    clean = load_audio(pulse.clean_path(Path(dev["recording_wav"]))).samples
    w = pesq_windows(clean, read_tap(dev["tap"], seconds))
    return {"pesq_wb": round(float(np.median(w)), 3), "pesq_wb_windows": w}


def pesq_noisy(dev: dict) -> float:
    from edge.audio import load_audio
    from host.linkcheck import pesq_wb

    clean = load_audio(pulse.clean_path(Path(dev["recording_wav"]))).samples
    noisy = load_audio(dev["recording_wav"]).samples
    return round(pesq_wb(clean, noisy[: 20 * RATE]), 3)


def fleet_push(bundle: Path, devices: dict[str, str], canary: int = 1,
               timeout_s: float = 300) -> dict:
    """``flash-to-device push BUNDLE --devices FILE --canary N --json`` (host/fleet.py) to
    ``devices`` (name -> serial port, in rollout order; the file names them: every port is
    called ``tty-host``); where the fleet CLI is not installed, the same order by hand: the
    canary, then the rest only when it succeeded."""
    ports = list(devices.values())
    cli = [sys.executable, "-c", "from host.flash_cli import main; main()", "push", str(bundle)]
    t0 = time.monotonic()
    if importlib.util.find_spec("host.fleet") is not None:
        fleet = Path(bundle).with_name("fleet.toml")
        fleet.write_text("".join(f'[[device]]\nname = "{n}"\nport = "{p}"\n\n'
                                 for n, p in devices.items()))
        r = subprocess.run([*cli, "--devices", str(fleet), "--canary", str(canary), "--json"],
                           capture_output=True, text=True, timeout=timeout_s)
        try:
            out = json.loads(r.stdout)
        except ValueError:
            out = {"error": (r.stderr or r.stdout).strip()[-500:]}
        rows = [{"port": d.get("port"), "status": d.get("status"),
                 "seconds": d.get("seconds"), "message": d.get("message")}
                for d in out.get("devices", [])]
        return {"via": "fleet", "rc": r.returncode, "devices": rows,
                "seconds": round(time.monotonic() - t0, 1), **({"error": out["error"]}
                                                               if "error" in out else {})}
    rows = []
    for k, port in enumerate(ports):
        if k >= canary and any(x["status"] != "ok" for x in rows[:canary]):
            rows.append({"port": port, "status": "skipped", "seconds": 0.0,
                         "message": "the canary failed"})
            continue
        t = time.monotonic()
        r = subprocess.run([*cli, "--port", port, "--json"], capture_output=True, text=True,
                           timeout=timeout_s)
        rows.append({"port": port, "status": "ok" if r.returncode == 0 else "failed",
                     "seconds": round(time.monotonic() - t, 1),
                     "message": "" if r.returncode == 0 else (r.stderr or r.stdout).strip()[-300:]})
    return {"via": "one by one (no host.fleet)", "rc": int(any(x["status"] != "ok"
                                                             for x in rows)),
            "devices": rows, "seconds": round(time.monotonic() - t0, 1)}


class Demo:
    def __init__(self, root: Path, *, devices: int = 2, quick: bool = False,
                 data: Path | None = None, prefix: str = "hlsdm", loss_pct: float = 5.0,
                 rate_kbit: float = 72.0, console=None):
        from rich.console import Console

        self.root, self.n, self.quick, self.data, self.prefix = root, devices, quick, data, prefix
        self.loss_pct, self.rate_kbit = loss_pct, rate_kbit
        self.con = console or Console()
        self.res: dict = {"devices": devices, "quick": quick, "steps": {}}
        self.m = None
        self.t0 = time.monotonic()

    def step(self, text: str) -> None:
        self.con.rule(f"[bold]{text}[/]  [dim]t+{time.monotonic() - self.t0:.0f} s[/]",
                      align="left")

    def say(self, text: str) -> None:
        self.con.print(f"  {text}", highlight=False)

    def run(self) -> dict:
        sampler = None
        try:
            self.step("1. bring the system up")
            t = time.monotonic()
            self.m = up(self.root, self.n, prefix=self.prefix, data=self.data,
                        dashboard_port=None, timeout_s=240, taps=True, log=self.say)
            for d in self.m.devices:
                d["recording_wav"] = str(Path(d["dir"]) / "recording.wav")
            self.res["up_s"] = round(time.monotonic() - t, 1)
            self.res["processes"] = len(self.m.procs)
            self.res["audio"] = {d["index"]: d["recording"] for d in self.m.devices}
            sampler = self.sampler = Sampler(self.m)
            sampler.start()
            self.baseline()
            self.calibrate()
            self.push()
            self.hum()
            self.check_alive()
        finally:
            if sampler is not None:
                sampler.stop.set()
                self.res["ptp"] = sampler.summary()
            self.step("7. tear down")
            t = time.monotonic()
            r = down(self.root, prefix=self.prefix)
            left = {k: v for k, v in r["left"].items() if v}
            self.res["down"] = {"seconds": round(time.monotonic() - t, 1),
                                "stopped": len(r["stopped"]), "left_behind": left}
            self.say(f"{len(r['stopped'])} processes stopped, {len(r['namespaces'])} namespaces "
                     f"deleted, left behind: {left or 'nothing'}")
        self.res["total_s"] = round(time.monotonic() - self.t0, 1)
        self.res["load_average"] = [round(x, 1) for x in os.getloadavg()]
        self.res["cores"] = os.cpu_count()
        return self.res

    def baseline(self) -> None:
        self.step("2. baseline: PTP and links, PESQ-WB of each device's received audio")
        secs = 16 if self.quick else 24
        t = time.time()
        time.sleep(secs)
        out = {}
        for d in self.m.devices:
            link = link_window(d, t, time.time())
            row = {"loss_pct": link["loss_pct"], "latency_ms": link["latency_ms"],
                   "pesq_noisy_feed": pesq_noisy(d), **pesq_received(d, secs)}
            out[d["index"]] = row
            self.say(f"device {d['index']}: loss {row['loss_pct']} %, latency "
                     f"{row['latency_ms']} ms; PESQ-WB vs clean: noisy feed "
                     f"{row['pesq_noisy_feed']}, received (denoised) {row['pesq_wb']} "
                     f"(median of {row['pesq_wb_windows']})")
        h = health(self.m)
        for d in h["devices"]:
            self.say(f"device {d['index']}: PTP {d['ptp_port']}, offset {d['ptp_offset_ns']} ns")
        self.res["baseline"] = out

    def calibrate(self) -> None:
        from host import calibrate, ga
        from host.calibrate_cli import apply_strategy, collect
        from host.fitness import Weights
        from host.link import connect
        from host.linkcheck import AudioProbe

        d = self.m.devices[0]
        self.step(f"3. impair device 1 (loss {self.loss_pct:g} %, cap {self.rate_kbit:g} "
                  "kbit/s), calibrate it")
        impair(self.root, 1, loss_pct=self.loss_pct, rate_kbit=self.rate_kbit)
        self.sampler.phase = "d1 impaired"
        self.say("iptables drops at the host, tbf caps (and queues) the device's uplink")
        sweep, dwell = (4, 6.0) if self.quick else (6, 8.0)
        seconds = 8.0 if self.quick else 12.0
        probe = AudioProbe(pulse.clean_path(Path(d["recording_wav"])), d["tap"])
        with connect(d["tty_host"]) as dev:
            time.sleep(3)
            self.say(f"collect: {sweep} parameter sets x {dwell:g} s over the serial line")
            lines = collect(dev, sweep * dwell, sweep=sweep, settle=2.0, seed=0,
                            pins={"protocol": "udp"})
            tel = self.root / "host" / "calibration.jsonl"
            tel.write_text("".join(json.dumps(x) + "\n" for x in lines))
            records = calibrate.load_records(tel)
            self.say(f"tune: {len(records)} records, k-means + bins + genetic algorithm")
            weights = Weights()
            res = calibrate.tune(records, weights=weights, pins={"protocol": "udp"},
                                 cfg=ga.GAConfig(generations=10 if self.quick else 20))
            params = res.params.to_dict()
            self.say(f"tune chose bitrate {params['bitrate_kbps']} kbps, buffer "
                     f"{params['buffer_ms']} ms, share {params['share']:g}, fec "
                     f"{params['fec']}, loss hint {params['loss_hint_pct']} % (predicted C "
                     f"{res.predicted_cost:.3f}, default {res.default_cost:.3f})")
            self.say(f"apply: measure {seconds:g} s before, push on trial, measure {seconds:g} "
                     "s after, confirm or revert")
            a = apply_strategy(dev, params, weights, seconds=seconds, settle=2.0,
                               trial_s=120.0, probe=probe)
        row = {"impairment": {"loss_pct": self.loss_pct, "rate_kbit": self.rate_kbit},
               "sweep": sweep, "records": len(records), "chosen": params,
               "predicted_cost": round(res.predicted_cost, 4),
               "default_cost": round(res.default_cost, 4), "confirmed": a["confirmed"]}
        for k in ("before", "after"):
            row[k] = {"params": a[k]["params"], "cost": round(a[k]["cost"], 4),
                      "loss_pct": a[k]["link"]["loss_pct"],
                      "latency_ms": a[k]["link"]["latency_ms"],
                      "delay_ms": a[k]["link"]["delay_ms"], "pesq_wb": a[k].get("pesq_wb"),
                      "pesq_wb_median": a[k].get("pesq_wb_median")}
            self.say(f"{k:6s} loss {row[k]['loss_pct']} %, latency {row[k]['latency_ms']} ms, "
                     f"playout delay {row[k]['delay_ms']} ms, PESQ-WB {row[k]['pesq_wb']}, "
                     f"measured C {row[k]['cost']}")
        self.say("[green]confirmed[/]" if a["confirmed"] else
                 "[yellow]reverted (the measured link got worse)[/]")
        impair(self.root, 1)
        self.sampler.phase = "after"
        self.say("device 1's impairment lifted")
        self.res["calibration"] = row

    def push(self) -> None:
        from edge.model import default_model_path
        from host.bundle import build

        self.step("4. push a new signed bundle to the fleet, device 1 as the canary")
        host = self.root / "host"
        meta = json.loads(default_model_path().with_suffix(".json").read_text())
        version = f"{meta.get('version', '0')}+sim.2"
        bundle = host / "bundles" / "demo.hlb"
        build(default_model_path(), host / "keys" / "signer.key", bundle, version=version)
        self.say(f"built {bundle.name} {version}, signed with the key the devices trust")
        r = fleet_push(bundle, {f"d{d['index']}": d["tty_host"] for d in self.m.devices},
                       canary=1)
        from host.link import connect

        rows = {row["port"]: row for row in r["devices"]}
        for d in self.m.devices:
            row = rows.setdefault(d["tty_host"], {"port": d["tty_host"], "status": "missing",
                                                  "seconds": None, "message": ""})
            with connect(d["tty_host"]) as dev:
                st = dev.call("flash.status")
            row["device"] = d["index"]
            row["active"] = st.get("version")
            row["live_runs"] = (st.get("live") or {}).get("version")
            self.say(f"device {d['index']}: {row['status']} in {row['seconds']} s, active "
                     f"{row['active']}, live loop runs {row['live_runs']}")
        r["devices"] = [rows[d["tty_host"]] for d in self.m.devices]
        self.say(f"via {r['via']}, exit {r['rc']}, {r['seconds']} s in all"
                 + (f": {r['error']}" if r.get("error") else ""))
        r["version"] = version
        self.res["push"] = r

    def hum(self) -> None:
        from host.link import connect

        d = self.m.devices[-1]
        i = d["index"]
        secs = 8.0 if self.quick else 10.0
        self.step(f"5. mains hum into device {i}'s microphone, the fault event, the repair")
        from edge.audio import load_audio, save_audio

        feed = load_audio(d["recording_wav"]).samples
        level = float(np.sqrt(np.mean(feed ** 2)))
        hum = hum_signal(secs, level)
        wav = Path(d["dir"]) / "hum.wav"
        save_audio(wav, hum)
        with connect(d["tty_host"]) as dev:
            before = {json.dumps(e, sort_keys=True) for e in dev.events(256)}
            time.sleep(2)
            a = tap_size(d)
            env = {**os.environ, **pulse.env_for(Path(d["dir"]) / "pulse")}
            self.say(f"paplay {secs:g} s of 50 Hz hum (4 harmonics) at the feed's own level "
                     f"(0 dB re the feed, {20 * np.log10(level):.1f} dBFS) into {d['ns']}'s "
                     "null sink, mixed with the running recording")
            subprocess.run(["ip", "netns", "exec", d["ns"], "paplay",
                            f"--device={pulse.SINK}", str(wav)], env=env, check=True,
                           timeout=secs + 60)
            b = tap_size(d)
            time.sleep(3)
            new, deadline = [], time.monotonic() + 30
            while time.monotonic() < deadline:
                new = [e for e in dev.events(256) if json.dumps(e, sort_keys=True) not in before]
                if any(e["kind"] == "hum" for e in new):
                    break
                time.sleep(1)
        hums = [e for e in new if e["kind"] == "hum"]
        for e in hums:
            self.say(f"get_events: hum from {e['source']} at {e['start_s']:.2f}–{e['end_s']:.2f} "
                     f"s of capture, confidence {e['confidence']}")
        got = tap_slice(d, a, b + RATE // 2)  # the receiver's ~0.2 s behind the sink
        pre = tap_slice(d, max(0, a - 4 * RATE), a)
        w = windows_dbfs(got)
        row = {"device": i, "seconds": secs, "tap_s": round((b - a) / RATE, 1),
               "injected_dbfs": hum_dbfs(hum),
               "feed_dbfs": round(20 * np.log10(level), 1),
               "events": hums, "other_new_events": sorted({e["kind"] for e in new} - {"hum"}),
               "received_before_dbfs": hum_dbfs(pre) if len(pre) > RATE else None,
               "received_first_s_dbfs": max(w[:2]) if len(w) >= 2 else None,
               "received_rest_median_dbfs": round(float(np.median(w[4:])), 1)
               if len(w) > 5 else None, "received_windows_dbfs": w}
        self.say(f"hum band (50–200 Hz lines): injected {row['injected_dbfs']} dBFS; received: "
                 f"{row['received_before_dbfs']} before, {row['received_first_s_dbfs']} in its "
                 f"first second, {row['received_rest_median_dbfs']} (median) after that")
        if not hums:
            self.say("[red]no hum event came back over serial[/]")
        self.res["hum"] = row

    def check_alive(self) -> None:
        self.step("6. every process still running")
        h = health(self.m)
        self.res["crashed"] = h["crashed"]
        self.say(f"crashed: {h['crashed'] or 'none'} of {len(h['processes'])} processes")
        drops = {}
        for d in self.m.devices:  # capture blocks the live loop dropped (queue full): load
            with contextlib.suppress(OSError, ValueError, KeyError):
                live = json.loads((Path(d["state"]) / "live.json").read_text())
                n = live["overruns"] + live["hops"]
                drops[d["index"]] = round(100 * live["overruns"] / max(1, n), 1)
        self.res["capture_dropped_pct"] = drops
        self.say(f"capture blocks dropped by the live loops (overruns) since the last model "
                 f"switch, %: {drops}")


def ok(res: dict) -> list[str]:
    """What makes the demo red (empty: green)."""
    bad = []
    if "hum" not in res or not res["hum"]["events"]:
        bad.append("no hum event")
    if "push" not in res or res["push"]["rc"] != 0:
        bad.append("the fleet push did not succeed")
    if "calibration" not in res:
        bad.append("no calibration")
    if res.get("crashed"):
        bad.append(f"crashed: {', '.join(res['crashed'])}")
    if res.get("down", {}).get("left_behind"):
        bad.append("teardown left something behind")
    return bad


def table(res: dict) -> str:
    """The markdown report (also printed as a rich table)."""
    b, c, h, p = (res.get(k, {}) for k in ("baseline", "calibration", "hum", "push"))
    ptp = res.get("ptp", {})
    lines = ["| measure | value |", "|---|---|"]
    for r in ptp.values():
        ports = ", ".join(f"{k} {v} s" for k, v in r["ports"].items())
        lines.append(f"| PTP offset device {r['device']}, {r['phase']}: median / max abs "
                     f"| {r['offset_median_abs_us']} / {r['offset_max_abs_us']} µs ({ports}) |")
    for i, r in b.items():
        lines.append(f"| device {i} unimpaired: loss, PESQ-WB noisy feed → received | "
                     f"{_f(r['loss_pct'], 1)} %, {r['pesq_noisy_feed']:.2f} → "
                     f"{r['pesq_wb']:.2f} |")
    if c:
        im = c["impairment"]
        bf, af = c["before"], c["after"]

        def prm(x):
            return f"{x['params']['bitrate_kbps']} kbps / {x['params']['buffer_ms']} ms"
        lines += [
            f"| device 1 impaired ({im['loss_pct']:g} % drop, {im['rate_kbit']:g} kbit/s cap): "
            f"loss before → after calibration | {_f(bf['loss_pct'], 1)} % → "
            f"{_f(af['loss_pct'], 1)} % |",
            f"| latency / playout delay before → after | {_f(bf['latency_ms'])} / "
            f"{_f(bf['delay_ms'])} → {_f(af['latency_ms'])} / {_f(af['delay_ms'])} ms |",
            f"| params before → chosen ({c['records']} records, {c['sweep']} sets) | "
            f"{prm(bf)} → {prm(af)}, {'confirmed' if c['confirmed'] else 'reverted'} |",
            f"| PESQ-WB received before → after | {_f(bf['pesq_wb'], 2)} → "
            f"{_f(af['pesq_wb'], 2)} |"]
    if p:
        rows = ", ".join(f"d{r.get('device')} {r['status']} {_f(r['seconds'], 1)} s"
                         for r in p["devices"])
        lines.append(f"| push {p['version']} (canary device 1, {p['via']}) | {rows} |")
    if h:
        # the capture's event spans the hum; the background's open and close as it fades
        ev = max(h["events"], key=lambda e: e["end_s"] - e["start_s"]) if h["events"] else None
        lines += [f"| hum on device {h['device']}: event over serial | " + (
            f"hum ({ev['source']}), {ev['start_s']:.1f}–{ev['end_s']:.1f} s, conf "
            f"{ev['confidence']}" if ev else "none") + " |",
            f"| hum lines injected → received before / first s / after | "
            f"{h['injected_dbfs']} → {h['received_before_dbfs']} / "
            f"{h['received_first_s_dbfs']} / {h['received_rest_median_dbfs']} dBFS |"]
    d = res.get("down", {})
    lines += ["", f"{res['devices']} devices, {res.get('processes')} processes; up in "
              f"{res.get('up_s')} s, down in {d.get('seconds')} s (left behind: "
              f"{d.get('left_behind') or 'nothing'}); crashed: {res.get('crashed') or 'none'}; "
              f"capture dropped by the live loops (overruns, %): "
              f"{res.get('capture_dropped_pct')}; "
              f"whole demo {res.get('total_s')} s on {res.get('cores')} cores, load average "
              f"{res.get('load_average')} at the end.", ""]
    return "\n".join(lines)


def _f(x, digits: int = 0) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def rich_table(md: str):
    from rich.table import Table

    t = Table(title="system demo", show_lines=False)
    t.add_column("measure")
    t.add_column("value")
    for ln in md.splitlines()[2:]:
        if ln.startswith("| "):
            a, b = ln[2:-2].split(" | ", 1)
            t.add_row(a, b)
    return t
