"""Fault synthesis, measurement, events and the mixer (pure DSP, no model)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import welch

from edge.faults import FAULT_TYPES
from edge.faults.events import (
    Event,
    EventConfig,
    EventTracker,
    events_from_json,
    events_to_json,
    frames_to_events,
)
from edge.faults.measure import dc_step_edges, howl_frequency, hum_fundamental, measure, zero_runs
from edge.faults.mixer import Mixer, fix, spectral_gate
from edge.faults.strategies import Strategies
from training.faults_synth import CLIP_MIN_SAMPLES, Synth, frame_labels, inject

SR = 16_000


@pytest.fixture(scope="module")
def synth(shared_data):
    return Synth("test", 6.0, shared=shared_data.parent)


@pytest.fixture(scope="module")
def programme(synth):
    """6 s of held-out speech + room noise, the fault-free reference."""
    return synth.programme(np.random.default_rng(11))


def sisdr(ref: np.ndarray, est: np.ndarray) -> float:
    ref, est = ref.astype(np.float64), est.astype(np.float64)
    a = np.dot(est, ref) / np.dot(ref, ref)
    return float(10 * np.log10(np.sum((a * ref) ** 2) / np.sum((est - a * ref) ** 2)))


# ------------------------------------------------------------------------------ synthesis
def test_synth_is_deterministic_and_labels_are_exact(synth):
    a, b = synth.clip(5), synth.clip(5)
    assert np.array_equal(a.audio, b.audio) and a.faults == b.faults
    assert not np.array_equal(a.audio, synth.clip(6).audio)
    for seed in range(12):
        c = synth.clip(seed)
        # soft clipping bends every sample a little; its label spans the samples it squashed
        # by >= 24 % (input over the clip level), below that it bends them by < 0.24 x level
        tol = max([1e-7] + [0.24 * f.params["threshold"] for f in c.faults
                            if f.kind == "clipping"])
        changed = np.flatnonzero(np.abs(c.audio - c.clean) > tol)
        if not c.faults:
            assert changed.size == 0
            continue
        assert changed.size
        lo, hi = min(f.start for f in c.faults), max(f.end for f in c.faults)
        assert changed[0] >= lo and changed[-1] < hi  # nothing changes outside the labels


@pytest.mark.parametrize("kind", FAULT_TYPES)
def test_each_fault_changes_only_its_span(programme, kind):
    s, e = 24_000, 24_000 + (1600 if kind == "dropout" else 16_000)
    y, f = inject(programme, kind, s, e, seed=2)
    assert f.kind == kind and s <= f.start < f.end <= e
    tol = 0.24 * f.params["threshold"] if kind == "clipping" else 1e-7
    d = np.flatnonzero(np.abs(y - programme) > tol)
    assert d[0] >= f.start and d[-1] < f.end
    lab = frame_labels([f], len(y) // 160 + 1)
    on = np.flatnonzero(lab[:, FAULT_TYPES.index(kind)])
    assert abs(on[0] * 160 - f.start) <= 160 and abs(on[-1] * 160 - f.end) <= 160
    if kind == "clipping":  # labelled frames are exactly those whose window holds clipped
        over = np.zeros(len(y) + 480)  # samples (>= CLIP_MIN_SAMPLES of them)
        for a, b in f.params["runs"]:
            over[160 + a:160 + b] = 1
        want = [over[t * 160:t * 160 + 320].sum() >= CLIP_MIN_SAMPLES for t in range(len(lab))]
        assert np.array_equal(lab[:, FAULT_TYPES.index(kind)] > 0, np.array(want))
        assert np.all(np.abs(programme[np.flatnonzero(over[160:160 + len(y)])])
                      > f.params["threshold"])


def test_inject_rejects_bad_requests(programme):
    from edge.errors import HushlinkError
    with pytest.raises(HushlinkError, match="unknown fault"):
        inject(programme, "crackle", 0, 100)
    with pytest.raises(HushlinkError, match="outside"):
        inject(programme, "hum", 100, 10 ** 9)


# ---------------------------------------------------------------------------- measurement
def test_measurements_recover_the_injected_parameters(programme):
    y, f = inject(programme, "hum", 16_000, 48_000, seed=1, f0=59.87)
    assert hum_fundamental(y[16_000:48_000]) == pytest.approx(59.87, abs=0.05)
    y, f = inject(programme, "howl", 16_000, 40_000, seed=1, freq_hz=2345.6)
    assert howl_frequency(y[16_000:40_000]) == pytest.approx(2345.6, abs=1.0)
    y, f = inject(programme, "dc", 20_000, 50_000, seed=1, offset=-0.12)
    s, e, off = dc_step_edges(y, 20_000 + 500, 50_000 - 700)  # rough edges, ±40 ms
    assert abs(s - 20_000) <= 16 and abs(e - 50_000) <= 16 and off == pytest.approx(-0.12,
                                                                                    abs=0.005)
    y, f = inject(programme, "dropout", 30_000, 30_800, seed=1)
    assert zero_runs(y, 30_000 + 400, 30_800 + 400) == [(30_000, 30_800)]
    y, f = inject(programme, "rumble", 10_000, 40_000, seed=1, corner_hz=60.0)
    m = measure("rumble", y, 10_000, 40_000)
    assert 60.0 < m["corner_hz"] <= 300.0


# --------------------------------------------------------------------------------- events
def test_hysteresis_min_duration_and_merge():
    cfg = EventConfig(on=0.6, off=0.35, merge_gap_s=0.05, min_duration_s=0.06)
    p = np.zeros((300, len(FAULT_TYPES)), dtype=np.float32)
    hum = FAULT_TYPES.index("hum")
    p[50:80, hum] = 0.9
    p[80:90, hum] = 0.4   # above off: still the same event
    p[90:93, hum] = 0.1   # a 3-frame dip < merge gap: merged
    p[93:120, hum] = 0.8
    p[200:203, hum] = 0.9  # too short for hum
    drop = FAULT_TYPES.index("dropout")
    p[250, drop] = 0.95  # one frame is a valid dropout
    ev = frames_to_events(p, cfg)
    assert [(e.kind, round(e.start_s, 3), round(e.end_s, 3)) for e in ev] == [
        ("hum", 0.495, 1.195), ("dropout", 2.495, 2.505)]
    assert all(0 < e.confidence <= 1 for e in ev)
    # streaming in odd-sized pieces gives the same events as the whole file
    tr = EventTracker(cfg)
    got = []
    for i in range(0, 300, 37):
        got += tr.push(p[i:i + 37])
    assert sorted(got + tr.flush(), key=lambda e: e.start_s) == ev
    assert events_from_json(events_to_json(ev)) == [Event(**e.as_dict()) for e in ev]


# ---------------------------------------------------------------------------------- mixer
def _fix_one(programme, kind, s, e, **params):
    """Inject at [s, e), 'detect' it 30 ms off at both ends, measure and fix."""
    x, f = inject(programme, kind, s, e, seed=4, **params)
    rs, re_ = f.start + 480, f.end - 480 if f.end - f.start > 2000 else f.end + 480
    m = measure(kind, x, rs, re_)
    ev = Event(kind, m.get("start", rs) / SR, m.get("end", re_) / SR, 0.9, m)
    return x, f, fix(x, [ev], Strategies.load())


def _no_clicks(y, ref):
    """No sample-to-sample jump above the programme's own largest (2 % for filter ripple)."""
    assert np.abs(np.diff(y)).max() <= np.abs(np.diff(ref)).max() * 1.02


