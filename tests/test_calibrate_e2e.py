"""End to end on an impaired link: the real RTP/Opus sender and receiver (edge.transport)
through the user-space link emulator (8% loss, 60 ms ± 20 ms), the receiver's telemetry
served by a real agent over a socat pty pair, and host-calibrate collect → tune → apply on
the other end. `apply` must judge the strategy on C measured live (not as predicted): the
buffer term is the receiver's playout delay, so a smaller bound that the adaptive buffer never
used gains nothing; it confirms exactly when the measured C did not get worse. (Tuned beating
default on the real link, separate processes and PESQ: tests/test_calibrate_split.py.)"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_link_util import PtyPair

from edge.agent import Agent
from edge.params import TransportParams
from host.cli import cli


class _LogTelemetry:
    """The receiver's in-process TelemetryLog as the agent's telemetry source."""

    def __init__(self, log):
        self.log = log

    def records(self) -> list[dict]:
        return [t.to_dict() for t in self.log.window(1e9)]


def _speechlike(seconds: float = 4.0) -> np.ndarray:
    t = np.arange(int(16_000 * seconds)) / 16_000
    env = (np.sin(2 * np.pi * 3 * t) > -0.2).astype(np.float32)  # syllable-like bursts
    x = 0.2 * env * (np.sin(2 * np.pi * 220 * t) + 0.5 * np.sin(2 * np.pi * 660 * t))
    return (x + 0.003 * np.random.default_rng(0).standard_normal(len(t))).astype(np.float32)


@contextlib.contextmanager
def real_link_device(tmp_path: Path, loss: float = 0.08, delay_ms: float = 60,
                     jitter_ms: float = 20):
    """A device streaming over the real transport through the emulator, its agent on a pty;
    yields the host's end of the pty."""
    from edge.transport.receiver import Receiver
    from edge.transport.sender import Sender, send_file
    from edge.transport.telemetry import TelemetryLog
    from host.emulate import Impairment, UdpEmulator

    log = TelemetryLog()
    rx = Receiver("127.0.0.1:0", TransportParams(), keep_audio=False, telemetry=log)
    emu = UdpEmulator("127.0.0.1:0", f"127.0.0.1:{rx.port}",
                      Impairment(loss=loss, delay_ms=delay_ms, jitter_ms=jitter_ms, seed=8))
    tx = Sender(f"udp://127.0.0.1:{emu.listen[1]}", TransportParams())
    stop = threading.Event()
    audio = _speechlike()

    def stream():
        while not stop.is_set():
            send_file(audio, tx)

    th = threading.Thread(target=stream, daemon=True)
    th.start()
    pair = PtyPair(tmp_path, f"e{os.getpid()}")
    agent = Agent(pair.a, state_dir=tmp_path / "state", telemetry=_LogTelemetry(log),
                  log=lambda msg: None)
    agent.param_listeners += [tx.update, rx.update]
    ath = threading.Thread(target=agent.serve_forever, daemon=True)
    ath.start()
    try:
        yield pair.b
    finally:
        agent.stop()
        ath.join(5)
        stop.set()
        th.join(10)
        tx.close()
        emu.stop()
        rx.close()
        pair.stop()


@pytest.fixture
def device(tmp_path):
    with real_link_device(tmp_path) as url:
        yield url


@pytest.mark.slow
def test_apply_judges_the_strategy_on_the_live_link(device, tmp_path):
    run = CliRunner().invoke
    tel, strat, app = (str(tmp_path / n) for n in ("t.jsonl", "s.json", "a.json"))
    r = run(cli, ["collect", device, "--duration", "20", "--sweep", "4", "--settle", "1.5",
                  "--pin", "protocol=udp", "-o", tel])
    assert r.exit_code == 0, r.output
    r = run(cli, ["tune", tel, "-o", strat, "--pin", "protocol=udp", "--seed", "0"])
    assert r.exit_code == 0, r.output
    s = json.loads(Path(strat).read_text())
    assert s["params"] != TransportParams().to_dict()
    r = run(cli, ["apply", device, strat, "--measure", "8", "--settle", "2", "-o", app])
    assert r.exit_code == 0, r.output
    res = json.loads(Path(app).read_text())
    assert res["before"]["params"] == TransportParams().to_dict()  # sweep restored defaults
    assert res["after"]["params"] == s["params"]
    loss = np.mean([t["loss_pct"] for t in res["after"]["telemetry"]])
    assert 3 < loss < 15  # the emulator's 8% loss was really there
    print(f"live C default {res['before']['cost']:.4f} -> tuned {res['after']['cost']:.4f} "
          f"({s['params']})")
    assert res["after"]["link"]["buffer_ms"] == s["params"]["buffer_ms"]  # reached the receiver
    assert res["confirmed"] == (res["after"]["cost"] <= res["before"]["cost"])
