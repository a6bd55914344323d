"""What runs where in the simulated system, its bring-up, health, and teardown.

    host namespace  PREFIX-host   bridge PREFIXbr, the host's port PREFIXhst 10.77.0.1
        edge-denoise clock start --role master        (the grandmaster)
        edge-denoise receive --listen 10.77.0.1:5000+i (one receiver per device)
    device i        PREFIX-di     veth PREFIXdi 10.77.0.(10+i), its peer on the bridge
        pulseaudio (null sink) + paplay looping the device's recording
        edge-denoise clock start --role slave --free-running
        edge-denoise live --stream udp://10.77.0.1:5000+i --fix-faults ... --state-dir
        edge-denoise serve --port ROOT/di/tty-dev      (socat pty pair; host end tty-host)
    outside the namespaces: socat per device, and ``host-calibrate dashboard``.

Everything written goes under the state directory ROOT (default build/system); ``down``
stops every process by its group, deletes the namespaces (their veths, bridge and rules go
with them) and removes ROOT, then checks that none of it is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

from edge.errors import HushlinkError
from host.system import netns, procs, pulse
from host.system.procs import Manifest

PORT_BASE = 5000


class SystemError_(HushlinkError):
    pass


def edge_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge", "--log-level", "info", *args]


def host_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "host", *args]


def up(root: Path, n: int = 2, *, prefix: str = "hls", data: Path | None = None,
       dashboard_port: int | None = 8765, log=lambda msg: None,
       timeout_s: float = 90.0, taps: bool = False) -> Manifest:
    """Bring the system up and wait until every part is healthy; on any failure tear down
    what was made and raise. ``taps``: each receiver also appends what it plays to
    ``host/rxN.f32`` (raw float32, 16 kHz; grows 64 kB/s, so only for a bounded run such as
    the demo)."""
    if os.geteuid() != 0:
        raise SystemError_("system up needs root (network namespaces, PTP ports)")
    for tool in ("ip", "ptp4l", "pmc", "socat", "pulseaudio", "paplay", "pactl", "iptables",
                 "tc"):
        if not shutil.which(tool):
            raise SystemError_(f"{tool} is not installed (scripts/bootstrap-system)")
    root = Path(root).resolve()
    old = Manifest.load(root)
    if old is not None:
        raise SystemError_(f"a system is already up under {root} (`host-calibrate system "
                           f"down --state-dir {root}` first)")
    left = netns.listed(prefix)
    if left:
        raise SystemError_(f"namespaces {', '.join(left)} exist already (another system with "
                           f"prefix {prefix}?)")
    root.mkdir(parents=True, exist_ok=True)
    net = netns.names(prefix, n)
    m = Manifest(root=str(root), prefix=prefix, devices=net["devices"])
    m.save()
    try:
        _up(m, net, root, data, dashboard_port, log, taps)
        wait_healthy(m, timeout_s, log)
    except BaseException:
        log("bring-up failed: tearing down")
        with contextlib.suppress(Exception):
            down(root, prefix=prefix)
        raise
    return m


def _up(m: Manifest, net: dict, root: Path, data, dashboard_port, log,
        taps: bool = False) -> None:
    host = root / "host"
    (host / "run").mkdir(parents=True, exist_ok=True)
    m.namespaces.append(net["host_ns"])
    m.save()
    netns.add_host(net)
    keys = _signing(host)
    profile = _device_profile(host)
    log(f"host namespace {net['host_ns']}: {net['nic']} {net['host_ip']}/24 on bridge "
        f"{net['bridge']}")
    procs.start(m, "host.gm", edge_argv(
        "clock", "start", "--role", "master", "--iface", net["nic"], "--timestamping",
        "software", "--fast-announce"), netns=net["host_ns"],
        env={"HUSHLINK_RUN_DIR": str(host / "run")})
    for dev in net["devices"]:
        i, d = dev["index"], root / f"d{dev['index']}"
        dev.update(dir=str(d), port=PORT_BASE + i, tty_dev=str(d / "tty-dev"),
                   tty_host=str(d / "tty-host"), state=str(d / "state"),
                   telemetry=str(d / "telemetry.jsonl"), events=str(d / "events.jsonl"),
                   run=str(d / "run"), rx_telemetry=str(host / f"rx{i}.jsonl"),
                   tap=str(host / f"rx{i}.f32") if taps else None)
        for sub in ("run", "state", "pulse"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        for f in (dev["telemetry"], dev["events"]):
            Path(f).touch()
        m.namespaces.append(dev["ns"])
        m.save()
        netns.add_device(net, dev)
        from host.flash import init_root

        init_root(d / "state", [keys["pub"]])
        src = pulse.make_recording(data, i, d / "recording.wav")
        dev["recording"] = src
        log(f"device {i}: namespace {dev['ns']}, {dev['iface']} {dev['ip']}, audio: {src}")
        penv = pulse.prepare_home(d / "pulse")
        denv = {**penv, "HUSHLINK_RUN_DIR": dev["run"]}
        procs.start(m, f"d{i}.pulse", pulse.server_argv(), netns=dev["ns"], env=penv)
        procs.start(m, f"d{i}.socat", ["socat", f"pty,raw,echo=0,link={dev['tty_dev']}",
                                       f"pty,raw,echo=0,link={dev['tty_host']}"])
        procs.start(m, f"host.rx{i}", edge_argv(
            "receive", "--listen", f"{net['host_ip']}:{dev['port']}", "--peer",
            f"{dev['ip']}:0", "--telemetry", dev["rx_telemetry"],
            *(["--tap", dev["tap"]] if taps else [])), netns=net["host_ns"])
        procs.start(m, f"d{i}.clock", edge_argv(
            "clock", "start", "--role", "slave", "--iface", dev["iface"], "--timestamping",
            "software", "--free-running", "--fast-announce"), netns=dev["ns"], env=denv)
        pulse.wait_ready(penv)
        procs.start(m, f"d{i}.player", pulse.player_argv(d / "recording.wav"),
                    netns=dev["ns"], env=penv)
        # Nice -10 as the deployment unit gives it (`live --print-unit`); its worker thread
        # takes real-time priority from the profile (_device_profile)
        procs.start(m, f"d{i}.live", ["nice", "-n", "-10", *edge_argv(
            "live", "--profile", str(profile), "--stream",
            f"udp://{net['host_ip']}:{dev['port']}", "--rate", "16000",
            "--telemetry", dev["telemetry"], "--fix-faults", dev["events"], "--state-dir",
            dev["state"], "--quiet")], netns=dev["ns"], env=denv)
        tty = Path(dev["tty_dev"])
        _wait(tty.exists, 10, f"device {i}'s pty pair")
        procs.start(m, f"d{i}.serve", edge_argv(
            "serve", "--port", dev["tty_dev"], "--state-dir", dev["state"], "--telemetry",
            dev["telemetry"], "--fault-events", dev["events"]), netns=dev["ns"], env=denv)
        m.save()
    if dashboard_port is not None:
        procs.start(m, "host.dashboard", host_argv(
            "dashboard", "--state-dir", str(root), "--port", str(dashboard_port)))
        m.dashboard = f"http://127.0.0.1:{dashboard_port}/"
        m.save()


def _device_profile(host: Path) -> Path:
    """generic-linux with the live worker at real-time priority 70, as every board profile
    has it (hardware/rpi4.toml ...), and a capture queue of 2.56 s instead of 0.64 s. On a
    machine shared with other work a simulated device's worker at normal priority (even at
    Nice -10) falls behind real time and overruns its capture queue (measured: 30-70 % of the
    audio dropped at load average 12-20 on 2 cores); at real-time priority 0.1-2 % still were,
    in bursts from the capture chain (PulseAudio and PortAudio are not real-time here), and
    a single overrun fails a pushed bundle's live check for the machine's sake, not the
    model's. A board has its own CPU and keeps its profile."""
    from edge.profile import DeviceProfile, _builtin_dir

    text = (_builtin_dir() / "generic-linux.toml").read_text()
    changes = {"realtime_priority = 0": "realtime_priority = 70",
               "queue_frames = 64": "queue_frames = 256",
               'name = "generic-linux"': 'name = "sim-device"'}
    for old, new in changes.items():
        if old not in text:
            raise SystemError_("hardware/generic-linux.toml changed: update _device_profile")
        text = text.replace(old, new)
    out = host / "sim-device.toml"
    out.write_text(text)
    DeviceProfile.load(out)  # the same checks as live's
    return out


