"""Real serial plumbing for the link tests: socat pty pairs, the agent in a subprocess, and a
corrupting relay. Run as a script (``python test_link_util.py relay A B RATE SEED``) it is the
relay process."""

from __future__ import annotations

import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time
import tty
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def _wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for {what}")


class PtyPair:
    """``socat`` joining two ptys, reachable as symlinks ``a`` and ``b``."""

    def __init__(self, directory: Path, tag: str):
        self.a = str(directory / f"{tag}-a")
        self.b = str(directory / f"{tag}-b")
        self.proc = None
        self.start()

    def start(self) -> None:
        if shutil.which("socat") is None:
            if os.environ.get("CI") == "true":
                pytest.fail("socat is not installed (scripts/bootstrap-system installs it)")
            pytest.skip("socat is not installed (apt-get install socat)")
        self.proc = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={self.a}", f"pty,raw,echo=0,link={self.b}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for(lambda: os.path.exists(self.a) and os.path.exists(self.b), 5, "socat ptys")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        _wait_for(lambda: not os.path.exists(self.a), 5, "socat cleanup")


class AgentProc:
    """``edge-denoise serve`` in a subprocess on ``port``."""

    def __init__(self, port: str, state_dir: Path, *extra: str, env: dict | None = None):
        self.log = state_dir.parent / f"agent-{os.getpid()}-{id(self)}.log"
        self._logf = self.log.open("wb")
        self.proc = subprocess.Popen(
            [PY, "-m", "edge", "serve", "--port", port, "--state-dir", str(state_dir), *extra],
            cwd=ROOT, stdout=self._logf, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})})
        _wait_for(lambda: b"listening" in self.log.read_bytes() or self.proc.poll() is not None,
                  20, "agent start")
        assert self.proc.poll() is None, self.log.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._logf.close()


class Relay:
    """A relay process between pty ends ``x`` and ``y`` that flips, drops and inserts bytes,
    each byte hit with probability ``rate`` (a third each), seeded."""

    def __init__(self, x: str, y: str, rate: float, seed: int):
        self.proc = subprocess.Popen([PY, __file__, "relay", x, y, str(rate), str(seed)],
                                     stdout=subprocess.PIPE, text=True)
        # wait until both ends are open and raw: setting raw mode flushes what has arrived
        assert self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=10)
        return out


def _corrupt(data: bytes, rng: random.Random, rate: float, counts: dict) -> bytes:
    out = bytearray()
    for b in data:
        if rng.random() >= rate:
            out.append(b)
            continue
        op = rng.randrange(3)
        if op == 0:
            out.append(b ^ rng.randrange(1, 256))
            counts["flip"] += 1
        elif op == 1:
            counts["drop"] += 1
        else:
            out += bytes([rng.randrange(256), b])
            counts["insert"] += 1
    return bytes(out)


def _relay_main(x: str, y: str, rate: float, seed: int) -> None:
    rng = random.Random(seed)
    fx, fy = os.open(x, os.O_RDWR | os.O_NOCTTY), os.open(y, os.O_RDWR | os.O_NOCTTY)
    for fd in (fx, fy):
        tty.setraw(fd)
    counts = {"flip": 0, "drop": 0, "insert": 0, "bytes": 0}
    print("ready", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    peer = {fx: fy, fy: fx}
    while not stop:
        try:
            ready, _, _ = select.select([fx, fy], [], [], 0.1)
        except InterruptedError:
            continue
        for fd in ready:
            data = os.read(fd, 65536)
            counts["bytes"] += len(data)
            os.write(peer[fd], _corrupt(data, rng, rate, counts))
    print(" ".join(f"{k}={v}" for k, v in counts.items()), flush=True)


def uart_resample(data: bytes, tx_baud: int, rx_baud: int) -> bytes:
    """What a UART set to ``rx_baud`` reads when ``data`` is sent back to back at ``tx_baud``
    (8N1, LSB first): start on a falling edge, confirm it half a bit later, sample mid-bit; a
    low stop bit is a framing error, which Linux (termios without IGNPAR/PARMRK) reads as 0x00.
    A pty ignores the baud rate, so tests use this to make real wrong-baud bytes."""
    import bisect

    bits = [1]
    for b in data:
        bits += [0, *((b >> i) & 1 for i in range(8)), 1]
    bits.append(1)
    ttx, trx = 1.0 / tx_baud, 1.0 / rx_baud
    falls = [i * ttx for i in range(1, len(bits)) if bits[i - 1] == 1 and bits[i] == 0]

    def level(t: float) -> int:
        i = int(t / ttx)
        return bits[i] if i < len(bits) else 1

    out = bytearray()
    t = 0.0
    while True:
        j = bisect.bisect_left(falls, t)
        if j == len(falls):
            return bytes(out)
        t0 = falls[j]
        if level(t0 + trx / 2) != 0:  # a glitch, not a start bit
            t = t0 + trx / 2
            continue
        byte = sum(level(t0 + (1.5 + i) * trx) << i for i in range(8))
        out.append(byte if level(t0 + 9.5 * trx) == 1 else 0)
        t = t0 + 9.5 * trx


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "relay":
    _relay_main(sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5]))
