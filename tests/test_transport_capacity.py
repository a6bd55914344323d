"""Capacity from probe-train dispersion: the pure estimator (edge/transport/capacity.py), the
probe packets, the sender's schedule, and ``tune`` taking the measured capacity instead of the
stream's own bitrate. (Real processes through rate limits: test_capacity_netns.py.)"""

from __future__ import annotations

import time

import numpy as np
import pytest

from edge.params import Telemetry, TransportParams
from edge.transport import capacity as cap
from edge.transport import rtp
from host import calibrate, ga

NS = 1_000_000_000


def _bottleneck(kbps: float, sizes: list[int], t0_ns: int = 0) -> list[int]:
    """Arrival times of packets sent back to back into an idle FIFO link of ``kbps``."""
    t, out = t0_ns, []
    for n in sizes:
        t += int(8 * n / (kbps * 1000) * NS)
        out.append(t)
    return out


@pytest.mark.parametrize("kbps", [80.0, 150.0, 300.0, 5000.0])
def test_one_train_through_a_bottleneck_gives_its_rate(kbps):
    size = cap.probe_size(kbps)
    m = cap.CapacityMeter()
    for train in range(cap.MIN_TRAINS):
        arrivals = _bottleneck(kbps, [size] * cap.TRAIN_PACKETS, train * 2 * NS)
        for i, t in enumerate(arrivals):
            m.probe(train, i, cap.TRAIN_PACKETS, t, size)
    assert m.trains == cap.MIN_TRAINS
    assert m.estimate(10 * NS) == pytest.approx(kbps, rel=1e-3)


def test_probe_size_spreads_a_train_over_the_target_time():
    for kbps in (80, 150, 300):
        size = cap.probe_size(kbps)
        spread = (cap.TRAIN_PACKETS - 1) * 8 * size / (kbps * 1000)
        assert spread == pytest.approx(cap.TARGET_SPREAD_S, rel=0.05) and size % 4 == 0
    assert cap.probe_size(1.0) == cap.MIN_PROBE_BYTES
    assert cap.probe_size(1e6) == cap.MAX_PROBE_BYTES


def test_stream_packets_inside_a_train_count_and_outside_do_not():
    """A 200-byte audio packet that arrives between two probes took link time as well."""
    m = cap.CapacityMeter(keep=1)
    m.packet(0, 10_000)  # before the train: not counted
    m.probe(0, 0, 3, 1 * NS, 100)
    m.packet(int(1.5 * NS), 200)  # inside
    m.probe(0, 1, 3, 2 * NS, 100)
    m.packet(int(2.5 * NS), 10_000)  # after the last probe (it arrived later): not counted
    m.probe(0, 2, 3, 3 * NS, 100)
    assert m.samples[0] == (pytest.approx(8 * (200 + 100 + 10_000 + 100) / 2 / 1000), 10_400)
    m2 = cap.CapacityMeter(keep=1)
    m2.probe(0, 0, 3, 1 * NS, 100)
    m2.packet(int(1.5 * NS), 200)
    m2.probe(0, 2, 3, 3 * NS, 100)
    m2.packet(int(3.5 * NS), 10_000)
    assert m2.samples[0] == (pytest.approx(8 * 300 / 2 / 1000), 300)


