"""RTP/Opus receiver: socket -> jitter buffer -> Opus decoder (FEC/PLC) -> audio out, and
per-second telemetry to a JSON-lines log and back to the sender: an RFC 3550 compound RTCP
packet with a Receiver Report (fraction and cumulative loss, extended highest sequence number,
jitter, LSR/DLSR for the sender's round trip) and an APP packet with the full record.

Two threads: the network thread only parses and queues packets into the jitter buffer; the
playout thread wakes every 5 ms, decodes the frames that are due and hands them to
``on_audio`` (a device, a file, a callback). With ``playout="ptp"`` the adaptive jitter buffer
gives way to ``edge.transport.playout.PtpPlayout``: each frame plays at its RTP (media clock)
timestamp plus ``link_offset_ms`` on this host's PTP clock, and the recording is laid out by
those times, so every receiver of the stream plays and records it sample-aligned.
Bad input (malformed RTP, a wrong payload type, oversized datagrams, a foreign SSRC or source
address, stray sequence numbers, a vanished peer) is logged, counted and dropped; which
packets belong to the stream, and their numbering, is decided by
``edge.transport.seqstate.SeqTracker``.
With an SRTP key, a packet that does not authenticate is dropped and counted
(``srtp_errors``) before anything reads it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable

import numpy as np

from edge.params import ParamsError, TransportParams
from edge.transport import rtcp, rtp
from edge.transport.capacity import CapacityMeter, estimate_kbps
from edge.transport.codec import FRAME_MS, RATE, OpusDecoder, codec_delay
from edge.transport.jitter import JitterBuffer
from edge.transport.links import (
    TransportError,
    bind_error,
    enable_rx_timestamps,
    parse_hostport,
    recv_stamped,
)
from edge.transport.playout import PtpPlayout, TimedTrack
from edge.transport.sender import system_clock_ns
from edge.transport.seqstate import SeqTracker
from edge.transport.telemetry import TelemetryLog, TelemetryMeter

log = logging.getLogger(__name__)
TICK_S = 0.005
RECEIVER_PARAMS = ("buffer_ms", "fec", "protocol")  # what the receiver takes from APP_PARAMS
SSRC_TAKEOVER_S = 1.0  # another SSRC may take over after the current one was silent this long
PLAYOUTS = ("adaptive", "ptp")


class Receiver:
    """Listens on ``listen`` ('ADDR:PORT' or (addr, port)) for one RTP/Opus stream; with
    ``peer`` ('ADDR:PORT', port 0 for any) only from that address, else from the first source
    that sends a valid stream. ``playout``: 'adaptive' (jitter buffer anchored on arrivals)
    or 'ptp' (capture time + ``link_offset_ms`` on ``clock``, the PTP-disciplined clock).
    Audio comes out at ``rate`` with ``channels`` (Opus decodes any stream to any of them);
    ``pt`` is the payload type to accept; ``srtp_key`` (30 bytes) expects SRTP/SRTCP;
    ``rtcp_port`` also listens for RTCP there (a sender without RFC 5761 mux, such as
    GStreamer's rtpbin: RTP port + 1)."""

    def __init__(self, listen: str | tuple[str, int], params: TransportParams | None = None,
                 on_audio: Callable[[np.ndarray], None] | None = None, keep_audio: bool = True,
                 clock: Callable[[], int] = system_clock_ns,
                 telemetry: TelemetryLog | None = None, interval_s: float = 1.0,
                 on_frame: Callable[[int, int, np.ndarray], None] | None = None,
                 peer: str | None = None, playout: str = "adaptive",
                 link_offset_ms: float = 100.0, realtime_priority: int = 0, rate: int = RATE,
                 channels: int = 1, pt: int = rtp.OPUS_PT, srtp_key: bytes | None = None,
                 rtcp_port: int | None = None) -> None:
        self.addr = parse_hostport(listen) if isinstance(listen, str) else tuple(listen)
        self.params = params or TransportParams()
        self.clock = clock
        self.on_audio = on_audio
        self.on_frame = on_frame  # (extended seq, playout time ns, samples), for measurements
        self.keep_audio = keep_audio
        self.telemetry = telemetry if telemetry is not None else TelemetryLog()
        self.interval_s = interval_s
        if playout not in PLAYOUTS:
            raise ValueError(f"playout must be one of {PLAYOUTS}, not {playout!r}")
        if playout == "ptp" and (rate, channels) != (RATE, 1):
            raise TransportError("PTP playout is 16 kHz mono for now; drop --rate/--channels")
        self.playout = playout
        self.jb = (PtpPlayout(link_offset_ms, fec=self.params.fec, delay_samples=codec_delay())
                   if playout == "ptp" else JitterBuffer(self.params.buffer_ms,
                                                         fec=self.params.fec))
        self.track = TimedTrack()  # PTP playout: the recording, by play time
        self.missed = 0  # PTP playout: frames decoded after their play time (silence instead)
        self.realtime_priority = realtime_priority
        self.meter = TelemetryMeter()
        self.capacity = CapacityMeter()  # the link's capacity from the sender's probe trains
        self.dec = OpusDecoder(rate, channels)
        self.rate, self.channels, self.pt, self.frame = rate, channels, pt, self.dec.frame
        self._srtp = None
        if srtp_key is not None:
            from edge.transport.srtp import SrtpSession

            self._srtp = SrtpSession(srtp_key)
        self.rtcp_port = rtcp_port
        self.own_ssrc = int.from_bytes(os.urandom(4), "big")  # ours, for the RR
        self._last_sr: tuple[int, int] | None = None  # (LSR, arrival ns) of the stream's SR
        self.sender_cname = ""
        self._frames: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.done = threading.Event()  # set when the sender's BYE was played out
        self.tracker = SeqTracker(FRAME_MS / 1000, SSRC_TAKEOVER_S,
                                  _resolve(parse_hostport(peer)) if peer else None)
        self._peer = None  # where the back channel goes: UDP address or TCP connection
        self.allocated_kbps = float(self.params.bitrate_kbps)
        self.counts = dict(malformed=0, wrong_pt=0, oversized=0, rtcp=0,
                           bye=0, decode_errors=0, connections=0, disconnects=0,
                           back_errors=0, duplicates_net=0, param_changes=0, srtp_errors=0,
                           srtp_replayed=0, probes=0)
        self.param_log: list[dict] = []  # parameter changes signalled by the sender
        self._announced: dict | None = None  # the sender's last announcement (APP_PARAMS)
        self._sel = selectors.DefaultSelector()
        self._kernel_ts = False
        self._socks: list[socket.socket] = []
        self._conn: socket.socket | None = None
        self._deframer = rtp.Deframer()
        self._bind(self.params.protocol)
        self._threads = [threading.Thread(target=self._net_loop, name="rtp-rx", daemon=True),
                         threading.Thread(target=self._play_loop, name="playout", daemon=True)]
        for t in self._threads:
            t.start()

    # sockets -----------------------------------------------------------------------
    def _bind(self, proto: str) -> None:
        kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
        s = socket.socket(socket.AF_INET, kind)
        if proto == "tcp":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(self.addr)
            if proto == "tcp":
                s.listen(2)
        except OSError as e:
            s.close()
            raise bind_error(self.addr, proto, e) from None
        if proto == "udp":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            # kernel arrival stamps share the default clock (CLOCK_REALTIME) only
            self._kernel_ts = self.clock is system_clock_ns and enable_rx_timestamps(s)
        s.setblocking(False)
        self.addr = s.getsockname()[:2]
        self.proto = proto
        self._socks.append(s)
        self._sel.register(s, selectors.EVENT_READ, "listen" if proto == "tcp" else "udp")
        if proto == "udp" and self.rtcp_port:
            r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                r.bind((self.addr[0], self.rtcp_port))
            except OSError as e:  # RTCP is optional: the stream plays without it
                r.close()
                log.warning("receive: cannot listen for RTCP on port %d (%s)", self.rtcp_port,
                            e.strerror or e)
                return
            r.setblocking(False)
            self._socks.append(r)
            self._sel.register(r, selectors.EVENT_READ, "rtcp")

    def _unbind(self) -> None:
        for s in [*self._socks, *([self._conn] if self._conn else [])]:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(s)
            s.close()
        self._socks, self._conn, self._peer = [], None, None

    @property
    def port(self) -> int:
        return self.addr[1]

    def update(self, params: TransportParams) -> None:
        """Buffer bound and FEC at once; a protocol change re-binds the same port."""
        with self._lock:
            old, self.params = self.params, params
            self.jb.set_bound(params.buffer_ms)
            self.jb.fec = params.fec
            if params.protocol != old.protocol:
                self._unbind()
                self._bind(params.protocol)
                self.tracker.relock()

    # network thread ------------------------------------------------------------------
    def _tune_thread(self) -> None:
        if self.realtime_priority > 0:
            set_realtime(self.realtime_priority)

    def _net_loop(self) -> None:
        self._tune_thread()
        while not self._stop.is_set():
            try:
                events = self._sel.select(timeout=0.05)
            except (OSError, ValueError):  # a socket closed under us by update()
                time.sleep(0.01)
                continue
            for key, _ in events:
                try:
                    self._ready(key.fileobj, key.data)
                except OSError as e:
                    if not self._stop.is_set():
                        log.debug("receive: %s", e)

    def _ready(self, sock: socket.socket, what: str) -> None:
        if what in ("udp", "rtcp"):
            for _ in range(64):
                try:
                    if self._kernel_ts:
                        data, src, t_ns = recv_stamped(sock)
                    else:
                        (data, src), t_ns = sock.recvfrom(65536), self.clock()
                except (BlockingIOError, InterruptedError):
                    return
                except ConnectionRefusedError:
                    continue
                if what == "rtcp":  # RTCP from the stream's host comes from another port
                    key = self.tracker.key
                    if not rtp.is_rtcp(data):
                        continue
                    if key is not None and key[1] is not None and key[1][0] == src[0]:
                        src = key[1]
                self._on_datagram(data, t_ns, src)
        elif what == "listen":
            conn, src = sock.accept()
            if not self.tracker.from_peer(src):
                conn.close()
                with self._lock:
                    self.tracker.foreign_source += 1
                log.warning("receive: refused a tcp connection from %s:%d", *src[:2])
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._conn is not None:  # a new connection replaces the old one
                    self._sel.unregister(self._conn)
                    self._conn.close()
                self._conn, self._peer = conn, conn
                self._deframer = rtp.Deframer()
                self.counts["connections"] += 1
            self._sel.register(conn, selectors.EVENT_READ, "conn")
            log.info("receive: tcp connection from %s:%d", *src[:2])
        else:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                with self._lock:
                    self._sel.unregister(sock)
                    sock.close()
                    if self._conn is sock:
                        self._conn = self._peer = None
                    self.counts["disconnects"] += 1
                log.warning("receive: the sender closed its tcp connection")
                return
            now = self.clock()
            for frame in self._deframer.feed(data):
                self._on_datagram(frame, now, None)
            self.counts["oversized"] += self._deframer.oversized
            self._deframer.oversized = 0

    def _on_datagram(self, data: bytes, now_ns: int, src) -> None:
        if len(data) > rtp.MAX_PACKET:
            self.counts["oversized"] += 1
            log.warning("receive: dropped a %d-byte datagram (limit %d)", len(data),
                        rtp.MAX_PACKET)
            return
        if self._srtp is not None:
            from edge.transport.srtp import SrtpError

            try:
                data = (self._srtp.unprotect_rtcp(data) if rtp.is_rtcp(data)
                        else self._srtp.unprotect(data))
            except SrtpError as e:
                if "replay" in str(e):  # a network duplicate (or a replay): authentic, seen
                    self.counts["srtp_replayed"] += 1
                    return
                self.counts["srtp_errors"] += 1
                log_at = logging.WARNING if self.counts["srtp_errors"] in (1, 100, 10_000) \
                    else logging.DEBUG  # a wrong key makes every packet fail: say so, not 50/s
                log.log(log_at, "receive: dropped a packet that is not valid SRTP with this key "
                        "(%s; %d so far)", e, self.counts["srtp_errors"])
                return
        if rtp.is_rtcp(data):
            self._on_rtcp(data, src, now_ns)
            return
        try:
            p = rtp.parse_rtp(data, expect_pt=self.pt)
        except rtp.RtpError as e:
            key = "wrong_pt" if "payload type" in str(e) else "malformed"
            self.counts[key] += 1
            log.warning("receive: dropped a packet: %s", e)
            return
        with self._lock:
            old = self.tracker.key
            accepted = self.tracker.packet(p.ssrc, src, p.seq, now_ns / 1e9,
                                           (p, now_ns, len(data)))
            if accepted and self.tracker.key != old:
                log.info("receive: stream SSRC %08x from %s", p.ssrc,
                         f"{src[0]}:{src[1]}" if src else "tcp")
            for ext, (q, t_ns, n) in accepted:
                if src is not None:
                    self._peer = src
                if q.allocated_kbps:
                    self.allocated_kbps = float(q.allocated_kbps)
                if not self.meter.packet(ext, q.timestamp, q.send_ns, t_ns, n):
                    self.counts["duplicates_net"] += 1
                self.capacity.packet(t_ns, n)
                if self.playout == "ptp":
                    self.jb.push(ext, q.payload, t_ns / 1e9, q.timestamp)
                else:
                    self.jb.push(ext, q.payload, t_ns / 1e9)

    @property
    def ssrc(self) -> int | None:
        """The SSRC of the stream being played (None before one passed probation)."""
        return self.tracker.ssrc

    def _on_rtcp(self, data: bytes, src=None, now_ns: int | None = None) -> None:
        """A compound RTCP packet: the stream's SR (kept for LSR/DLSR), SDES CNAME, BYE, and
        hushlink's APP packets (parameters, the BYE's sequence range, capacity probes)."""
        if len(data) >= 12 and data[1] == rtp.RTCP_APP and data[8:12] == rtp.APP_PROBE:
            try:  # a probe travels alone, padded: its own parser
                _, _, ssrc, body = rtp.parse_app(data)
            except rtp.RtpError:
                self.counts["malformed"] += 1
                return
            self._on_probe(body, ssrc, src, self.clock() if now_ns is None else now_ns,
                           len(data))
            return
        try:
            packets = rtcp.parse(data)
        except rtp.RtpError as e:
            self.counts["malformed"] += 1
            log.warning("receive: dropped an RTCP packet: %s", e)
            return
        self.counts["rtcp"] += 1
        now_ns = self.clock() if now_ns is None else now_ns
        ours = self.tracker.key is not None and self.tracker.key[1] == src
        stream = self.tracker.ssrc
        byes = [p for p in packets if isinstance(p, rtcp.Bye)]
        for p in packets:
            if isinstance(p, rtcp.SenderReport) and ours and p.ssrc == stream:
                self._last_sr = (rtcp.ntp_middle(p.ntp), now_ns)
            elif isinstance(p, rtcp.Sdes) and ours and p.ssrc == stream:
                self.sender_cname = p.cname
            elif isinstance(p, rtcp.App) and p.name == rtp.APP_PARAMS and p.subtype == 0:
                if self.tracker.key == (p.ssrc, src):  # only the stream's own sender
                    try:
                        body = p.json()
                    except rtp.RtpError:
                        self.counts["malformed"] += 1
                        continue
                    self._on_params(body)
            elif isinstance(p, rtcp.App) and p.name == rtp.APP_BYE and byes:
                self._on_bye_range(p, src)
        for b in byes:  # a standard BYE alone (a foreign sender): the end is what arrived
            if (stream in b.ssrcs and ours and not any(isinstance(p, rtcp.App)
                                                        and p.name == rtp.APP_BYE
                                                        for p in packets)):
                with self._lock:
                    if self.tracker.top is not None and self.jb.end_seq is None:
                        self.counts["bye"] += 1
                        self.jb.set_end(self.tracker.top)

    def _on_bye_range(self, app: rtcp.App, src) -> None:
        """hushlink's BYE names the sequence range sent, so losses at the end count too."""
        try:
            body = app.json()
        except rtp.RtpError:
            self.counts["malformed"] += 1
            return
        first, last = body.get("first"), body.get("last")
        if not (type(first) is int and type(last) is int):  # not bool, float or str
            self.counts["malformed"] += 1
            return
        with self._lock:
            rng = self.tracker.bye_range(app.ssrc, src, first, last)
            if rng is not None and self.jb.end_seq is None:
                self.counts["bye"] += 1
                self.meter.loss.close_range(*rng)
                self.jb.set_end(rng[1])

    def _on_probe(self, body: dict, ssrc: int, src, now_ns: int, size: int) -> None:
        """A capacity probe of the stream's own sender (UDP: kernel arrival stamps)."""
        if self.proto != "udp" or self.tracker.key != (ssrc, src):
            return
        try:
            train, index, count = rtp.parse_probe(body)
        except rtp.RtpError:
            self.counts["malformed"] += 1
            return
        with self._lock:
            self.counts["probes"] += 1
            before = self.capacity.trains
            self.capacity.probe(train, index, count, now_ns, size)
            sample = self.capacity.samples[-1][0] if self.capacity.trains > before else None
        if sample is not None and self._socks:  # at once: it sizes the sender's next train
            pkt = rtp.pack_app(rtp.APP_TRAIN, ssrc, {"train": train, "kbps": round(sample, 3)})
            try:
                self._socks[0].sendto(pkt, src)
            except OSError as e:
                self.counts["back_errors"] += 1
                log.debug("receive: back channel: %s", e)

    def _on_params(self, body: dict) -> None:
        """The sender's announced parameters: take the ones the receiver uses, so a tuned
        buffer bound reaches it without a side channel; each change is logged."""
        announced = {k: body[k] for k in RECEIVER_PARAMS if k in body}
        if announced == self._announced:  # a repeat: a local update() since then stands
            return
        try:
            want = self.params.replace(**announced)
        except (ParamsError, TypeError):
            self.counts["malformed"] += 1
            return
        self._announced = announced
        if want == self.params:
            return
        change = {k: [getattr(self.params, k), getattr(want, k)] for k in RECEIVER_PARAMS
                  if getattr(self.params, k) != getattr(want, k)}
        self.update(want)
        self.counts["param_changes"] += 1
        self.param_log.append({"t": self.clock() / 1e9, "change": change})
        log.warning("receive: parameters from the sender: %s",
                    ", ".join(f"{k} {a} -> {b}" for k, (a, b) in change.items()))

    # playout thread ------------------------------------------------------------------
    def _play_loop(self) -> None:
        self._tune_thread()
        next_report = time.monotonic() + self.interval_s
        while not self._stop.is_set():
            now_ns = self.clock()
            with self._lock:
                slots = self.jb.pop(now_ns / 1e9)
                finished = self.jb.finished
                due = self.jb.next_due()
            for s in slots:
                self._play(s, now_ns)
            if finished and not self.done.is_set():
                self.done.set()
            if time.monotonic() >= next_report:
                next_report += self.interval_s
                self._report(now_ns)
            # wake for the next slot's play time (not a fixed tick: that would add up to a
            # tick of latency), but at least every TICK_S to take new packets into account
            wait = TICK_S if due is None else due - self.clock() / 1e9
            time.sleep(min(max(wait, 0.0002), TICK_S))

    def _play(self, slot, now_ns: int) -> None:
        try:
            if slot.kind in ("packet", "discard"):
                y = self.dec.decode(slot.payload)
            elif slot.kind == "fec":
                y = self.dec.decode_fec(slot.payload)
            else:
                y = self.dec.conceal()
        except Exception as e:  # a corrupt Opus payload: conceal, never stop playout
            self.counts["decode_errors"] += 1
            log.warning("receive: Opus could not decode seq %d (%s); concealed", slot.seq, e)
            y = self.dec.conceal()
        if slot.kind == "discard":
            return
        if slot.index is not None and self.clock() > slot.index * (1_000_000_000 // 16_000):
            # too late for a PTP-timed output: a sound card would already have played silence
            self.missed += 1
            y = np.zeros_like(y)
        self.meter.audio(y if y.ndim == 1 else y.mean(axis=1))
        if self.keep_audio:
            self._frames.append(y)
            if slot.index is not None:
                self.track.put(slot.index, y)
        if self.on_frame:
            self.on_frame(slot.seq, now_ns, y)
        if self.on_audio:
            self.on_audio(y)

    def _report(self, now_ns: int):
        with self._lock:
            t = dataclasses.replace(
                self.meter.take(now_ns / 1e9, self.jb.late, self.jb.concealed,
                                self.allocated_kbps, self.capacity.estimate(now_ns)),
                buffer_ms=float(self.params.buffer_ms), delay_ms=round(self.jb.delay_ms, 1))
            peer = self._peer
            block = self._report_block(now_ns)
        self.telemetry.append(t)
        if peer is None:
            return t
        body = {k: (None if isinstance(v, float) and v != v else v)
                for k, v in t.to_dict().items()}
        pkt = rtcp.pack([rtcp.ReceiverReport(self.own_ssrc, (block,) if block else ()),
                         rtcp.Sdes(self.own_ssrc, f"hushlink-{self.own_ssrc:08x}"),
                         rtcp.app_json(rtp.APP_TELEMETRY, self.own_ssrc, body)])
        if self._srtp is not None:
            pkt = self._srtp.protect_rtcp(pkt)
        try:
            if isinstance(peer, socket.socket):
                peer.sendall(rtp.frame_4571(pkt))
            elif self._socks:
                self._socks[0].sendto(pkt, peer)
        except OSError as e:
            self.counts["back_errors"] += 1
            log.debug("receive: back channel: %s", e)
        return t

    def _report_block(self, now_ns: int) -> rtcp.ReportBlock | None:
        """RFC 3550 §6.4.1 on the stream, from the interval the meter just closed."""
        m, top = self.meter, self.tracker.top
        if self.tracker.ssrc is None or top is None:
            return None
        exp, rcv = m.last_interval
        lsr, dlsr = 0, 0
        if self._last_sr is not None:
            lsr = self._last_sr[0]
            dlsr = rtcp.dlsr_units((now_ns - self._last_sr[1]) / 1e9)
        return rtcp.ReportBlock(self.tracker.ssrc, rtcp.fraction_lost(exp, rcv), m.loss.lost,
                                top, round(m.jitter_s * rtp.OPUS_CLOCK), lsr, dlsr)

    # results -----------------------------------------------------------------------
    def audio(self) -> np.ndarray:
        """Everything played so far, float32 at ``rate``: (n,) mono, (n, 2) stereo; with PTP
        playout laid out by play time from ``record_start_ns`` (gaps silent)."""
        if self.playout == "ptp":
            return self.track.array()
        if self._frames:
            return np.concatenate(self._frames)
        return np.zeros((0, self.channels) if self.channels > 1 else 0, np.float32)

    @property
    def record_start_ns(self) -> int | None:
        """PTP playout: the PTP time at which ``audio()[0]`` plays (a whole second)."""
        start = self.track.start
        return None if start is None else start * (1_000_000_000 // 16_000)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the stream's end was played out; False on timeout."""
        return self.done.wait(timeout)

    def summary(self) -> dict:
        m, jb = self.meter, self.jb
        return {
            "received": m.loss.received, "expected": m.loss.expected, "lost": m.loss.lost,
            "reordered": m.reordered,
            "loss_pct": round(m.loss.loss_pct(), 3),
            "latency_ms": round(m.latency_sum_ms / m.latency_n, 3) if m.latency_n else None,
            "latency_ms_median": round(float(np.median(m.latencies)), 3) if m.latencies
            else None,
            "jitter_ms": round(1000 * m.jitter_s, 3), "bytes": m.bytes_total,
            "capacity_kbps": round(estimate_kbps(self.capacity.samples), 1),
            "capacity_trains": self.capacity.trains,
            "late": jb.late, "duplicates": jb.duplicates, "fec": jb.fec_frames,
            "plc": jb.plc_frames, "inserted": jb.inserted, "discarded": jb.discarded,
            "delay_ms": round(jb.delay_ms, 1), "target_ms": round(1000 * jb.target_s, 1),
            "buffer_ms": self.params.buffer_ms,
            "seconds": round(len(self._frames) * self.frame / self.rate, 3), **self.counts,
            **self.tracker.counts, "playout": self.playout,
            **({"link_offset_ms": jb.link_offset_ms, "missed": self.missed,
                "resyncs": jb.resyncs, "record_start_ns": self.record_start_ns}
               if self.playout == "ptp" else {}),
        }

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        for t in self._threads:
            t.join(timeout=1.0)
        with self._lock:
            self._unbind()
        self._sel.close()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def set_realtime(priority: int) -> bool:
    """SCHED_FIFO ``priority`` for the calling thread (threads it starts inherit it). A timed
    playout must not wait behind other processes for longer than its lead: the receive and
    playout threads both need it, and so does every other thread of the process that takes
    the GIL (else a starved one holding it stalls them). False, with a warning, if refused."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError) as e:
        log.warning("receive: realtime priority %d refused (%s; needs CAP_SYS_NICE)",
                    priority, e)
        return False
    return True


def _resolve(addr: tuple[str, int]) -> tuple[str, int]:
    """A configured peer's host name as the dotted address packets come from."""
    try:
        return socket.gethostbyname(addr[0]), addr[1]
    except OSError as e:
        raise TransportError(f"{addr[0]}: cannot resolve the peer ({e})") from None
