"""Pure parts of edge.clock: SPEC §5 math on synthetic exchanges with known truth, config
rendering, ethtool/pmc parsing and the monitor's lock decisions (times passed in)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.clock.config import (
    ClockError,
    make_config,
    parse_ethtool_t,
    phc2sys_argv,
    ptp4l_argv,
    render_ptp4l,
    require_linuxptp,
    run_dir_for,
    write_config,
)
from edge.clock.monitor import Monitor, PtpSample, last_freq_ppb, parse_pmc
from edge.clock.ptpmath import (
    drift_ppm,
    offset_ns,
    path_delay_ns,
    rms,
    simulate_exchanges,
    theil_sen,
)
from edge.clock.supervisor import Backoff
from edge.profile import DeviceProfile, PtpSettings


# --- SPEC §5 math ------------------------------------------------------------------------
def test_offset_and_delay_of_one_exchange():
    # master 0; slave 500 ns ahead; 2000 ns each way
    t1, t2 = 1_000, 1_000 + 2_000 + 500
    t3, t4 = 10_000, 10_000 - 500 + 2_000
    assert path_delay_ns(t1, t2, t3, t4) == 2_000
    assert offset_ns(t1, t2, t3, t4) == 500


@settings(max_examples=60, deadline=None)
@given(off=st.floats(-1e6, 1e6), delay=st.floats(0, 1e6), drift=st.floats(-100, 100))
def test_noiseless_exchanges_recover_truth(off, delay, drift):
    t_s, ts = simulate_exchanges(20, offset0_ns=off, delay_ns=delay, drift_ppm=drift)
    o = offset_ns(*ts.T)
    d = path_delay_ns(*ts.T)
    np.testing.assert_allclose(o, off + drift * 1e3 * t_s, atol=1e-3, rtol=1e-12)
    np.testing.assert_allclose(d, delay, atol=1e-3, rtol=1e-12)
    assert drift_ppm(t_s, o) == pytest.approx(drift, abs=1e-6)


def test_drift_is_robust_to_noise_and_outliers():
    """50 ns timestamp noise and 15% of trips queued 200 us: Theil–Sen stays within
    0.01 ppm of the truth where least squares is thrown off."""
    t_s, ts = simulate_exchanges(300, offset0_ns=3_000, delay_ns=5_000, drift_ppm=12.5,
                                 noise_ns=50, outlier_share=0.15, outlier_ns=200_000, seed=3)
    o = offset_ns(*ts.T)
    assert drift_ppm(t_s, o) == pytest.approx(12.5, abs=0.01)
    ls = np.polyfit(t_s, o, 1)[0] / 1e3
    assert abs(ls - 12.5) > 10 * abs(drift_ppm(t_s, o) - 12.5)
    d = path_delay_ns(*ts.T)
    assert np.median(d) == pytest.approx(5_000, abs=50)


def test_theil_sen_large_inputs_and_errors():
    x = np.arange(5_000.0)
    y = 3.0 * x + 7 + np.random.default_rng(1).normal(0, 1, x.size)
    y[::5] += 1e4  # 20% gross outliers
    slope, icpt = theil_sen(x, y)
    assert slope == pytest.approx(3.0, abs=1e-3) and icpt == pytest.approx(7, abs=1)
    with pytest.raises(ValueError, match="two"):
        theil_sen(np.array([1.0]), np.array([2.0]))
    with pytest.raises(ValueError, match="distinct"):
        theil_sen(np.ones(4), np.arange(4.0))
    assert rms(np.array([3.0, -3.0, np.nan])) == 3.0
    assert np.isnan(rms(np.array([])))


# --- config ------------------------------------------------------------------------------
VETH_T = """Time stamping parameters for veth0:
Capabilities:
\tsoftware-transmit
\tsoftware-receive
\tsoftware-system-clock
PTP Hardware Clock: none
Hardware Transmit Timestamp Modes: none
"""
HW_T = """Time stamping parameters for eth0:
Capabilities:
\thardware-transmit
\tsoftware-transmit
\thardware-receive
\tsoftware-receive
\tsoftware-system-clock
\thardware-raw-clock
PTP Hardware Clock: 0
Hardware Transmit Timestamp Modes:
\toff
\ton
"""


def test_ethtool_parsing():
    sw = parse_ethtool_t(VETH_T)
    assert (sw.hardware, sw.software, sw.phc_index, sw.mode) == (False, True, None, "software")
    hw = parse_ethtool_t(HW_T)
    assert (hw.hardware, hw.phc_index, hw.mode) == (True, 0, "hardware")


@pytest.mark.parametrize("profile", ["generic-linux", "rpi4", "rpi5", "jetson-orin-nano"])
@pytest.mark.parametrize("role", ["master", "slave"])
def test_config_from_profiles(profile, role, tmp_path, monkeypatch):
    monkeypatch.setenv("HUSHLINK_RUN_DIR", str(tmp_path))
    ptp = DeviceProfile.by_name(profile).ptp
    cfg = make_config(ptp, role, "eth7", timestamping="hardware")
    text = render_ptp4l(cfg)
    assert f"network_transport {ptp.transport}" in text
    assert f"delay_mechanism {ptp.delay_mechanism}" in text
    assert f"domainNumber {ptp.domain}" in text
    want = ptp.grandmaster_priority if role == "master" else ptp.priority1
    assert f"priority1 {want}\n" in text
    assert f"slaveOnly {int(role == 'slave')}" in text
    assert f"uds_address {tmp_path}/ptp-eth7/ptp4l.sock" in text
    assert "free_running" not in text
    assert cfg.use_phc2sys and "-H" in ptp4l_argv(cfg)
    argv = phc2sys_argv(cfg)
    assert argv[argv.index("-z") + 1] == str(cfg.uds)
    path = write_config(cfg)
    assert path == tmp_path / "ptp-eth7" / "ptp4l.conf" and path.read_text() == text


def test_free_running_software_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HUSHLINK_RUN_DIR", str(tmp_path))
    cfg = make_config(PtpSettings(), "slave", "veth3", timestamping="software",
                      free_running=True)
    assert "free_running 1" in render_ptp4l(cfg) and "time_stamping software" in \
        render_ptp4l(cfg)
    assert "-S" in ptp4l_argv(cfg) and not cfg.use_phc2sys
    assert run_dir_for("veth3") == tmp_path / "ptp-veth3"


def test_config_errors():
    with pytest.raises(ClockError, match="role"):
        make_config(PtpSettings(), "boss", "eth0", timestamping="software")
    with pytest.raises(ClockError, match="invalid interface"):
        run_dir_for("../etc")
    with pytest.raises(ClockError, match="install linuxptp"):
        require_linuxptp("ptp4l-no-such-tool")


# --- pmc parsing and lock state ----------------------------------------------------------
PMC_TEXT = """sending: GET CURRENT_DATA_SET
\t7e2a9e.fffe.8085a5-0 seq 0 RESPONSE MANAGEMENT CURRENT_DATA_SET
\t\tstepsRemoved     1
\t\toffsetFromMaster -403.0
\t\tmeanPathDelay    1961.0
sending: GET TIME_STATUS_NP
\t7e2a9e.fffe.8085a5-0 seq 1 RESPONSE MANAGEMENT TIME_STATUS_NP
\t\tmaster_offset              -403
\t\tingress_time               1795438030596925952
\t\tcumulativeScaledRateOffset +0.000000000
\t\tgmPresent                  true
\t\tgmIdentity                 b6ac16.fffe.0b65f5
sending: GET PORT_DATA_SET
\t7e2a9e.fffe.8085a5-1 seq 2 RESPONSE MANAGEMENT PORT_DATA_SET
\t\tportIdentity            7e2a9e.fffe.8085a5-1
\t\tportState               UNCALIBRATED
"""


def test_parse_pmc_and_freq_log(tmp_path):
    s = parse_pmc(PMC_TEXT, 5.0)
    assert (s.port_state, s.offset_ns, s.path_delay_ns, s.gm_identity, s.gm_present) == \
        ("UNCALIBRATED", -403.0, 1961.0, "b6ac16.fffe.0b65f5", True)
    assert s.ingress_ns == 1795438030596925952 and s.has_master
    assert parse_pmc("", 1.0).port_state is None
    log = tmp_path / "ptp4l.log"
    log.write_text("ptp4l[1.0]: master offset        403 s0 freq    +380 path delay 1961\n"
                   "ptp4l[2.0]: master offset       -12 s2 freq    -41 path delay 1960\n")
    assert last_freq_ppb(log) == -41.0
    assert last_freq_ppb(tmp_path / "missing.log") is None


def _sample(t, state="SLAVE", off=100.0, ingress=None):
    return PtpSample(t_s=t, port_state=state, offset_ns=off, path_delay_ns=2000.0,
                     ingress_ns=int(t * 1e9) if ingress is None else ingress,
                     gm_identity="aa.bb", gm_present=True)


def _mon(role="slave"):
    return Monitor("veth0", role, lock_threshold_ns=1000, holdover_s=10, window_s=60)


def test_lock_then_holdover_then_unlocked():
    m = _mon()
    for t in range(1, 5):
        m.add(_sample(float(t)))
    assert m.status().lock == "unlocked"  # fewer than 5 fresh offsets: not yet
    for t in range(5, 12):
        m.add(_sample(float(t), off=100.0 * (-1) ** t))
    st = m.status()
    assert st.lock == "locked" and st.offset_rms_ns == 100.0 and st.samples == 11
    # ptp4l stops answering Syncs (same ingress time): holdover for holdover_s, then unlocked
    for t in range(12, 20):
        m.add(_sample(float(t), ingress=11_000_000_000))
    assert m.status().lock == "holdover"
    for t in range(20, 25):
        m.add(_sample(float(t), ingress=11_000_000_000))
    st = m.status()
    assert st.lock == "unlocked" and st.age_s == 13


def test_uncalibrated_and_excursions_are_not_a_lock():
    m = _mon()
    for t in range(1, 30):
        m.add(_sample(float(t), state="UNCALIBRATED", off=50.0))
    st = m.status()
    assert st.lock == "unlocked" and "UNCALIBRATED" in st.reason and st.samples == 29
    m2 = _mon()
    for t in range(1, 30):
        m2.add(_sample(float(t), off=5_000.0 if t % 7 == 0 else 10.0))
    assert m2.status().lock in ("locked", "holdover")
    m2.add(_sample(30.0, off=1e6))
    assert m2.status().lock == "holdover"  # one big excursion: not locked, not yet lost
    empty = _mon().status(0.0)
    assert empty.lock == "unlocked" and empty.offset_ns is None and empty.drift_ppm is None


def test_drift_from_the_window_and_master_role():
    m = _mon()
    for t in range(1, 40):
        m.add(_sample(float(t), off=50.0 + 250.0 * t))  # 250 ns/s = 0.25 ppm
    assert m.status().drift_ppm == pytest.approx(0.25, abs=1e-6)
    assert len(m.offsets()[0]) == 39
    mm = _mon("master")
    mm.add(PtpSample(t_s=1.0, port_state="MASTER", gm_identity="aa.bb"))
    assert mm.status().lock == "master"
    first = _mon()
    first.add(PtpSample(t_s=1.0, port_state="UNCALIBRATED", offset_ns=0.0, path_delay_ns=0.0,
                        ingress_ns=5, gm_present=True))
    assert first.status().samples == 0  # ptp4l's 0/0 before the first delay measurement


def test_restart_backoff_doubles_caps_and_resets():
    b = Backoff(base_s=0.5, max_s=4.0, stable_s=30.0)
    assert [b.next_delay(1.0) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert b.next_delay(31.0) == 0.5  # ran long enough: a fresh failure, not a crash loop
