"""RFC 3550 RTCP: packet formats against hand-made bytes, the NTP/round-trip arithmetic, a
parser that raises only RtpError, and the reports between a real sender and receiver."""

from __future__ import annotations

import math
import struct
import time

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.params import TransportParams
from edge.transport import rtcp, rtp
from edge.transport.receiver import Receiver
from edge.transport.sender import Sender, send_file


def test_receiver_report_bytes_match_rfc3550_layout():
    b = rtcp.ReportBlock(ssrc=0x01020304, fraction_lost=64, cumulative_lost=-2,
                         highest_seq=0x0001FFFF, jitter=480, lsr=0xAABBCCDD, dlsr=65536)
    data = rtcp.pack([rtcp.ReceiverReport(0x11111111, (b,))])
    assert data[:4] == bytes([0x81, 201, 0, 7])  # V=2, RC=1, RR, 8 words - 1
    assert struct.unpack("!I", data[4:8])[0] == 0x11111111
    assert data[12] == 64 and data[13:16] == b"\xff\xff\xfe"  # 24-bit two's complement
    assert rtcp.parse(data) == [rtcp.ReceiverReport(0x11111111, (b,))]


def test_compound_round_trip_and_foreign_types_skipped():
    sr = rtcp.SenderReport(7, rtcp.ntp_from_ns(1_700_000_000_123_456_789), 960, 50, 8000)
    pkts = [sr, rtcp.Sdes(7, "hushlink@dev"), rtcp.Bye((7,), "done"),
            rtcp.app_json(rtp.APP_BYE, 7, {"first": 1, "last": 9})]
    data = rtcp.pack(pkts)
    xr = bytes([0x80, 207, 0, 1]) + b"\0\0\0\7"  # an RFC 3611 XR: not read, not an error
    out = rtcp.parse(data + xr)
    assert out == pkts
    assert out[3].json() == {"first": 1, "last": 9}
    assert data[1] == rtcp.SR  # RFC 3550 §6.1: a report comes first


def test_ntp_time_and_round_trip():
    t = 1_700_000_000 * 10**9 + 500_000_000
    ntp = rtcp.ntp_from_ns(t)
    assert ntp >> 32 == 1_700_000_000 + rtcp.NTP_EPOCH_OFFSET_S
    assert (ntp & 0xFFFFFFFF) == 1 << 31  # half a second
    sent = rtcp.ntp_from_ns(t)
    arrival = rtcp.ntp_from_ns(t + 130_000_000)  # 130 ms later, 100 ms of it held by the peer
    block = rtcp.ReportBlock(1, 0, 0, 0, 0, lsr=rtcp.ntp_middle(sent),
                             dlsr=rtcp.dlsr_units(0.100))
    assert abs(rtcp.rtt_s(arrival, block) - 0.030) < 1e-4
    assert rtcp.rtt_s(arrival, rtcp.ReportBlock(1, 0, 0, 0, 0)) is None  # no SR echoed
    late = rtcp.ReportBlock(1, 0, 0, 0, 0, lsr=rtcp.ntp_middle(arrival), dlsr=65536)
    assert rtcp.rtt_s(arrival, late) is None  # negative: a stepped clock, not a round trip


def test_fraction_lost():
    assert rtcp.fraction_lost(100, 75) == 64
    assert rtcp.fraction_lost(100, 100) == 0
    assert rtcp.fraction_lost(100, 103) == 0  # duplicates: never negative
    assert rtcp.fraction_lost(0, 0) == 0
    assert rtcp.fraction_lost(10, 0) == 255


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300) | st.builds(
    lambda head, body: head + body,
    st.sampled_from([b"\x81\xc9\x00\x07", b"\x80\xc8\x00\x06", b"\x81\xca\x00\x02",
                     b"\x81\xcb\x00\x01", b"\x80\xcc\x00\x02", b"\xa0\xc9\x00\x01"]),
    st.binary(max_size=40)))
def test_parser_raises_only_rtcp_error(data):
    try:
        out = rtcp.parse(data)
    except rtp.RtpError:
        return
    assert all(isinstance(p, (rtcp.SenderReport, rtcp.ReceiverReport, rtcp.Sdes, rtcp.Bye,
                              rtcp.App)) for p in out)


def test_reports_between_sender_and_receiver_give_loss_jitter_and_rtt():
    """A real sender and receiver on loopback: the receiver's RR carries the stream's SSRC,
    its extended highest sequence number and an echo of the sender's SR; the sender gets a
    round trip from it and keeps logging the full telemetry (APP) as before."""
    rx = Receiver("127.0.0.1:0", TransportParams(), keep_audio=False)
    tx = Sender(f"udp://127.0.0.1:{rx.port}", TransportParams())
    try:
        t = np.arange(int(3.5 * 16_000)) / 16_000
        send_file((0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), tx)
        deadline = time.monotonic() + 10
        while tx.last_report is None or tx.rtt_ms is None:
            assert time.monotonic() < deadline, "no receiver report echoing an SR came back"
            time.sleep(0.1)
        b = tx.last_report
        assert b.ssrc == tx.ssrc
        assert b.cumulative_lost == 0 and b.fraction_lost == 0
        assert (b.highest_seq - tx.first_seq) % 65536 <= 175  # up to 3.5 s of 50 packets/s
        assert 0 <= tx.rtt_ms < 500  # loopback on a loaded machine
        rec = tx.telemetry.window(60)[-1]
        assert not math.isnan(rec.snr_db)  # a hushlink receiver's full record (APP HLTM)
        assert rx.sender_cname == tx.cname
    finally:
        tx.close()
        rx.close()
    assert tx.stats()["rtt_ms"] is not None and rx.summary()["bye"] == 1


def test_a_standard_receivers_rr_alone_steers_fec():
    """A foreign receiver (GStreamer's rtpbin) sends an RR without hushlink's APP: its loss
    fraction becomes a telemetry record and raises the Opus loss hint."""
    rx = Receiver("127.0.0.1:0", TransportParams(), keep_audio=False)
    tx = Sender(f"udp://127.0.0.1:{rx.port}", TransportParams(loss_hint_pct=5))
    try:
        block = rtcp.ReportBlock(tx.ssrc, fraction_lost=77, cumulative_lost=30,
                                 highest_seq=tx.seq, jitter=480)
        for _ in range(10):
            tx._on_rtcp(rtcp.pack([rtcp.ReceiverReport(99, (block,)), rtcp.Sdes(99, "gst")]))
        rec = tx.telemetry.window(60)[-1]
        assert abs(rec.loss_pct - 100 * 77 / 256) < 1e-9 and abs(rec.jitter_ms - 10.0) < 1e-9
        assert tx.stats()["loss_hint_pct"] == 30  # ceil of the smoothed 30.1 %
        bad = tx.rtcp_bad  # a report on another stream is nothing to act on
        tx._on_rtcp(rtcp.pack([rtcp.ReceiverReport(99, (block.__class__(
            tx.ssrc ^ 1, 255, 0, 0, 0),))]))
        assert tx.rtcp_bad == bad + 1
    finally:
        tx.close()
        rx.close()