def test_fix_hum_notches_at_least_30_db(programme):
    x, f, y = _fix_one(programme, "hum", 24_000, 56_000, f0=50.2, snr_db=0.0)
    fx, px = welch(x[f.start:f.end], SR, nperseg=8192)
    _, py = welch(y[f.start:f.end], SR, nperseg=8192)
    i = int(np.argmin(np.abs(fx - 50.2)))
    assert 10 * np.log10(px[i] / py[i]) >= 30.0
    assert sisdr(programme, y) > sisdr(programme, x) + 3
    _no_clicks(y, programme)


def test_fix_dc_removed(programme):
    x, f, y = _fix_one(programme, "dc", 20_000, 60_000, offset=0.2)
    assert abs(np.mean(y[f.start:f.end]) - np.mean(programme[f.start:f.end])) < 0.002
    assert sisdr(programme, y) > sisdr(programme, x) + 10
    _no_clicks(y, programme)


def test_fix_rumble_below_corner_20_db(programme):
    x, f, y = _fix_one(programme, "rumble", 20_000, 60_000, corner_hz=70.0, snr_db=0.0)
    fx, px = welch(x[f.start:f.end], SR, nperseg=4096)
    _, py = welch(y[f.start:f.end], SR, nperseg=4096)
    below = fx < 70.0
    assert 10 * np.log10(px[below].sum() / py[below].sum()) >= 20.0
    assert sisdr(programme, y) > sisdr(programme, x) + 1
    _no_clicks(y, programme)


@pytest.mark.parametrize("kind,params", [("howl", {"freq_hz": 1234.0}), ("hiss", {"snr_db": 3}),
                                         ("clipping", {"mode": "hard", "level": 0.2}),
                                         ("dropout", {})])
def test_fix_improves_and_never_clicks(programme, kind, params):
    e = 24_000 + (480 if kind == "dropout" else 24_000)
    x, f, y = _fix_one(programme, kind, 24_000, e, **params)
    assert sisdr(programme, y) > sisdr(programme, x)
    _no_clicks(y, programme)
    if kind == "dropout":
        assert np.all(y[f.start:f.end] != 0.0)


def test_spectral_gate_leaves_clean_audio_mostly_alone(programme):
    y = spectral_gate(programme.astype(np.float64))
    assert sisdr(programme, y) > 15


