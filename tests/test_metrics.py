"""The Prometheus endpoint (issue 22, item 5): a real scrape over HTTP of a running live loop
streaming to a real receiver, with a clock status row; parsed with prometheus-client's own
text parser."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from test_live_loop import HalfMask, signal_48k

from edge.denoise import Denoiser
from edge.live import LiveLoop, LoopConfig
from edge.live_cli import network_sink
from edge.metrics import Collector, serve
from edge.sources import FileSource
from edge.transport.receiver import Receiver


def scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_scrape_a_running_loop_its_stream_and_the_clock():
    rows = [{"iface": "veth0", "lock": "locked", "offset_ns": 12.0, "path_delay_ns": 3100.0,
             "drift_ppm": -4.5}]
    with Receiver("127.0.0.1:0") as rx:
        sink = network_sink(f"udp://127.0.0.1:{rx.port}", 64, 200, 1.0)
        loop = LiveLoop(FileSource(signal_48k(3.5), 48_000, 480), Denoiser(HalfMask()), [sink],
                        LoopConfig(queue_blocks=256))
        server = serve("127.0.0.1:0", Collector(loop, [sink.sender], sink.sender.telemetry,
                                                clock=lambda: rows))
        during = []
        try:
            loop.run(lambda lp: during.append(scrape(server.server_port))
                     if lp.audio_s > 1.0 and not during else None)
            after = scrape(server.server_port)
        finally:
            server.shutdown()
            server.server_close()
    assert during and 0 < during[0][("hushlink_live_hops_total", ())] < \
        after[("hushlink_live_hops_total", ())]
    assert after[("hushlink_live_hops_total", ())] == loop.stats.hops
    assert after[("hushlink_live_overruns_total", ())] == 0
    assert after[("hushlink_live_bypass", ())] == 0.0
    assert 0 < after[("hushlink_live_hop_seconds", (("quantile", "0.99"),))] < 0.1
    assert after[("hushlink_link_packets_total", ())] == sink.sender.packets > 100
    assert after[("hushlink_link_rtcp_total", ())] >= 1  # the receiver's telemetry came back
    assert 0 <= after[("hushlink_link_loss_pct", ())] <= 1.0
    assert 0 <= after[("hushlink_link_rtt_ms", ())] < 1000  # RR echoing the sender's SR
    assert after[("hushlink_clock_locked", (("iface", "veth0"), ("state", "locked")))] == 1.0
    assert after[("hushlink_clock_offset_ns", (("iface", "veth0"),))] == 12.0
    assert after[("hushlink_clock_drift_ppm", (("iface", "veth0"),))] == -4.5


def test_a_busy_metrics_port_is_a_one_line_error():
    import pytest

    from edge.errors import HushlinkError

    first = serve("127.0.0.1:0", Collector())
    try:
        with pytest.raises(HushlinkError, match="cannot serve metrics on 127.0.0.1:"):
            serve(f"127.0.0.1:{first.server_port}", Collector())
    finally:
        first.shutdown()
        first.server_close()
