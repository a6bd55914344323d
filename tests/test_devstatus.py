"""The device side of the dashboard: ``live --state-dir`` follows the parameters the serial
agent applies (STATE/params.json) on its running sender, and the agent's ``get_status``
reports the live loop (denoiser on/off, CPU per hop, transport in force) and the clock."""

from __future__ import annotations

import threading
import time

import numpy as np

from edge.agent import HANDLERS, Agent
from edge.params import TransportParams


class _Sender:
    """Stands in for the network sender: records what the follower hands it."""

    def __init__(self):
        self.params = TransportParams(protocol="udp")
        self.updates: list[TransportParams] = []

    def update(self, params: TransportParams) -> None:
        self.params = params
        self.updates.append(params)


def _wait(pred, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_live_follows_the_agents_applied_params_and_get_status_reports_them(tmp_path,
                                                                             monkeypatch):
    from edge.denoise import Denoiser
    from edge.live import LiveLoop, LoopConfig
    from edge.liveslot import SlotFollower, read_status, resolve
    from edge.model import StepModel
    from edge.profile import DeviceProfile
    from edge.sinks import NullSink
    from edge.sources import FileSource

    monkeypatch.setenv("HUSHLINK_RUN_DIR", str(tmp_path / "run"))  # no clock instance there
    root = tmp_path / "state"
    agent = Agent("loop://", state_dir=root, log=lambda msg: None)
    am = resolve(root)
    model = StepModel(am.path)
    noise = (0.1 * np.random.default_rng(1).standard_normal(16_000)).astype(np.float32)
    loop = LiveLoop(FileSource(noise, 16_000, 160, loop=True), Denoiser(model), [NullSink()],
                    LoopConfig(queue_blocks=1024))
    loop.model_info = am.info(model.metadata.name, model.metadata.version)
    sender = _Sender()
    follower = SlotFollower(root, loop, am, profile=DeviceProfile.by_name("generic-linux"),
                            senders=[sender], transport_base=sender.params,
                            log=lambda msg: None)
    worker = threading.Thread(target=loop.run, args=(lambda lp: follower.poll(), 0.1))
    worker.start()
    try:
        HANDLERS["set_params"].fn(agent, {"params": {"bitrate_kbps": 96, "buffer_ms": 150}})
        HANDLERS["apply"].fn(agent, {"timeout_s": 30.0})
        _wait(lambda: sender.params.bitrate_kbps == 96)
        assert sender.params.buffer_ms == 150 and sender.params.protocol == "udp"
        st = _wait(lambda: (read_status(root) or {}).get("transport", {}).get(
            "bitrate_kbps") == 96 and read_status(root))
        assert st["bypass"] is False
        loop.toggle_bypass()
        got = _wait(lambda: (lambda s: s if s["live"]["bypass"] else None)(
            HANDLERS["get_status"].fn(agent, {})))
        assert got["clock"] == []  # no `edge-denoise clock` in this run directory
        live = got["live"]
        assert live["running"] and live["transport"]["bitrate_kbps"] == 96
        assert live["hop_cpu_ms"]["p99"] > 0 and live["source"] == "packaged"
        HANDLERS["revert"].fn(agent, {})  # the trial's end: the sender goes back
        _wait(lambda: sender.params.bitrate_kbps == 64)
    finally:
        loop.stop()
        worker.join(10)
        follower.close()
        agent.stop()
    assert read_status(root)["running"] is False
