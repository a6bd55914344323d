"""Telemetry: the per-interval meter and the ring buffer / JSON-lines log the agent reads."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from edge.params import Telemetry
from edge.transport.telemetry import TelemetryLog, TelemetryMeter


def _t(t, **kw):
    return Telemetry(t=t, latency_ms=kw.get("lat", 40.0), loss_pct=1.0, jitter_ms=2.0,
                     bandwidth_util=0.9, snr_db=20.0)


def test_ring_buffer_keeps_the_last_minutes_and_windows(tmp_path):
    log = TelemetryLog(tmp_path / "t.jsonl", minutes=1)
    for s in range(200):
        log.append(_t(1000.0 + s))
    assert len(log) == 61  # the last minute, inclusive
    w = log.window(10)
    assert [x.t for x in w] == [1190.0 + i for i in range(10)]
    assert log.records()[-1]["t"] == 1199.0 and len(log.records()) == 61
    log.close()
    lines = (tmp_path / "t.jsonl").read_text().splitlines()
    assert len(lines) == 200 and json.loads(lines[-1])["t"] == 1199.0


def test_another_process_reads_the_same_window(tmp_path):
    p = tmp_path / "t.jsonl"
    log = TelemetryLog(p)
    for s in range(30):
        log.append(_t(100.0 + s, lat=float("nan") if s == 29 else 40.0))
    with open(p, "a") as fh:
        fh.write('{"t": 13')  # a record being written right now
    code = ("import sys; from edge.transport.telemetry import TelemetryLog as L; "
            f"w = L.read_window({str(p)!r}, 5); print(len(w), w[-1].t, w[-1].latency_ms)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["5", "129.0", "nan"]
    assert "NaN" not in p.read_text()  # strict JSON: an interval with no packets is null
    log.close()


def test_unwritable_log_is_a_clear_error(tmp_path):
    from edge.errors import HushlinkError

    with pytest.raises(HushlinkError, match="cannot write telemetry"):
        TelemetryLog(tmp_path / "missing" / "t.jsonl")


def test_meter_interval_values():
    m = TelemetryMeter()
    t0 = 1_000_000_000_000
    for k in range(50):
        if k in (10, 20):
            continue
        send = t0 + k * 20_000_000
        m.packet(k, k * 960, send, send + 40_000_000, 200)
        m.audio(np.full(320, 0.1 if k % 2 else 0.001, np.float32))
    m.packet(5, 5 * 960, 0, t0 + 41_000_000, 200)  # a duplicate: not counted again
    tel = m.take(t0 / 1e9 + 1.0, late=1, concealed=2, allocated_kbps=80.0)
    assert tel.latency_ms == pytest.approx(40.0)
    assert tel.loss_pct == pytest.approx(4.0)
    assert tel.jitter_ms == pytest.approx(0.0, abs=1e-6)
    # 49 packets on the wire (the duplicate too) since the first arrival, 0.96 s before
    assert tel.bitrate_kbps == pytest.approx(8 * 49 * 200 / 1000 / 0.96)
    assert tel.bandwidth_util == pytest.approx(tel.bitrate_kbps / 80.0)
    assert (tel.late, tel.concealed) == (1, 2)
    assert tel.snr_db > 30
    nxt = m.take(t0 / 1e9 + 2.0, late=1, concealed=2, allocated_kbps=80.0)
    assert math.isnan(nxt.latency_ms) and (nxt.late, nxt.concealed, nxt.loss_pct) == (0, 0, 0)
