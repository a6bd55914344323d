"""Calibration from the command line, every part in its own process, as the README sets it
up: `edge-denoise receive --tap` (the far end), `host-calibrate emulate` (5 % loss,
40 ± 15 ms) between it and the device, `edge-denoise serve --stream-cmd "edge-denoise send
CLIP --loop --params-file {params_file} ..."` on one end of a socat pty pair, and the host's
`host-calibrate stream start | collect | tune | apply | stream stop` on the other. The default
and the tuned parameters are measured on the same link by `apply`: the tuned ones must be
better on the measured fitness and on PESQ-WB of the received speech, and the tuned buffer
must have reached the receiver (its own telemetry reports the bound it uses).

PESQ-WB is that of the best clip-long stretch of 20 s measured (host/linkcheck.py): where the
link's random losses fall moves one stretch by 0.1–0.4 at 5 % loss, more than the tuned
bitrate moves it (+0.1–0.2), so a median of three stretches would compare luck."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_link_util import ROOT, AgentProc, PtyPair

from edge.params import TransportParams

SPEECH = "speech/vctk/p278/p278_003.flac"  # 6.6 s, streamed in a loop
PY = sys.executable

pytestmark = pytest.mark.slow


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A command in its own process, output to a log file; stopped by its PID."""

    def __init__(self, log: Path, *argv: str, wait_for: bytes = b""):
        self.log = log
        self._fh = log.open("wb")
        self.proc = subprocess.Popen([PY, *argv], cwd=ROOT, stdout=self._fh,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while wait_for and wait_for not in log.read_bytes():
            assert self.proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()
        return self.log.read_text()


@contextlib.contextmanager
def split_setup(tmp_path: Path, clip: Path, loss: str = "5%", delay: str = "40ms",
                jitter: str = "15ms", seed: int = 3):
    """Receiver, emulator and device agent in separate processes. Yields a dict: ``port``
    (the host's end of the pty), ``tap`` (the receiver's audio), the processes and logs."""
    rx_port, emu_port = free_udp_port(), free_udp_port()
    tap, tx_tel = tmp_path / "rx.f32", tmp_path / "tx.jsonl"
    rx = Proc(tmp_path / "receive.log", "-m", "edge", "receive", "--listen",
              f"127.0.0.1:{rx_port}", "--tap", str(tap), "--telemetry",
              str(tmp_path / "rx.jsonl"), wait_for=b"listening")
    emu = Proc(tmp_path / "emulate.log", "-m", "host", "emulate", "--listen",
               f"127.0.0.1:{emu_port}", "--forward", f"127.0.0.1:{rx_port}", "--loss", loss,
               "--delay", delay, "--jitter", jitter, "--seed", str(seed),
               wait_for=b"emulating")
    pair = PtyPair(tmp_path, f"s{os.getpid()}")
    send = (f"{PY} -m edge send {clip} --loop --to udp://127.0.0.1:{emu_port} "
            f"--params-file {{params_file}} --bitrate {{bitrate_kbps}} --buffer {{buffer_ms}} "
            f"--telemetry {tx_tel}")
    agent = AgentProc(pair.a, tmp_path / "state", "--telemetry", str(tx_tel), "--stream-cmd",
                      send)
    try:
        yield {"port": pair.b, "tap": tap, "agent": agent, "rx": rx, "emu": emu}
    finally:
        agent.stop()
        pair.stop()
        emu.stop()
        rx.stop()


def host(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``host-calibrate ARGS`` in its own process."""
    return subprocess.run([PY, "-m", "host", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def calibrate(port: str, clip: Path, tap: Path, work: Path, collect_s: float = 16,
              measure_s: float = 20) -> dict:
    """The README's command sequence; returns the apply result and the strategy."""
    tel, strat, app = (str(work / n) for n in ("t.jsonl", "s.json", "a.json"))
    for args in (["stream", "start", port],
                 ["collect", port, "--duration", str(collect_s), "--sweep", "4", "--settle",
                  "1", "--pin", "protocol=udp", "-o", tel],
                 ["tune", tel, "-o", strat, "--pin", "protocol=udp", "--seed", "0"],
                 ["apply", port, strat, "--measure", str(measure_s), "--settle", "2",
                  "--reference", str(clip), "--tap", str(tap), "-o", app]):
        r = host(*args)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return {"apply": json.loads(Path(app).read_text()),
            "strategy": json.loads(Path(strat).read_text()),
            "telemetry": [json.loads(x) for x in Path(tel).read_text().splitlines()],
            "apply_stdout": r.stdout}


def test_calibration_from_the_command_line(shared_data, tmp_path):
    clip = shared_data / SPEECH
    with split_setup(tmp_path, clip) as dev:
        res = calibrate(dev["port"], clip, dev["tap"], tmp_path)
        r = host("stream", "stop", dev["port"])
        assert r.returncode == 0, r.stderr
        time.sleep(0.5)
        idle = host("collect", dev["port"], "--duration", "1", "-o", str(tmp_path / "x"))
        status = host("stream", "status", dev["port"], "--json")
        rx_alive = dev["rx"].proc.poll() is None  # a stopped stream does not end `receive`
        agent_log = dev["agent"].log.read_text()
    rx_log = dev["rx"].log.read_text()
    a, s = res["apply"], res["strategy"]
    tuned = s["params"]
    print(res["apply_stdout"])
    # collect kept only seconds with packets, under the 4 parameter sets it tried
    assert all(x["telemetry"]["bitrate_kbps"] > 0 for x in res["telemetry"])
    assert len({json.dumps(x["params"]) for x in res["telemetry"]}) == 4
    # default and tuned measured on the same link: tuned better on C and on PESQ-WB
    assert a["before"]["params"] == TransportParams().to_dict()
    assert a["after"]["params"] == tuned != a["before"]["params"]
    b, t = a["before"], a["after"]
    for m in (b, t):
        assert 2.0 < m["link"]["loss_pct"] < 10.0, m["link"]  # the emulator's 5 % was there
        assert 35.0 < m["link"]["latency_ms"] < 80.0, m["link"]
        assert m["link"]["idle_seconds"] == 0
    assert t["cost"] < b["cost"] and t["pesq_wb"] > b["pesq_wb"] and a["confirmed"], a
    # every tuned parameter reached the component that uses it: the receiver reports the
    # buffer bound it plays with, the bitrate on the wire follows the sender's setting
    assert b["link"]["buffer_ms"] == 200 and t["link"]["buffer_ms"] == tuned["buffer_ms"]
    assert t["link"]["bitrate_kbps"] == pytest.approx(tuned["bitrate_kbps"] * 0.95, rel=0.1)
    # parameter changes logged on both ends; the sender was never restarted
    assert f"buffer_ms 200 -> {tuned['buffer_ms']}" in rx_log
    assert "parameters: bitrate_kbps 64 -> " in agent_log
    assert f"send: parameters: bitrate_kbps 64 -> {tuned['bitrate_kbps']}" in agent_log
    assert "new stream" not in rx_log
    # a stopped stream is refused, not measured
    assert idle.returncode == 1 and "stream is not running" in idle.stderr, idle.stderr
    assert json.loads(status.stdout)["running"] is False and rx_alive