def _signing(host: Path) -> dict:
    """A signing key the devices trust and one signed bundle of the shipped model, for the
    dashboard's push."""
    from edge.model import default_model_path
    from host.bundle import build, keygen

    key, pub, _ = keygen(host / "keys" / "signer")
    bundles = host / "bundles"
    bundles.mkdir(exist_ok=True)
    meta = json.loads(default_model_path().with_suffix(".json").read_text())
    build(default_model_path(), key, bundles / "shipped.hlb",
          version=f"{meta.get('version', '0')}+sim.1")
    return {"key": key, "pub": pub}


def _wait(ok, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not ok():
        if time.monotonic() > deadline:
            raise SystemError_(f"{what} did not come up in {timeout_s:.0f} s")
        time.sleep(0.1)


def health(m: Manifest) -> dict:
    """Processes (running / exited with status and log tail), and per device what proves the
    chain works: the slave has a master, the live loop's heartbeat, the stream's telemetry."""
    out = {"processes": [procs.state(p) for p in m.procs], "devices": []}
    now = time.time()
    for dev in m.devices:
        row = {"index": dev["index"], "ns": dev["ns"]}
        st = _json(Path(dev.get("run", "")) / f"ptp-{dev['iface']}" / "status.json")
        row["ptp_port"] = st.get("port_state") if st else None
        row["ptp_offset_ns"] = st.get("offset_ns") if st else None
        live = _json(Path(dev.get("state", "")) / "live.json")
        row["live_age_s"] = round(now - live["heartbeat"], 1) if live else None
        row["telemetry_age_s"] = _last_age(dev.get("telemetry"), now)
        out["devices"].append(row)
    out["crashed"] = [p["name"] for p in out["processes"] if p["state"] != "running"]
    return out


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _last_age(path: str | None, now: float) -> float | None:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 2048))
            last = f.read().decode(errors="replace").strip().splitlines()[-1]
        return round(now - json.loads(last)["t"], 1)
    except (OSError, TypeError, ValueError, IndexError, KeyError):
        return None


