"""Prometheus text endpoint of the live loop, the stream's link and the PTP clock.

``edge-denoise live --metrics 127.0.0.1:9108`` serves ``/metrics``. Nothing is pushed or
updated on the audio path: a scrape reads the counters the loop, the sender and the clock
supervisor keep anyway (``Collector.collect``), so an unscraped endpoint costs nothing.
prometheus-client (the reference Python client) does the text format and the HTTP server.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import CollectorRegistry

from edge.errors import HushlinkError

LOOP_COUNTERS = {"blocks": "captured blocks handed to the worker",
                 "hops": "model hops (10 ms) run",
                 "overruns": "blocks dropped because the worker queue was full",
                 "input_overflows": "input overflows reported by the sound card",
                 "underruns": "output underruns of the playback device",
                 "bypass_toggles": "bypass toggles (SIGUSR1)"}
SENDER_COUNTERS = {"packets": "RTP packets sent", "bytes": "RTP bytes sent",
                   "send_errors": "send errors", "dropped": "packets dropped while unconnected",
                   "rtcp": "telemetry (RTCP) packets received back",
                   "reconnects": "reconnections of the stream"}
LINK_GAUGES = {"latency_ms": "one-way latency of the last telemetry second, ms",
               "loss_pct": "packet loss of the last telemetry second, %",
               "jitter_ms": "RFC 3550 interarrival jitter, ms",
               "snr_db": "estimated SNR of the received audio, dB",
               "bitrate_kbps": "measured bitrate on the wire, kbit/s"}
CLOCK_GAUGES = {"offset_ns": "offset from the master, ns",
                "path_delay_ns": "mean path delay, ns",
                "drift_ppm": "frequency offset of the local clock, ppm"}


class Collector:
    """Reads, at scrape time, ``loop`` (edge.live.LiveLoop), ``senders`` (Sender objects),
    ``telemetry`` (a TelemetryLog: the last record the receiver sent back) and ``clock``
    (a callable returning `clock status` rows; errors mean no clock)."""

    def __init__(self, loop=None, senders: Iterable = (), telemetry=None,
                 clock: Callable[[], list[dict]] | None = None) -> None:
        self.loop, self.senders, self.telemetry, self.clock = loop, list(senders), telemetry, clock

    def describe(self) -> list:
        return []  # names vary with what runs; collect() at scrape time says them

    def collect(self) -> Iterator:
        if self.loop is not None:
            yield from self._loop()
        if self.senders:
            yield from self._senders()
        if self.telemetry is not None:
            yield from self._link()
        if self.clock is not None:
            yield from self._clock()

    def _loop(self) -> Iterator:
        st = self.loop.stats
        for k, doc in LOOP_COUNTERS.items():
            yield CounterMetricFamily(f"hushlink_live_{k}", doc, value=getattr(st, k))
        yield GaugeMetricFamily("hushlink_live_audio_seconds", "audio processed, s",
                                value=self.loop.audio_s)
        yield GaugeMetricFamily("hushlink_live_queue_depth", "worker queue depth, blocks",
                                value=st.queue_depth)
        yield GaugeMetricFamily("hushlink_live_bypass", "1 while the mask is bypassed",
                                value=float(self.loop.denoiser.bypass))
        hop = st.hop_time.percentiles_ms()
        g = GaugeMetricFamily("hushlink_live_hop_seconds", "model hop time (ring of recent "
                              "hops; max over the run)", labels=["quantile"])
        for q, key in (("0.5", "p50"), ("0.99", "p99"), ("1", "max")):
            if hop[key] is not None:
                g.add_metric([q], hop[key] / 1e3)
        yield g

    def _senders(self) -> Iterator:
        stats = [s.stats() for s in self.senders]
        for k, doc in SENDER_COUNTERS.items():
            yield CounterMetricFamily(f"hushlink_link_{k}", doc,
                                      value=sum(s[k] for s in stats))
        yield GaugeMetricFamily("hushlink_link_codec_bitrate_bps", "Opus bitrate now, bit/s",
                                value=sum(s["codec_bps"] for s in stats))
        rtts = [s["rtt_ms"] for s in stats if s.get("rtt_ms") is not None]
        if rtts:  # from the receiver's RTCP RR (LSR/DLSR); absent until one echoed an SR
            yield GaugeMetricFamily("hushlink_link_rtt_ms", "round trip from the last RTCP "
                                    "receiver report, ms", value=max(rtts))

    def _link(self) -> Iterator:
        last = self.telemetry.window(1.0)
        if not last:
            return
        for k, doc in LINK_GAUGES.items():
            v = float(getattr(last[-1], k))
            if math.isfinite(v):
                yield GaugeMetricFamily(f"hushlink_link_{k}", doc, value=v)

    def _clock(self) -> Iterator:
        try:
            rows = self.clock()
        except HushlinkError:
            rows = []
        locked = GaugeMetricFamily("hushlink_clock_locked", "1 when the PTP clock is locked "
                                   "(or is the master)", labels=["iface", "state"])
        gauges = {k: GaugeMetricFamily(f"hushlink_clock_{k}", doc, labels=["iface"])
                  for k, doc in CLOCK_GAUGES.items()}
        for r in rows:
            iface, state = str(r.get("iface", "?")), str(r.get("lock"))
            locked.add_metric([iface, state], float(state in ("locked", "master")))
            for k, g in gauges.items():
                if r.get(k) is not None:
                    g.add_metric([iface], float(r[k]))
        yield locked
        yield from gauges.values()


def serve(addr: str, collector: Collector):
    """Start the endpoint on ``addr`` ("HOST:PORT", port 0: any free one) in a daemon thread.
    Returns the server (``server.server_port``; ``server.shutdown()`` stops it)."""
    from edge.transport.links import parse_hostport

    host, port = parse_hostport(addr)
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        server, _thread = start_http_server(port, host, registry=registry)
    except OSError as e:
        raise HushlinkError(f"cannot serve metrics on {addr}: {e.strerror or e}") from None
    return server