def test_lost_probes_and_lone_packets():
    m = cap.CapacityMeter()
    # last probe lost: the train is closed by the next one, or by the timeout
    m.probe(0, 0, 4, 0, 100)
    m.probe(0, 1, 4, NS // 100, 100)
    m.probe(1, 0, 4, 2 * NS, 100)  # a new train closes the old one
    assert [k for k, _ in m.samples] == [pytest.approx(80.0)]
    m.probe(1, 2, 4, 2 * NS + NS // 50, 200)
    m.estimate(2 * NS + cap.TRAIN_TIMEOUT_NS + 1)
    assert m.samples[-1] == (pytest.approx(80.0), 200)
    # a train of which only one packet came says nothing
    m.probe(2, 3, 4, 5 * NS, 100)
    assert m.trains == 2
    # a duplicated probe (right behind the original) is no gap of its own
    for i, t in enumerate(_bottleneck(80.0, [100] * 4, 6 * NS)):
        m.probe(3, i, 4, t, 100)
        if i == 1:
            m.probe(3, i, 4, t + 1000, 100)
    assert m.trains == 3 and m.samples[-1] == (pytest.approx(80.0), 300)


def test_the_median_shrugs_off_a_train_squeezed_or_stretched_by_a_busy_cpu():
    rng = np.random.default_rng(0)
    samples = [(v, 750) for v in 150 * (1 + 0.01 * rng.standard_normal(9))]
    samples[2], samples[5] = (400.0, 750), (20.0, 750)
    assert cap.estimate_kbps(samples) == pytest.approx(150, rel=0.02)
    assert cap.estimate_kbps(samples[:cap.MIN_TRAINS - 1]) == 0.0


def test_longer_trains_weigh_more():
    """Two small startup trains squeezed by 3 ms, one train of the target size: the weighted
    median is the large one (a plain median would be the squeezed ones)."""
    assert cap.estimate_kbps([(362.0, 636), (360.0, 636), (300.0, 1500)]) == 300.0
    assert cap.estimate_kbps([(1.0, 1.0), (2.0, 1.0), (3.0, 1.0)]) == 2.0


def test_probe_schedule_startup_then_every_two_seconds():
    trains, last, at = 0, 0, []
    for frame in range(1, 50 * 10 + 1):
        if cap.probe_due(frame, trains, last, 50):
            trains, last = trains + 1, frame
            at.append(frame)
    assert at[:4] == [10, 35, 60, 160]
    assert np.all(np.diff(at[2:]) == 100)
    # the overhead the module docstring states: 4/3 x 40 ms / 2 s of the link
    overhead = cap.TRAIN_PACKETS / (cap.TRAIN_PACKETS - 1) * cap.TARGET_SPREAD_S \
        / cap.PROBE_PERIOD_S
    assert overhead == pytest.approx(0.027, abs=0.001)


def test_probe_packets_round_trip_and_are_rtcp():
    pkt = rtp.pack_probe(0x1234, 7, 2, 4, 212)
    assert len(pkt) == 212 and rtp.is_rtcp(pkt)
    pt, name, ssrc, body = rtp.parse_app(pkt)
    assert (pt, name, ssrc) == (rtp.RTCP_APP, rtp.APP_PROBE, 0x1234)
    assert rtp.parse_probe(body) == (7, 2, 4)
    with pytest.raises(ValueError):
        rtp.pack_probe(1, 0, 0, 4, 10)
    for bad in ({"train": 1, "i": 4, "n": 4}, {"train": 1, "i": True, "n": 4},
                {"train": -1, "i": 0, "n": 4}, {"i": 0, "n": 4}, {"train": 0, "i": 0, "n": 999}):
        with pytest.raises(rtp.RtpError):
            rtp.parse_probe(bad)


def _records(capacity_kbps: float, n: int = 20, bitrate: int = 64) -> list[calibrate.Record]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        out.append(calibrate.Record(Telemetry(
            t=1000.0 + i, latency_ms=20 + rng.normal(0, 1), loss_pct=0.0,
            jitter_ms=2 + abs(rng.normal(0, 0.3)),
            bandwidth_util=bitrate / capacity_kbps if capacity_kbps else 1.0,
            snr_db=25 + rng.normal(0, 0.5), bitrate_kbps=float(bitrate),
            capacity_kbps=capacity_kbps if i else 0.0),  # the first second: no estimate yet
            TransportParams(bitrate_kbps=bitrate)))
    return out


@pytest.mark.parametrize("limit", [80, 150, 300])
def test_tune_keeps_the_bitrate_below_the_measured_capacity(limit):
    res = calibrate.tune(_records(float(limit)), cfg=ga.GAConfig(seed=0),
                         pins={"protocol": "udp"})
    assert all(c.capacity_kbps == pytest.approx(limit) for c in res.model.conditions)
    assert res.params.bitrate_kbps * res.params.share < limit


def test_without_a_measurement_tune_falls_back_to_the_bitrate_and_capacity_overrides():
    old = _records(0.0)  # an older telemetry file: utilisation of the stream's own bitrate
    res = calibrate.tune(old, cfg=ga.GAConfig(seed=0), pins={"protocol": "udp"})
    assert all(c.capacity_kbps == pytest.approx(64.0) for c in res.model.conditions)
    given = calibrate.tune(old, cfg=ga.GAConfig(seed=0), pins={"protocol": "udp"},
                           capacity_kbps=300.0)
    assert given.model.conditions[0].capacity_kbps == 300.0
    assert given.params.bitrate_kbps > res.params.bitrate_kbps


def test_sender_and_receiver_through_a_rate_limit():
    """In one process over loopback (the real processes: test_capacity_netns.py): the
    probes are not stream packets (no loss, no bitrate), each train's sample comes back at once
    and sizes the next train, and the receiver's estimate is the emulator's rate."""
    import socket

    from edge.transport.receiver import Receiver
    from edge.transport.sender import Sender, send_file
    from host.emulate import Impairment, UdpEmulator

    rx = Receiver("127.0.0.1:0", TransportParams(), keep_audio=False)
    emu = UdpEmulator("127.0.0.1:0", f"127.0.0.1:{rx.port}", Impairment(rate_kbit=150))
    tx = Sender(f"udp://127.0.0.1:{emu.listen[1]}", TransportParams())
    t = np.arange(16_000 * 4) / 16_000
    x = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    try:
        send_file(x[: 16_000 * 2], tx)
        # a forged probe from another port, and one with a bad body: neither is measured
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(rtp.pack_probe(tx.ssrc, 99, 0, 4, 200), ("127.0.0.1", rx.port))
        bad = rtp.pack_app(rtp.APP_PROBE, tx.ssrc, {"train": "x", "i": 0, "n": 4})
        tx._link.send(bad)
        send_file(x[16_000 * 2:], tx)
        time.sleep(0.5)
        tx.close()
        assert rx.wait(5.0)
    finally:
        tx.close()
        rx.close()
        truth = emu.stop()
    s = rx.summary()
    assert s["lost"] == 0 and s["expected"] == tx.packets == 200
    assert truth["rtp"]["packets_in"] == 200 and truth["loss_pct"] == 0
    assert tx.trains == 4 and s["probes"] == tx.probe_packets == 4 * tx.trains
    assert s["malformed"] == 1 and s["capacity_trains"] == tx.trains
    assert s["capacity_kbps"] == pytest.approx(150, rel=0.15)
    assert tx.train_kbps == pytest.approx(150, rel=0.15)
    assert tx.measured_capacity_kbps == pytest.approx(150, rel=0.15)
    # the startup trains: the first sized for 1.5 x the bitrate, the next by its sample
    assert tx.probe_bytes > 4 * cap.probe_size(96)
    recs = [r for r in rx.telemetry.window(60) if r.bitrate_kbps > 10]
    assert all(r.bandwidth_util < 0.6 for r in recs[1:])


@pytest.mark.parametrize("late", [0, 1, 2, 3])
def test_a_probe_held_up_by_a_busy_cpu_does_not_move_the_sample(late):
    """4 probes of 500 bytes through 300 kbit/s (13.3 ms apart); one leaves the emulator 5 ms
    late. The whole train's spread would read up to 11 % off; the median gap reads exact."""
    times = _bottleneck(300.0, [500] * 4)
    times[late] += 5_000_000
    probes = [(t, 500) for t in times]
    assert cap.train_sample_kbps(probes, []) == pytest.approx(300.0, rel=1e-3)
    span = cap.train_capacity_kbps(min(times), max(times), 1500)
    assert late in (1, 2) or span != pytest.approx(300.0, rel=0.05)