def healthy(h: dict) -> bool:
    return not h["crashed"] and all(
        d["ptp_port"] in ("UNCALIBRATED", "SLAVE") and d["live_age_s"] is not None
        and d["live_age_s"] < 5 and d["telemetry_age_s"] is not None
        and d["telemetry_age_s"] < 5 for d in h["devices"])


def wait_healthy(m: Manifest, timeout_s: float, log) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        h = health(m)
        if h["crashed"]:
            raise SystemError_("crashed during bring-up: " + "; ".join(
                f"{p['name']} (exit {p['rc']}): {' | '.join(p['log_tail'])}"
                for p in h["processes"] if p["state"] != "running"))
        if healthy(h):
            log("all devices: PTP master selected, live loop running, stream telemetry flowing")
            return h
        if time.monotonic() > deadline:
            raise SystemError_(f"not healthy after {timeout_s:.0f} s: {json.dumps(h['devices'])}")
        time.sleep(0.5)


def down(root: Path, *, prefix: str | None = None, log=lambda msg: None) -> dict:
    """Stop everything ``up`` started, delete its namespaces and its state directory; safe to
    run again (and after a failed ``up``). Returns what was removed and what is left (empty
    when clean)."""
    root = Path(root).resolve()
    m = Manifest.load(root)
    stopped, namespaces = [], []
    if m is not None:
        prefix = prefix or m.prefix
        for p in reversed(m.procs):  # the dashboard and devices first, the grandmaster last
            if procs.alive(p):
                procs.stop(p)
                stopped.append(p.name)
        namespaces = list(m.namespaces)
    for ns in {*namespaces, *(netns.listed(prefix) if prefix else [])}:
        netns.delete(ns)
    if root.exists() and (m is not None or (root / procs.MANIFEST).exists()):
        shutil.rmtree(root, ignore_errors=True)
    left = {"processes": [p.name for p in (m.procs if m else []) if procs.alive(p)]
            + [f"pid {pid}" for pid in procs.mentioning(str(root))],
            "namespaces": netns.listed(prefix) if prefix else [],
            "files": [str(root)] if m is not None and root.exists() else []}
    log(f"stopped {len(stopped)} processes, deleted {len(namespaces)} namespaces, removed "
        f"{root}")
    return {"stopped": stopped, "namespaces": sorted(namespaces), "left": left}


def impair(root: Path, device: int, *, loss_pct: float = 0.0, rate_kbit: float = 0.0) -> dict:
    m = load(root)
    dev = next((d for d in m.devices if d["index"] == device), None)
    if dev is None:
        raise SystemError_(f"no device {device} (devices: "
                           f"{', '.join(str(d['index']) for d in m.devices)})")
    out = netns.impair(netns.names(m.prefix, 0)["host_ns"], dev, dev["port"],
                       loss_pct=loss_pct, rate_kbit=rate_kbit)
    path = Path(m.root) / "impairment.json"  # what the dashboard shows as the link's cap
    known = _json(path) or {}
    known[str(device)] = out
    tmp = path.with_name(".impairment.json.tmp")
    tmp.write_text(json.dumps(known))
    os.replace(tmp, path)
    return out


def load(root: Path) -> Manifest:
    m = Manifest.load(Path(root).resolve())
    if m is None:
        raise SystemError_(f"no system is up under {root} (`host-calibrate system up`)")
    return m
