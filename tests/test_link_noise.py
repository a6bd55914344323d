"""The serial link through a byte-corrupting relay (issue 18 item 9): sessions start, mixed
sizes up to 4 KiB get through in few rounds, nothing corrupt is accepted, and "wrong baud
rate" is said only when the bytes look like another baud rate."""

from __future__ import annotations

import os
import random
import threading

import pytest
import serial
from click.testing import CliRunner
from test_link_util import AgentProc, PtyPair, Relay, uart_resample

from edge import protocol as P
from host.link import NoAnswer, connect

BAUDS = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, 1_000_000, 1_500_000,
         3_000_000)


@pytest.fixture
def relayed(tmp_path):
    """host end, device pty pair with an agent, and a function that starts a relay."""
    tag = f"n{os.getpid()}"
    host_side, dev_side = PtyPair(tmp_path, tag + "h"), PtyPair(tmp_path, tag + "d")
    agent = AgentProc(dev_side.a, tmp_path / "state")
    relays: list[Relay] = []

    def relay(rate: float, seed: int) -> Relay:
        for r in relays:
            r.stop()
        relays.append(Relay(host_side.a, dev_side.b, rate, seed=seed))
        return relays[-1]

    yield host_side.b, relay, agent
    for r in relays:
        r.stop()
    agent.stop()
    host_side.stop()
    dev_side.stop()


@pytest.mark.slow
@pytest.mark.parametrize("rate, need", [(0.01, 10), (0.05, 9)])
def test_probe_through_corrupting_relay(relayed, rate, need):
    """`host-calibrate probe` through a relay that flips, drops or inserts `rate` of all bytes
    each way: 10 fresh links (a new relay each), as the issue measured. Before: 6/10 at 1 %,
    0/10 at 5 % (the 466-byte hello reply whole, and the error blamed the baud rate)."""
    from host.cli import cli

    port, relay, agent = relayed
    results = []
    for i in range(10):
        relay(rate, seed=100 + i)
        r = CliRunner().invoke(cli, ["probe", port, "--json"])
        results.append(r.exit_code == 0 and '"device_id"' in r.output)
        assert "wrong baud" not in r.output
    assert sum(results) >= need, results
    assert agent.alive()


@pytest.mark.slow
def test_mixed_size_exchanges_at_one_percent(relayed):
    """1,000 echo exchanges of 1 B - 4 KiB payloads (log-uniform) at 1 % byte corruption: none
    accepted corrupt, every one answered, p99 of rounds (resends + NEEDs) <= 3. The 10^4 run
    of the issue's target is `benchmarks/serial_noise.py` (about 2.5 min, too long for CI).
    Before: a 4 KiB frame arrived intact about once in 10^18 tries."""
    port, relay, agent = relayed
    relay_proc = relay(0.01, seed=5)
    rng = random.Random(3)
    rounds = []
    with connect(port, timeout=0.2, retries=20) as dev:
        for i in range(1000):
            payload = {"i": i, "d": rng.randbytes(int(2 ** rng.uniform(0, 12)))}
            assert dev.call("echo", payload) == payload
            rounds.append(dev.rpc.last_retries)
    rounds.sort()
    hits = dict(kv.split("=") for kv in relay_proc.stop().split())
    assert int(hits["flip"]) + int(hits["drop"]) + int(hits["insert"]) > 5000  # it happened
    assert rounds[int(0.99 * len(rounds))] <= 3, rounds[-20:]
    assert agent.alive()


def _talker(port: str, answer) -> tuple[threading.Event, threading.Thread]:
    """Something on the other end that answers each burst it reads with ``answer()``."""
    noisy = serial.Serial(port, timeout=0.02)
    stop = threading.Event()

    def run():
        with noisy:
            while not stop.is_set():
                if noisy.read(64):
                    noisy.write(answer())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return stop, t


@pytest.mark.parametrize("case", ["other_baud", "random", "text"])
def test_wrong_baud_only_when_bytes_look_like_another_baud(tmp_path, case):
    """Real hushlink replies sent at 115200 baud and read at 921600 (what a wrong --baud
    does; a pty ignores baud, so uart_resample makes the bytes) -> "wrong baud rate?";
    random bytes or text -> "not hushlink frames" without blaming the baud rate.
    Before: any garbage was blamed on the baud rate."""
    rng = random.Random(1)
    reply = b"".join(P.response_ok(rng.randrange(2**32), {"x": rng.randbytes(40)})
                     for _ in range(4))
    answer = {"other_baud": lambda: uart_resample(reply, 115200, 921600),
              "random": lambda: rng.randbytes(600),
              "text": lambda: b"Debian GNU/Linux 12 hushbox ttyGS0\r\n\r\nhushbox login: "}[case]
    pair = PtyPair(tmp_path, f"w{os.getpid()}")
    stop, t = _talker(pair.a, answer)
    try:
        with pytest.raises(NoAnswer) as e:
            connect(pair.b, timeout=0.1, retries=1)
    finally:
        stop.set()
        t.join(2)
        pair.stop()
    msg = str(e.value)
    if case == "other_baud":
        assert "wrong baud rate?" in msg
    else:
        assert "wrong baud" not in msg and ("not hushlink frames" in msg), msg
        assert case != "text" or "text" in msg


def test_describe_noise_across_baud_pairs():
    """The classifier itself, on every pair of common rates (device 115200 or 921600, host at
    another), random noise, our own frames with 0.5 % of bytes flipped, and text."""
    rng = random.Random(2)
    frames = b"".join(P.response_ok(i, {"i": i, "d": rng.randbytes(rng.randrange(1, 400))})
                      for i in range(20))

    def describe(data: bytes) -> str:
        dec = P.FrameDecoder()
        dec.feed(data)
        return P.describe_noise(data[:4096], dec.stats, len(data))

    for tx in (115200, 921600):
        for rx in BAUDS:
            if rx != tx:
                assert "wrong baud rate?" in describe(uart_resample(frames, tx, rx)), (tx, rx)
    assert "wrong baud" not in describe(rng.randbytes(5000))
    damaged = bytearray(frames)
    for i in rng.sample(range(len(damaged)), len(damaged) // 200):
        damaged[i] ^= rng.randrange(1, 256)
    assert "noisy" in describe(bytes(damaged))
    assert "text" in describe(b"U-Boot 2024.01 (Jan 01 2024)\r\nHit any key to stop autoboot")
