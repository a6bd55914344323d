"""The demo's own measurements (host/system/demo.py); the demo itself is `make system-demo`
(root, a few minutes), its numbers in benchmarks/results/system_demo.md."""

import numpy as np
import pytest

from host.system.demo import RATE, hum_dbfs, hum_signal, ok, pesq_windows, table


def test_hum_level_is_the_hum_alone():
    hum = hum_signal(2.0, rms=0.1)
    assert hum_dbfs(hum) == pytest.approx(-20.0, abs=0.3)  # 20 log10(0.1)
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(2 * RATE)).astype(np.float32)
    # white noise at the same level puts ~8 Hz of its 8 kHz in the lines: ~-30 dB
    assert hum_dbfs(noise) < -45
    assert hum_dbfs(noise + hum) == pytest.approx(-20.0, abs=0.5)
    assert hum_dbfs(hum_signal(2.0, rms=0.1, f0=60.0)) < -45  # 60 Hz hum is not in 50 Hz lines


def test_pesq_windows_align_each_piece_of_a_looping_reference():
    t = np.arange(4 * RATE) / RATE
    phase = 2 * np.pi * np.cumsum(140 + 30 * np.sin(2 * np.pi * 0.5 * t)) / RATE
    clean = (0.1 * sum(np.sin(k * phase) / k for k in range(1, 20))
             * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32)
    looped = np.concatenate([clean[RATE:], np.zeros(80, np.float32), clean, clean])  # a gap
    w = pesq_windows(clean, looped, seconds=3.0)
    assert len(w) == 3 and min(w) > 4.0  # the received copy is the reference itself


def test_report_and_verdict():
    res = {"devices": 2, "processes": 15, "up_s": 14.0, "total_s": 180.0, "cores": 2,
           "load_average": [1.0, 1.0, 1.0], "crashed": [],
           "down": {"seconds": 7.0, "left_behind": {}},
           "ptp": {"1 before": {"device": 1, "phase": "before", "seconds": 30,
                                "ports": {"UNCALIBRATED": 30}, "offset_median_abs_us": 8.0,
                                "offset_max_abs_us": 12.0}},
           "push": {"rc": 0, "via": "fleet", "version": "2.0.0+sim.2",
                    "devices": [{"device": 1, "status": "ok", "seconds": 3.0}]},
           "hum": {"device": 2, "events": [], "injected_dbfs": -22.0,
                   "received_before_dbfs": -48.0, "received_first_s_dbfs": -32.0,
                   "received_rest_median_dbfs": -52.0}}
    md = table(res)
    assert "| PTP offset device 1, before: median / max abs | 8.0 / 12.0 µs" in md
    assert "d1 ok 3.0 s" in md and "-22.0 → -48.0 / -32.0 / -52.0 dBFS" in md
    assert ok(res) == ["no hum event", "no calibration"]
