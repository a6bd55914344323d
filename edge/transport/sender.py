"""RTP/Opus sender: float32 blocks in (16 kHz mono by default; 48 kHz, stereo), paced packets
out, telemetry back.

``Sender.write(block)`` cuts blocks of any length into 20 ms frames, encodes each with Opus and
sends it at once (the caller is real time: the live loop, or :func:`send_file` which paces a
file). Each packet carries the sender's PTP/wall time (``clock()``, ns), so the receiver can
measure one-way latency. Once a second an RFC 3550 compound RTCP packet goes out on the same
port (RFC 5761 mux): a Sender Report, the CNAME, and an APP packet with the parameters in force.
The receiver's per-second report comes back the same way (a Receiver Report and, from a
hushlink receiver, an APP packet with the full telemetry) and lands in ``Sender.telemetry`` (a
:class:`TelemetryLog`); the RR's LSR/DLSR give the round trip, and the measured loss raises
the Opus expected-loss hint so FEC follows the link, also for a standard receiver's RR alone.
With an SRTP key every packet is SRTP/SRTCP (``edge.transport.srtp``).

``--bitrate`` is what the stream may use on the wire: Opus gets that minus the RTP headers
(32 bytes per packet, 12.8 kbit/s at 50 packets/s; plus 0.8 kbit/s of RFC 4571 framing on
TCP), so the bytes sent match the configured bitrate. With a known link capacity the
allocation is ``min(bitrate, share * capacity)``.

``also``: more UDP destinations that get a copy of every packet (unicast fan-out, where AES67
would use multicast): one stream, one SSRC, the same timestamps, so several receivers can play
it in step (``receive --playout ptp``). Telemetry comes back from the main destination only.

On UDP the sender also probes the link's capacity (``probe``, on by default): every 2 s (the
first three every 0.5 s) a train of padded RTCP APP packets goes out right after an audio
packet; the receiver measures its dispersion (``edge.transport.capacity``) and reports
``capacity_kbps`` in its telemetry, which sizes the next train. TCP carries no probes (its
own pacing and coalescing would be measured, not the link).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable

import numpy as np

from edge.params import Telemetry, TransportParams
from edge.transport import capacity as cap
from edge.transport import rtcp, rtp
from edge.transport.codec import FRAME_MS, RATE, TS_PER_FRAME, OpusEncoder, frame_samples
from edge.transport.links import TransportError, UdpLink, open_link, parse_url
from edge.transport.telemetry import TelemetryLog

log = logging.getLogger(__name__)
PACKETS_PER_S = 1000 // FRAME_MS
# the first train, before any sample, is sized for this many times the bitrate: small enough
# that trains 0.5 s apart drain from a 200 ms queue on a link just above the bitrate (at 3x,
# two of them overflowed the emulator's queue at 80 kbit/s); the next ones use its sample
STARTUP_GUESS = 1.5
BYE_REPEATS = 5  # a BYE is a datagram too: send it a few times so 20% loss cannot hide the end
RECONNECT_S = 0.25
ANNOUNCE_REPEATS = 3  # APP_PARAMS after a start or change (then one a second): loss-proof


def system_clock_ns() -> int:
    """The PTP-disciplined system clock (phc2sys steers CLOCK_REALTIME), ns since the epoch."""
    return time.time_ns()


def allocation_kbps(params: TransportParams, capacity_kbps: float | None) -> float:
    if capacity_kbps:
        return min(float(params.bitrate_kbps), params.share * capacity_kbps)
    return float(params.bitrate_kbps)


def codec_bitrate_bps(params: TransportParams, capacity_kbps: float | None = None,
                      srtp: bool = False) -> int:
    """Opus bitrate that makes RTP (+ framing, + the SRTP tag) on the wire equal the
    allocation."""
    from edge.transport.srtp import TAG_BYTES

    header = (rtp.HEADER_BYTES + (2 if params.protocol == "tcp" else 0)
              + (TAG_BYTES if srtp else 0))
    overhead = 8 * header * PACKETS_PER_S
    return max(6000, int(allocation_kbps(params, capacity_kbps) * 1000 - overhead))


class Sender:
    """Streams audio to ``url`` (udp://HOST:PORT or tcp://HOST:PORT) with ``params``: ``rate``
    (an Opus rate, Hz) and ``channels`` (1, 2) of the blocks written, the RTP payload type
    ``pt``, and an SRTP master key ``srtp_key`` (30 bytes) to encrypt and authenticate."""

    def __init__(self, url: str, params: TransportParams | None = None,
                 clock: Callable[[], int] = system_clock_ns,
                 telemetry: TelemetryLog | None = None, capacity_kbps: float | None = None,
                 ssrc: int | None = None, also: tuple[str, ...] = (), rate: int = RATE,
                 channels: int = 1, pt: int = rtp.OPUS_PT, srtp_key: bytes | None = None,
                 cname: str | None = None, probe: bool = True) -> None:
        proto, self.host, self.port = parse_url(url)
        extra = [parse_url(u) for u in also]
        if any(p != "udp" for p, _, _ in extra):
            raise TransportError("extra destinations must be udp://HOST:PORT")
        params = params or TransportParams()
        self.params = params if params.protocol == proto else params.replace(protocol=proto)
        self.clock = clock
        self.capacity_kbps = capacity_kbps
        self.telemetry = telemetry if telemetry is not None else TelemetryLog()
        self.ssrc = ssrc if ssrc is not None else int.from_bytes(os.urandom(4), "big")
        self.cname = cname or f"hushlink-{self.ssrc:08x}@{socket.gethostname()}"
        self.first_seq = self.seq = int.from_bytes(os.urandom(2), "big")
        self.rate, self.channels, self.pt = rate, channels, pt
        self.frame = frame_samples(rate)
        self._srtp = None
        if srtp_key is not None:
            from edge.transport.srtp import SrtpSession

            self._srtp = SrtpSession(srtp_key)
        self._ts: int | None = None
        self.capture_start_ns: int | None = None  # first t_ns given (else the first send time)
        self._pending = np.zeros((0, channels) if channels > 1 else 0, np.float32)
        self.packets = self.bytes = self.send_errors = self.dropped = 0
        self.rtcp = self.rtcp_bad = self.reconnects = self.control_packets = 0
        self.payload_octets = 0  # for the Sender Report
        self.srtp_errors = 0  # back-channel packets that did not authenticate
        self.rtt_ms: float | None = None  # from the last RR that echoed one of our SRs
        self.last_report: rtcp.ReportBlock | None = None  # the receiver's last report on us
        self.measured_loss_pct = 0.0
        # probe trains go in clear: with SRTP the receiver would refuse them (no probing)
        self.probe = probe and srtp_key is None
        self.probe_packets = self.probe_bytes = self.trains = self._train_frame = 0
        self.measured_capacity_kbps = 0.0  # the receiver's estimate (sizes the next train)
        self.train_kbps = 0.0  # the last train's own sample (sizes the startup trains)
        self._enc = OpusEncoder(self._codec_bps(self.params), self.params.fec,
                                self.params.loss_hint_pct, rate=rate, channels=channels)
        self._lock = threading.Lock()
        self._link = None
        self._next_connect = 0.0
        self._closed = threading.Event()
        self._announce_left = ANNOUNCE_REPEATS  # APP_PARAMS still to send at once
        self._frames = 0
        self._connect(raise_errors=self.params.protocol == "tcp")
        self._copies = [UdpLink(h, p) for _, h, p in extra]
        self._rx = threading.Thread(target=self._back_channel, name="rtcp-rx", daemon=True)
        self._rx.start()

    # connection --------------------------------------------------------------------
    def _connect(self, raise_errors: bool = False) -> None:
        try:
            self._link = open_link(self.params.protocol, self.host, self.port)
        except (TransportError, OSError) as e:
            self._link = None
            self._next_connect = time.monotonic() + RECONNECT_S
            if raise_errors:
                raise TransportError(str(e)) from None
            log.warning("stream: %s (retrying)", e)

    def _drop_link(self, why: str) -> None:
        log.warning("stream: %s; reconnecting", why)
        if self._link is not None:
            self._link.close()
        self._link = None
        self._next_connect = time.monotonic() + RECONNECT_S
        self.reconnects += 1

    def _codec_bps(self, params: TransportParams) -> int:
        return codec_bitrate_bps(params, self.capacity_kbps, srtp=self._srtp is not None)

    def update(self, params: TransportParams) -> None:
        """Apply new parameters between two packets: bitrate, FEC and loss hint at once, a
        protocol change by reconnecting (the next packet goes out on the new socket)."""
        with self._lock:
            old, self.params = self.params, params
            self._enc.configure(self._codec_bps(params), params.fec,
                                max(params.loss_hint_pct, math.ceil(self.measured_loss_pct)))
            self._announce_left = ANNOUNCE_REPEATS
            if params.protocol != old.protocol:
                for _ in range(ANNOUNCE_REPEATS):  # tell the receiver on the old link first
                    self._send_control(self._params_packet())
                if self._link is not None:
                    self._link.close()
                self._link = None
                self._connect()
                self.reconnects += 1

    # sending -----------------------------------------------------------------------
    def write(self, block: np.ndarray, t_ns: int | None = None) -> None:
        """Send float32 samples at ``rate``, (n,) mono or (n, channels) (any length; whole
        20 ms frames go out now).

        ``t_ns``: PTP time of ``block[0]`` from the media clock (edge.clock.mediaclock), when
        the source is locked to PTP; RTP timestamps are then that time in 48 kHz ticks
        (AES67, ``a=mediaclk:direct=0``). Without it they count on from the first packet's
        send time."""
        if t_ns is not None and not len(self._pending):
            self._ts = (int(t_ns) * 48_000 // 1_000_000_000) & 0xFFFFFFFF
            if self.capture_start_ns is None:
                self.capture_start_ns = int(t_ns)
        b = np.asarray(block, np.float32)
        b = b.reshape(-1) if self.channels == 1 else b.reshape(-1, self.channels)
        x = np.concatenate([self._pending, b])
        f = self.frame
        n = len(x) // f
        for i in range(n):
            self._send_frame(x[i * f:(i + 1) * f])
        self._pending = x[n * f:]

    def _send_frame(self, frame: np.ndarray) -> None:
        with self._lock:
            payload = self._enc.encode(frame)
            now = self.clock()  # stamped after encoding: latency is the network's alone
            if self._ts is None:  # RTP timestamp from the media clock: 48 kHz ticks of PTP time
                self._ts = (now * 48_000 // 1_000_000_000) & 0xFFFFFFFF
                self.capture_start_ns = now
            alloc = allocation_kbps(self.params, self.capacity_kbps)
            pkt = rtp.RtpPacket(seq=self.seq, timestamp=self._ts, ssrc=self.ssrc,
                                payload=payload, send_ns=now,
                                bitrate_kbps=self.params.bitrate_kbps,
                                allocated_kbps=int(round(alloc)), pt=self.pt).pack()
            self.seq = (self.seq + 1) & 0xFFFF
            self._ts = (self._ts + TS_PER_FRAME) & 0xFFFFFFFF
            if self._send(self._srtp.protect(pkt) if self._srtp else pkt):
                self.payload_octets += len(payload)
            self._frames += 1
            if (self.probe and self.params.protocol == "udp"
                    and cap.probe_due(self._frames, self.trains, self._train_frame,
                                      PACKETS_PER_S, self.measured_capacity_kbps)):
                self._train_frame = self._frames
                self._send_train()
            if self._announce_left or self._frames % PACKETS_PER_S == 0:
                self._announce_left = max(0, self._announce_left - 1)
                self._send_control(self._params_packet())

    def _report(self) -> rtcp.SenderReport:
        """RFC 3550 SR: now on the wall and RTP clocks, and what was sent so far."""
        now = self.clock()
        ts = (self._ts if self._ts is not None else now * 48_000 // 1_000_000_000)
        return rtcp.SenderReport(self.ssrc, rtcp.ntp_from_ns(now), ts, self.packets,
                                 self.payload_octets)

    def _send_train(self) -> None:
        """A capacity probe: ``TRAIN_PACKETS`` padded packets back to back, sized to spread
        over ``TARGET_SPREAD_S`` at the receiver's estimate, before it has one at the last
        train's sample, before that at ``STARTUP_GUESS`` times the bitrate."""
        guess = (self.measured_capacity_kbps or self.train_kbps
                 or STARTUP_GUESS * self.params.bitrate_kbps)
        size = cap.probe_size(guess)
        n = cap.TRAIN_PACKETS
        pkts = [rtp.pack_probe(self.ssrc, self.trains, i, n, size) for i in range(n)]
        self.trains += 1
        if self._link is None:
            return
        for pkt in pkts:
            try:
                self._link.send(pkt)
            except OSError:
                return
            self.probe_packets += 1
            self.probe_bytes += len(pkt)

    def _params_packet(self) -> bytes:
        """SR + SDES CNAME + APP ``HLPR`` (the parameters in force, so the receiver applies
        the ones it uses, buffer bound, FEC and protocol, through the stream's own
        signalling)."""
        return rtcp.pack([self._report(), rtcp.Sdes(self.ssrc, self.cname),
                          rtcp.app_json(rtp.APP_PARAMS, self.ssrc, self.params.to_dict())])

    def _copy(self, pkt: bytes) -> None:
        """The same packet to the extra destinations (best effort, like UDP itself)."""
        for link in self._copies:
            try:
                link.send(pkt)
            except OSError:
                self.send_errors += 1

    def _send_control(self, pkt: bytes) -> None:
        """A control packet: not counted as media, never fatal."""
        pkt = self._srtp.protect_rtcp(pkt) if self._srtp else pkt
        self._copy(pkt)
        if self._link is None:
            return
        try:
            self._link.send(pkt)
            self.control_packets += 1
        except OSError:
            pass

    def _send(self, pkt: bytes) -> bool:
        self._copy(pkt)
        if self._link is None:
            if time.monotonic() < self._next_connect:
                self.dropped += 1
                return False
            self._connect()
            if self._link is None:
                self.dropped += 1
                return False
        try:
            self._link.send(pkt)
        except ConnectionRefusedError:  # UDP: ICMP port unreachable, receiver not up (yet)
            self.send_errors += 1
            return False
        except OSError as e:
            self.send_errors += 1
            self.dropped += 1
            if self._link.proto == "tcp":
                self._drop_link(f"tcp send failed ({e.strerror or e})")
            return False
        self.packets += 1
        self.bytes += len(pkt)
        return True

    # back channel ------------------------------------------------------------------
    def _back_channel(self) -> None:
        while not self._closed.is_set():
            link = self._link
            if link is None:
                time.sleep(0.05)
                continue
            try:
                packets = link.recv()
            except OSError as e:
                if self._closed.is_set() or link is not self._link:
                    continue
                with self._lock:
                    if link is self._link and link.proto == "tcp":
                        self._drop_link(f"receiver went away ({e})")
                continue
            for data in packets:
                self._on_rtcp(data)

    def _on_rtcp(self, data: bytes) -> None:
        arrival = rtcp.ntp_from_ns(self.clock())
        if self._srtp is not None:
            from edge.transport.srtp import SrtpError

            try:
                data = self._srtp.unprotect_rtcp(data)
            except SrtpError as e:
                self.srtp_errors += 1
                log.debug("back channel: SRTCP packet refused (%s)", e)
                return
        try:
            packets = rtcp.parse(data)
            train = next((p for p in packets if isinstance(p, rtcp.App)
                          and p.name == rtp.APP_TRAIN), None)
            if train is not None:  # the receiver's sample of our last probe train
                kbps = train.json().get("kbps")
                if type(kbps) not in (int, float) or not 0 < kbps < 1e8:
                    raise rtp.RtpError("train sample is not a number in range")
                self.train_kbps = float(kbps)
                return
            block = next((b for p in packets
                          if isinstance(p, (rtcp.ReceiverReport, rtcp.SenderReport))
                          for b in p.blocks if b.ssrc == self.ssrc), None)
            apps = [p for p in packets if isinstance(p, rtcp.App)]
            if block is None and not apps:
                raise rtp.RtpError("no report on this stream")
            tel = next((p for p in apps if p.name == rtp.APP_TELEMETRY), None)
            if tel is None and apps:
                raise rtp.RtpError(f"unknown APP name {apps[0].name!r}")
            t = (_telemetry_from_app(tel.json()) if tel is not None
                 else _telemetry_from_block(block, arrival))
        except (rtp.RtpError, TypeError, ValueError) as e:
            self.rtcp_bad += 1
            log.debug("back channel: ignored a packet (%s)", e)
            return
        self.rtcp += 1
        if block is not None:
            self.last_report = block
            rtt = rtcp.rtt_s(arrival, block)
            if rtt is not None:
                self.rtt_ms = 1000.0 * rtt
        self.telemetry.append(t)
        # FEC follows the link: expected-loss hint = max(configured, smoothed measured loss)
        self.measured_loss_pct = 0.7 * self.measured_loss_pct + 0.3 * t.loss_pct
        if t.capacity_kbps > 0:
            self.measured_capacity_kbps = t.capacity_kbps
        with self._lock:
            p = self.params
            want = max(p.loss_hint_pct, math.ceil(self.measured_loss_pct))
            if p.fec and want != self._enc.loss_pct:
                self._enc.configure(self._enc.bitrate_bps, p.fec, min(want, 100))

    # end ---------------------------------------------------------------------------
    def close(self, bye: bool = True) -> None:
        """Flush the last partial frame (zero padded), say BYE, close the socket. Without
        ``bye`` the stream just stops (its receiver keeps waiting: a stopped or restarted
        device stream must not end a `receive` that outlives it)."""
        if self._closed.is_set():
            return
        if len(self._pending):
            self.write(np.zeros((self.frame - len(self._pending), *self._pending.shape[1:]),
                                np.float32))
        with self._lock:
            last = (self.seq - 1) & 0xFFFF
            pkt = rtcp.pack([self._report(), rtcp.Bye((self.ssrc,)),
                             rtcp.app_json(rtp.APP_BYE, self.ssrc,
                                           {"first": self.first_seq, "last": last,
                                            "packets": self.packets,
                                            "sent": (self.seq - self.first_seq) & 0xFFFF})])
            for _ in range(BYE_REPEATS if bye else 0):
                wire = self._srtp.protect_rtcp(pkt) if self._srtp else pkt
                self._copy(wire)
                if self._link is not None:
                    try:
                        self._link.send(wire)
                    except OSError:
                        break
                time.sleep(0.005)
        self._closed.set()
        self._rx.join(timeout=1.0)
        with self._lock:
            if self._link is not None:
                self._link.close()
                self._link = None
            for link in self._copies:
                link.close()

    def stats(self) -> dict:
        return {"packets": self.packets, "bytes": self.bytes, "send_errors": self.send_errors,
                "dropped": self.dropped, "rtcp": self.rtcp, "rtcp_bad": self.rtcp_bad,
                "reconnects": self.reconnects, "control": self.control_packets,
                "codec_bps": self._enc.bitrate_bps, "probe_packets": self.probe_packets,
                "probe_bytes": self.probe_bytes,
                "capacity_kbps": round(self.measured_capacity_kbps, 1),
                "loss_hint_pct": self._enc.loss_pct,
                "capture_start_ns": self.capture_start_ns,
                "rtt_ms": None if self.rtt_ms is None else round(self.rtt_ms, 3),
                "srtp_errors": self.srtp_errors}

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _telemetry_from_app(body: dict) -> Telemetry:
    """A hushlink receiver's full record (APP ``HLTM``), checked: its loss steers the encoder."""
    t = Telemetry.from_dict({k: (float("nan") if v is None else v) for k, v in body.items()})
    if not (all(type(v) in (int, float) for v in t.to_dict().values())
            and 0.0 <= t.loss_pct <= 100.0):
        raise rtp.RtpError("telemetry values are not numbers in range")
    return t


def _telemetry_from_block(block: rtcp.ReportBlock, arrival_ntp: int) -> Telemetry:
    """What a standard receiver's RR says (loss fraction, jitter), as a telemetry record; the
    rest (latency, SNR, bandwidth) only a hushlink receiver measures."""
    nan = float("nan")
    secs = (arrival_ntp >> 32) - rtcp.NTP_EPOCH_OFFSET_S + (arrival_ntp & 0xFFFFFFFF) / 2**32
    return Telemetry(t=secs, latency_ms=nan, loss_pct=100.0 * block.fraction_lost / 256,
                     jitter_ms=1000.0 * block.jitter / rtp.OPUS_CLOCK, bandwidth_util=nan,
                     snr_db=nan)


class NetworkSink(Sender):
    """The live loop's sink: ``NetworkSink(url, params).write(block_16k_float32)``, ``close()``."""


SAMPLE_NS = 1_000_000_000 // 16_000
FRAME_NS = FRAME_MS * 1_000_000


def send_file(samples: np.ndarray, sender: Sender, realtime: bool = True,
              progress: Callable[[int, int], None] | None = None,
              on_frame: Callable[[int, int], None] | None = None,
              start_ns: int | None = None) -> int:
    """Send float32 samples at the sender's rate, (n,) or (n, channels), as if captured now,
    paced in real time: frame k leaves when its last sample would have been captured. Capture
    times are on the sender's clock, from ``start_ns`` (default: now, rounded down to a whole
    16 kHz sample of PTP time, as a PTP-locked sound card's samples are); the RTP timestamps
    carry them (media clock). Returns the capture time just after the last sample
    (``start_ns`` of a seamless repeat). ``on_frame(k, t_ns)`` is told the clock time at which
    frame k's first sample was "captured" (used to measure glass-to-glass latency)."""
    f = sender.frame
    n = math.ceil(len(samples) / f)
    x = np.asarray(samples, np.float32)
    x = np.pad(x, [(0, n * f - len(x))] + [(0, 0)] * (x.ndim - 1))
    c0 = sender.clock() // SAMPLE_NS * SAMPLE_NS if start_ns is None else int(start_ns)
    for k in range(n):
        if realtime:  # paced on the sender's (PTP) clock: the media clock the stamps follow
            wait = (c0 + (k + 1) * FRAME_NS - sender.clock()) / 1e9
            if wait > 0:
                time.sleep(min(wait, 0.1))  # a stepped clock cannot stall the stream
        if on_frame:
            on_frame(k, c0 + k * FRAME_NS)
        sender.write(x[k * f:(k + 1) * f], t_ns=c0 + k * FRAME_NS)
        if progress and k % 25 == 0:
            progress(k, n)
    return c0 + n * FRAME_NS
