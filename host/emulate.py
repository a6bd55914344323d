"""User-space link emulator (no kernel netem needed): a UDP or TCP relay that applies seeded
loss, delay, jitter, reordering and a rate limit to the forward direction and records exactly
what it did, as ground truth for the transport's telemetry.

Forward path (client -> ``listen`` -> emulator -> ``forward``): a bottleneck queue at ``rate``
(drop-tail beyond ``queue_ms`` of backlog), then propagation ``delay`` + uniform jitter in
[-jitter, +jitter] (never below zero), and with probability ``reorder`` an extra
``reorder_ms`` hold so the packet leaves after its successors. Loss is i.i.d. with probability
``loss``. The reverse path (the receiver's RTCP back channel) is relayed untouched.
On TCP there is no loss or reordering to emulate (TCP would retransmit): chunks are delayed,
jittered (order kept) and rate limited.

``LinkModel`` is the pure decision part (seeded, clock passed in); ``UdpEmulator`` and
``TcpEmulator`` are the sockets around it.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import os
import random
import re
import select
import socket
import statistics
import struct
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edge.errors import HushlinkError
from edge.outpaths import atomic_temp
from edge.transport.links import enable_rx_timestamps, recv_stamped

log = logging.getLogger(__name__)


class EmulatorError(HushlinkError):
    """Bad emulator settings or an address that cannot be used."""


@dataclass(frozen=True)
class Impairment:
    loss: float = 0.0  # probability 0..1
    delay_ms: float = 0.0
    jitter_ms: float = 0.0  # uniform in [-jitter, +jitter]
    reorder: float = 0.0  # probability 0..1 of an extra hold
    reorder_ms: float = 50.0
    rate_kbit: float = 0.0  # 0 = unlimited
    queue_ms: float = 200.0  # bottleneck backlog before drop-tail
    seed: int = 1

    def __post_init__(self) -> None:
        for k in ("loss", "reorder"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise EmulatorError(f"{k} must be between 0% and 100%")
        for k in ("delay_ms", "jitter_ms", "reorder_ms", "rate_kbit", "queue_ms"):
            if getattr(self, k) < 0:
                raise EmulatorError(f"{k} must not be negative")


# ---------------------------------------------------------------- unit parsing (CLI)
def parse_pct(s: str) -> float:
    """'5%', '5' (percent) or '0.05' -> 0.05."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*(%?)\s*", str(s))
    if not m or m.group(1).count(".") > 1:
        raise EmulatorError(f"{s!r}: expected a percentage like 5%")
    v = float(m.group(1))
    v = v / 100.0 if m.group(2) or v > 1.0 else v
    if v > 1.0:
        raise EmulatorError(f"{s!r}: a share of packets is at most 100%")
    return v


def parse_ms(s: str) -> float:
    """'40ms', '0.04s', '40us', '40' (ms) -> milliseconds."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*(ms|s|us)?\s*", str(s))
    if not m or m.group(1).count(".") > 1:
        raise EmulatorError(f"{s!r}: expected a duration like 40ms")
    return float(m.group(1)) * {"s": 1000.0, "us": 0.001}.get(m.group(2) or "ms", 1.0)


def parse_rate(s: str) -> float:
    """'300kbit', '1mbit', '64000bit', '300k', '300kbps' (kilobits) -> kbit/s."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*(k|m|g)?(bit|bps|b)?(/s)?\s*", str(s).lower())
    if not m or m.group(1).count(".") > 1:
        raise EmulatorError(f"{s!r}: expected a rate like 300kbit")
    scale = {"k": 1.0, "m": 1000.0, "g": 1e6, None: 0.001}[m.group(2)]
    return float(m.group(1)) * scale


# ---------------------------------------------------------------- pure decisions
def rtp_seq(data: bytes) -> int | None:
    """The RTP sequence number of a datagram that looks like RTP (not RTCP), else None."""
    if len(data) >= 12 and data[0] >> 6 == 2 and not 192 <= data[1] <= 223:
        return struct.unpack_from("!H", data, 2)[0]
    return None