def test_streaming_mixer_changes_settings_without_clicks(programme):
    m = Mixer(ramp_ms=30)
    x = programme.copy()
    hum_x, _ = inject(x, "hum", 0, len(x), seed=3, f0=50.0, snr_db=-5)
    out = []
    for i in range(0, len(x), 160):
        if i == 16_000:
            m.set(highpass_hz=80.0, notches=(50.0, 100.0, 150.0), gain_db=-3.0)
        if i == 48_000:
            m.set()
        out.append(m.process(hum_x[i:i + 160]))
    y = np.concatenate(out)
    assert len(y) == len(x)
    _no_clicks(y, hum_x)
    mid = y[24_000:44_000]  # settled: hum at 50 Hz well down
    t = np.arange(len(mid)) / SR
    a_in = abs(np.dot(hum_x[24_000:44_000], np.exp(-2j * np.pi * 50 * t)))
    a_out = abs(np.dot(mid, np.exp(-2j * np.pi * 50 * t)))
    assert 20 * np.log10(a_in / a_out) > 20


# ----------------------------------------------------------- live repairs (issue 19 item 1)

def _stream(stage, x, seed=0):
    """Feed x in random block sizes (as a sound card and a resampler deliver them)."""
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < len(x):
        n = int(rng.integers(40, 700))
        out.append(stage(x[i:i + n]))
        i += n
    return np.concatenate(out)


def test_capture_repair_fills_dropouts_and_declips_live(programme):
    from edge.faults.mixer import declip
    from edge.faults.repair import LOOKAHEAD, CaptureRepair

    L = LOOKAHEAD
    x, f = inject(programme, "dropout", 24_000, 24_800)  # 50 ms of exact zeros
    x, c = inject(x, "clipping", 48_000, 72_000, seed=1, mode="hard", level=0.25)
    rep = CaptureRepair()
    y = _stream(rep, x)
    assert len(y) == len(x) - L  # y[i] is x[i] repaired, emitted L samples later
    ref, xin = programme[:len(y)], x[:len(y)]
    assert rep.counts["dropout"] == 1 and rep.counts["clipping"] > 0
    # a forward prediction fading out over 20 ms, and (its end is only seen LOOKAHEAD samples
    # ahead) a backward one fading in just before the audio resumes; _no_clicks below
    assert np.all(y[f.start:f.start + 300] != 0.0) and np.all(y[f.end - 16:f.end] != 0.0)
    thr = c.params["threshold"]
    seg = slice(48_000, 72_000)
    flat = lambda s: int(np.sum((np.abs(s[1:]) == np.abs(s[:-1]))  # noqa: E731
                                & (np.abs(s[1:]) >= 0.99 * thr)))
    off = declip(x.astype(np.float64), thr)  # the offline repair of the same run
    assert flat(xin[seg]) > 100 and flat(y[seg]) <= flat(off[seg]) + 5 < 0.5 * flat(xin[seg])
    assert sisdr(ref[seg], y[seg]) > sisdr(ref[seg], xin[seg]) + 3.0  # measured +4.6 dB
    assert sisdr(ref[seg], y[seg]) > sisdr(ref[seg], off[seg][:len(y)]) - 0.2
    assert sisdr(ref, y) > sisdr(ref, xin)
    _no_clicks(y, programme)
    # clean audio goes through untouched (only delayed): no false repairs
    clean = CaptureRepair()
    z = _stream(clean, programme, seed=3)
    np.testing.assert_array_equal(z, programme[:len(z)])
    assert clean.counts == {"dropout": 0, "clipping": 0}


def test_live_hiss_gate_from_a_hiss_event(programme):
    """A hiss event (live_settings -> expand_below_db) turns on the streaming downward
    expander: the hiss between words drops, the speech stays, no clicks."""
    from edge.faults.events import Event

    x, f = inject(programme, "hiss", 0, len(programme), seed=2, snr_db=10, colour="white")
    hiss = x - programme
    floor = float(10 * np.log10(np.mean(hiss ** 2)))
    settings = Strategies.load().live_settings(
        [Event("hiss", 0.0, 6.0, 0.9, {"floor_dbfs": round(floor, 1)})])
    assert settings == {"expand_below_db": round(floor + 6.0, 1)}
    m = Mixer()
    m.set(**settings)
    y = np.concatenate([m.process(x[i:i + 160]) for i in range(0, len(x), 160)])
    _no_clicks(y, x)
    e = np.convolve(programme ** 2, np.ones(320) / 320, "same")
    quiet, loud = e < np.percentile(e, 20), e > np.percentile(e, 80)
    quiet[:8000] = loud[:8000] = False  # after the strip's 30 ms fade-in
    gain_db = lambda m_: 10 * np.log10(np.mean(y[m_] ** 2) / np.mean(x[m_] ** 2))  # noqa: E731
    assert gain_db(quiet) < -4 and gain_db(loud) > -1.5  # measured -5.9 and -0.01 dB