class LinkModel:
    """Decides each packet's fate; counts what it decided. Times in seconds."""

    def __init__(self, imp: Impairment) -> None:
        self.imp = imp
        self.rng = random.Random(imp.seed)
        self._link_free = 0.0
        self._last_depart = 0.0
        self.counts = dict(packets_in=0, bytes_in=0, dropped_loss=0, dropped_queue=0,
                           forwarded=0, bytes_out=0, delayed=0, reorder_held=0, reordered=0)
        self.rtp = dict(packets_in=0, bytes_in=0, dropped=0, reordered=0, dropped_seqs=[])
        self._delays: list[float] = []  # applied delay of each forwarded packet, ms
        self._rtp_delays: list[float] = []  # the same for RTP packets only

    def decide(self, now: float, size: int, seq: int | None,
               keep_order: bool = False) -> float | None:
        """Departure time for a packet of ``size`` bytes arriving at ``now``, or None."""
        imp, c = self.imp, self.counts
        c["packets_in"] += 1
        c["bytes_in"] += size
        if seq is not None:
            self.rtp["packets_in"] += 1
            self.rtp["bytes_in"] += size
        # fixed order of draws: the same packets give the same fate for the same seed
        u_loss, u_jit, u_re = self.rng.random(), self.rng.random(), self.rng.random()
        if not keep_order and u_loss < imp.loss:
            return self._drop("dropped_loss", seq)
        start = now
        if imp.rate_kbit > 0:
            start = max(now, self._link_free)
            if start - now > imp.queue_ms / 1000.0:
                return self._drop("dropped_queue", seq)
            self._link_free = start + size * 8 / (imp.rate_kbit * 1000.0)
            start = self._link_free
        d = imp.delay_ms + imp.jitter_ms * (2 * u_jit - 1)
        if not keep_order and u_re < imp.reorder:
            d += imp.reorder_ms
            c["reorder_held"] += 1
        depart = start + max(d, 0.0) / 1000.0
        if keep_order:
            depart = max(depart, self._last_depart)
        self._last_depart = max(self._last_depart, depart)
        c["forwarded"] += 1
        c["bytes_out"] += size
        applied = (depart - now) * 1000.0
        self._delays.append(applied)
        if seq is not None:
            self._rtp_delays.append(applied)
        if applied > 0.05:
            c["delayed"] += 1
        return depart

    def _drop(self, why: str, seq: int | None) -> None:
        self.counts[why] += 1
        if seq is not None:
            self.rtp["dropped"] += 1
            self.rtp["dropped_seqs"].append(seq)
        return None

    def truth(self) -> dict:
        """What was done, exactly; jitter is RFC 3550's estimator over the applied delays."""
        c = self.counts
        rtp_in = self.rtp["packets_in"]
        return {
            "impairment": asdict(self.imp), **c,
            "loss_pct": 100.0 * (c["dropped_loss"] + c["dropped_queue"]) / c["packets_in"]
            if c["packets_in"] else 0.0,
            **_delay_stats(self._delays),
            "rtp": {**self.rtp, "loss_pct": 100.0 * self.rtp["dropped"] / rtp_in
                    if rtp_in else 0.0, **_delay_stats(self._rtp_delays)},
        }


def _delay_stats(d: list[float]) -> dict:
    j = 0.0
    for a, b in zip(d, d[1:], strict=False):
        j += (abs(b - a) - j) / 16.0
    return {"delay_ms_mean": sum(d) / len(d) if d else 0.0,
            "delay_ms_median": statistics.median(d) if d else 0.0,
            "delay_ms_min": min(d, default=0.0),
            "delay_ms_max": max(d, default=0.0), "jitter_rfc3550_ms": j}


# ---------------------------------------------------------------- sockets
def _addr(s: str) -> tuple[str, int]:
    host, sep, port = s.rpartition(":")
    if not sep or not port.isdigit():
        raise EmulatorError(f"{s!r}: expected ADDR:PORT")
    return host or "0.0.0.0", int(port)


class _Base:
    def __init__(self, listen: str, forward: str, imp: Impairment,
                 truth_path: str | os.PathLike | None = None) -> None:
        self.listen, self.forward = _addr(listen), _addr(forward)
        self.model = LinkModel(imp)
        self.truth_path = Path(truth_path) if truth_path else None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.back_packets = 0
        self.back_bytes = 0
        self.t0 = time.monotonic()

    def _spawn(self, fn, name: str) -> None:
        t = threading.Thread(target=fn, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _bind(self, kind: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(self.listen)
        except OSError as e:
            s.close()
            raise EmulatorError(f"cannot listen on {self.listen[0]}:{self.listen[1]}: "
                                f"{e.strerror}") from None
        self.listen = s.getsockname()[:2]
        return s

    def set_impairment(self, imp: Impairment) -> None:
        """Change the link's behaviour from the next packet on (the RNG stream continues)."""
        with self._lock:
            if imp.seed != self.model.imp.seed:  # each setting's own seeded loss pattern
                self.model.rng = random.Random(imp.seed)
            self.model.imp = imp

    def truth(self) -> dict:
        """The model's decisions; for UDP the delays are the ones really applied (kernel
        arrival stamp to sendto), the scheduled ones under ``scheduled``."""
        with self._lock:
            t = self.model.truth()
            sent = getattr(self, "_sent_delays", None)
            if sent:
                t["scheduled"] = {k: t[k] for k in _delay_stats([])}
                t["rtp"]["scheduled"] = {k: t["rtp"][k] for k in _delay_stats([])}
                t.update(_delay_stats(sent))
                t["rtp"].update(_delay_stats(self._sent_rtp))
        t.update(protocol=self.proto, listen=f"{self.listen[0]}:{self.listen[1]}",
                 forward=f"{self.forward[0]}:{self.forward[1]}",
                 seconds=time.monotonic() - self.t0, back_packets=self.back_packets,
                 back_bytes=self.back_bytes)
        return t

    def write_truth(self) -> None:
        if not self.truth_path:
            return
        fd, tmp = atomic_temp(self.truth_path)
        with os.fdopen(fd, "w") as fh:
            json.dump(self.truth(), fh, indent=1)
        os.replace(tmp, self.truth_path)

    def stop(self) -> dict:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2.0)
        self._close()
        self.write_truth()
        return self.truth()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class UdpEmulator(_Base):
    proto = "udp"

    def __init__(self, listen: str, forward: str, imp: Impairment,
                 truth_path: str | os.PathLike | None = None) -> None:
        super().__init__(listen, forward, imp, truth_path)
        self.a = self._bind(socket.SOCK_DGRAM)
        self.b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.b.bind(("0.0.0.0", 0))
        for s in (self.a, self.b):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        enable_rx_timestamps(self.a)
        self._sent_delays: list[float] = []  # arrival (kernel stamp) -> sendto, ms
        self._sent_rtp: list[float] = []
        self.client = None
        self._heap: list = []
        self._n = 0
        self._cv = threading.Condition(self._lock)
        self._emitted_max = self._rtp_max = -1
        self._spawn(self._rx_loop, "emu-rx")
        self._spawn(self._tx_loop, "emu-tx")

    def _rx_loop(self) -> None:
        while not self._stop.is_set():
            r, _, _ = select.select([self.a, self.b], [], [], 0.05)
            now = time.monotonic()
            for s in r:
                try:
                    data, src, arrived_ns = recv_stamped(s)
                except OSError:
                    continue
                if s is self.b:  # back channel: untouched
                    if self.client is not None:
                        with contextlib.suppress(OSError):
                            self.a.sendto(data, self.client)
                        self.back_packets += 1
                        self.back_bytes += len(data)
                    continue
                self.client = src
                seq = rtp_seq(data)
                with self._cv:
                    # the queue runs on the kernel's arrival time, not on when we got the CPU
                    now = time.monotonic() - (time.time_ns() - arrived_ns) / 1e9
                    depart = self.model.decide(now, len(data), seq)
                    if depart is not None:
                        heapq.heappush(self._heap, (depart, self._n, seq is not None, data,
                                                    arrived_ns))
                        self._cv.notify()
                    self._n += 1

    def _tx_loop(self) -> None:
        while not self._stop.is_set():
            with self._cv:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    wait = self._heap[0][0] - time.monotonic() if self._heap else 0.05
                    self._cv.wait(timeout=min(max(wait, 0.0), 0.05))
                    if self._stop.is_set():
                        return
                _, idx, is_rtp, data, arrived_ns = heapq.heappop(self._heap)
                if idx < self._emitted_max:  # leaves after a packet that arrived later
                    self.model.counts["reordered"] += 1
                self._emitted_max = max(self._emitted_max, idx)
                if is_rtp:
                    if idx < self._rtp_max:
                        self.model.rtp["reordered"] += 1
                    self._rtp_max = max(self._rtp_max, idx)
            try:
                self.b.sendto(data, self.forward)
                actual = (time.time_ns() - arrived_ns) / 1e6
                with self._lock:
                    self._sent_delays.append(actual)
                    if is_rtp:
                        self._sent_rtp.append(actual)
            except OSError as e:  # receiver not there (ICMP unreachable): counted, not fatal
                log.debug("emulate: forward failed: %s", e)
                with self._lock:
                    self.model.counts.setdefault("forward_errors", 0)
                    self.model.counts["forward_errors"] += 1

    def _close(self) -> None:
        self.a.close()
        self.b.close()


class TcpEmulator(_Base):
    """One TCP connection at a time; each accepted client gets its own upstream connection."""

    proto = "tcp"

    def __init__(self, listen: str, forward: str, imp: Impairment,
                 truth_path: str | os.PathLike | None = None) -> None:
        super().__init__(listen, forward, imp, truth_path)
        self.srv = self._bind(socket.SOCK_STREAM)
        self.srv.listen(4)
        self.srv.settimeout(0.1)
        self.connections = 0
        self._spawn(self._accept_loop, "emu-accept")

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                c, _ = self.srv.accept()
            except (TimeoutError, OSError):
                continue
            try:
                up = socket.create_connection(self.forward, timeout=1.0)
            except OSError as e:
                log.warning("emulate: cannot reach %s:%d: %s", *self.forward, e)
                c.close()
                continue
            self.connections += 1
            for s in (c, up):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._spawn(lambda c=c, up=up: self._pipe(c, up), "emu-pipe")

    def _pipe(self, c: socket.socket, up: socket.socket) -> None:
        queue: list = []  # (depart, data), already in order
        c.setblocking(False)
        up.setblocking(False)
        eof = half_closed = False  # client finished: deliver what is in flight, half-close
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                while queue and queue[0][0] <= now:
                    up.sendall(queue.pop(0)[1])
                if eof and not queue and not half_closed:
                    up.shutdown(socket.SHUT_WR)
                    half_closed = True
                wait = min(0.05, max(queue[0][0] - now, 0.0)) if queue else 0.05
                r, _, _ = select.select([up] if eof else [c, up], [], [], wait)
                if c in r:
                    data = c.recv(65536)
                    if not data:
                        eof = True
                        continue
                    with self._lock:
                        depart = self.model.decide(time.monotonic(), len(data), None,
                                                   keep_order=True)
                    queue.append((depart, data))
                if up in r:
                    data = up.recv(65536)
                    if not data:
                        break
                    c.sendall(data)
                    self.back_bytes += len(data)
        except OSError as e:
            log.info("emulate: tcp connection ended: %s", e)
        finally:
            for s in (c, up):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def _close(self) -> None:
        self.srv.close()


def start_emulator(protocol: str, listen: str, forward: str, imp: Impairment,
                   truth_path: str | os.PathLike | None = None) -> UdpEmulator | TcpEmulator:
    cls = UdpEmulator if protocol == "udp" else TcpEmulator
    return cls(listen, forward, imp, truth_path)


# ---------------------------------------------------------------- command line
def _cli():
    import click

    from edge.cliutil import Number

    @click.command("emulate")
    @click.option("--listen", required=True, metavar="ADDR:PORT",
                  help="Where the sender sends to.")
    @click.option("--forward", required=True, metavar="ADDR:PORT",
                  help="The receiver's address.")
    @click.option("--protocol", type=click.Choice(["udp", "tcp"]), default="udp",
                  show_default=True)
    @click.option("--loss", default="0%", show_default=True, help="Random loss, e.g. 5%.")
    @click.option("--delay", default="0ms", show_default=True, help="One-way delay, e.g. 40ms.")
    @click.option("--jitter", default="0ms", show_default=True,
                  help="Uniform delay variation +-, e.g. 10ms.")
    @click.option("--reorder", default="0%", show_default=True,
                  help="Share of packets held back by --reorder-delay, e.g. 1%.")
    @click.option("--reorder-delay", default="50ms", show_default=True)
    @click.option("--rate", default="0", show_default=True,
                  help="Bottleneck rate, e.g. 300kbit (0 = unlimited).")
    @click.option("--queue", default="200ms", show_default=True,
                  help="Bottleneck backlog before drop-tail.")
    @click.option("--seed", default=1, show_default=True, type=int)
    @click.option("--truth", type=click.Path(dir_okay=False),
                  help="Write what was dropped/delayed/reordered here (JSON).")
    @click.option("--duration", type=Number(float, lo=0.0, lo_open=True), default=None,
                  help="Stop after this many seconds (default: Ctrl-C).")
    def emulate_cmd(listen, forward, protocol, loss, delay, jitter, reorder, reorder_delay,
                    rate, queue, seed, truth, duration):
        """Relay UDP/TCP with seeded loss, delay, jitter, reordering and rate limits."""
        import signal

        from edge.cliutil import err_console

        imp = Impairment(loss=parse_pct(loss), delay_ms=parse_ms(delay),
                         jitter_ms=parse_ms(jitter), reorder=parse_pct(reorder),
                         reorder_ms=parse_ms(reorder_delay), rate_kbit=parse_rate(rate),
                         queue_ms=parse_ms(queue), seed=seed)
        if truth and not Path(truth).resolve().parent.is_dir():
            raise EmulatorError(f"{Path(truth).parent}: output directory does not exist")
        emu = start_emulator(protocol, listen, forward, imp, truth)
        err_console.print(f"emulating {protocol}://{emu.listen[0]}:{emu.listen[1]} -> "
                          f"{forward}: {imp}")
        stop = threading.Event()
        old = signal.signal(signal.SIGTERM, lambda *a: stop.set())
        try:
            stop.wait(duration)
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, old)
            t = emu.stop()
        t["rtp"].pop("dropped_seqs", None)
        click.echo(json.dumps(t))

    return emulate_cmd


emulate_cmd = _cli()
