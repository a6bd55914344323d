"""The shipped int8 fault classifier on held-out speech: endpoints, types, false alarms."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge.faults import FAULT_TYPES
from edge.faults.cli import analyse
from edge.faults.detect import FaultMonitor, TFLiteFaultModel, frame_probs
from edge.model import ModelError
from training.faults_synth import Synth, inject

SR = 16_000
MODEL = os.environ.get("HUSHLINK_FAULT_MODEL")  # default: the shipped edge/models/faults.tflite
# (start, end) in samples per kind, inside 5 s of held-out programme
SPANS = {"dropout": (32_000, 33_600), "dc": (24_000, 48_000)}
PARAMS = {"clipping": {"mode": "hard", "level": 0.25}}
MAX_FALSE_ALARMS_PER_MIN = 0.6  # measured: 1 event in these 5 min, 8 in the benchmark's 30


@pytest.fixture(scope="module")
def model():
    return TFLiteFaultModel(MODEL)


@pytest.fixture(scope="module")
def synth(shared_data):
    return Synth("test", 5.0, shared=shared_data.parent)


@pytest.mark.parametrize("kind", FAULT_TYPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_each_fault_is_found_with_endpoints_within_50ms(model, synth, kind, seed):
    prog = synth.programme(np.random.default_rng(100 + seed))
    s, e = SPANS.get(kind, (24_000, 48_000))
    x, f = inject(prog, kind, s, e, seed=seed, **PARAMS.get(kind, {}))
    events, clip = analyse(x, model)
    same = [ev for ev in events if ev.kind == kind]
    assert same, f"{kind} not detected; got {[(v.kind, v.start_s, v.end_s) for v in events]}"
    if kind == "clipping":  # bursts: the loud syllables, one event per passage of them
        inside = [v for v in same if v.start_s < f.end / SR and v.end_s > f.start / SR]
        ev = replace(inside[0], end_s=inside[-1].end_s) if inside else same[0]
    else:
        ev = min(same, key=lambda v: abs(v.start_s - f.start / SR))
    assert abs(ev.start_s - f.start / SR) <= 0.05, (ev, f)
    assert abs(ev.end_s - f.end / SR) <= 0.05, (ev, f)
    assert clip[kind] >= 0.5
    inside = [v for v in events if v.start_s < f.end / SR and v.end_s > f.start / SR]
    cover = {k: sum(min(v.end_s, f.end / SR) - max(v.start_s, f.start / SR)
                    for v in inside if v.kind == k) for k in FAULT_TYPES}
    assert max(cover, key=cover.get) == kind  # the right type dominates the span


def test_clean_speech_gives_no_events(model, synth):
    """False alarms over 5 minutes of held-out speech (10 minutes: benchmarks/faults.py)."""
    n_clips, found = 60, []
    for i in range(n_clips):
        x = synth.programme(np.random.default_rng(5000 + i))
        events, _ = analyse(x, model)
        found += [(i, ev.kind, round(ev.start_s, 2)) for ev in events]
    minutes = n_clips * 5 / 60
    print(f"false alarms: {len(found)} in {minutes:.1f} min of clean speech: {found}")
    # The target is none; the shipped model is close but not there (README,
    # benchmark: 0 in the first 10 minutes, 8 in 30): the held-out noise recordings hold real
    # beeps, a mains tone and noise bursts that are howl, hum and hiss to any listener. The
    # bound (3 in 5 minutes) leaves room for int8 rounding across machines.
    assert len(found) <= MAX_FALSE_ALARMS_PER_MIN * minutes, found


def test_coarse_precheck_removes_false_alarms_and_keeps_faults(model, shared_data):
    """Issue 19 item 1: clean held-out speech where the classifier and the measurement both
    let a beep, a noise burst or a loud vowel through as howl, hum, hiss or clipping (10 of
    the benchmark's 11 false alarms in 60 minutes) gives no event once the coarse pre-check
    runs first; injected faults of 0.35 s and 1 s are still found."""
    clean = Synth("test", 5.0, shared=shared_data.parent)
    for i in (134, 233, 242, 259, 327, 360, 653, 676):
        x = clean.programme(np.random.default_rng(900_000 + i))
        before, _ = analyse(x, model, coarse=False)
        after, _ = analyse(x, model)
        assert before and not after, (i, before, after)
    prog = clean.programme(np.random.default_rng(31))
    for kind in ("howl", "hum", "hiss", "clipping"):
        for n in (5_600, 16_000):  # 0.35 s and 1 s
            x, _ = inject(prog, kind, 24_000, 24_000 + n, seed=5,
                          **({"mode": "hard"} if kind == "clipping" else {}))
            events, _ = analyse(x, model)
            assert any(e.kind == kind for e in events), (kind, n, events)


def test_streaming_monitor_matches_the_file_path(model, synth):
    prog = synth.programme(np.random.default_rng(7))
    x, f = inject(prog, "hum", 16_000, 56_000, seed=3)
    offline, _ = frame_probs(x, model, model.info.block, model.info.step)
    mon = FaultMonitor(model)
    events = []
    for i in range(0, len(x), 480):  # 30 ms blocks, as a sound card delivers them
        events += mon.push(x[i:i + 480])
    events += mon.flush()
    hum = [e for e in events if e.kind == "hum"]
    assert hum and abs(hum[0].start_s - 1.0) <= 0.06 and abs(hum[0].end_s - 3.5) <= 0.06
    # the same probabilities, frame for frame, as the whole-file path
    st = FaultMonitor(model)
    st.tracker.push = lambda p: (probs.append(p), [])[1]  # capture the stitched frames
    probs: list[np.ndarray] = []
    for i in range(0, len(x), 480):
        st.push(x[i:i + 480])
    st.stitcher.flush()
    got = np.concatenate(probs)
    n = min(len(got), len(offline)) - model.info.block  # the tail differs by the final pad
    assert np.allclose(got[:n], offline[:n], atol=1e-5)


def test_model_files_are_checked(tmp_path, model):
    with pytest.raises(ModelError, match="not found"):
        TFLiteFaultModel(tmp_path / "missing.tflite")
    bad = tmp_path / "faults.tflite"
    bad.write_bytes(Path(model.path).read_bytes()[:-10] + b"0123456789")
    (tmp_path / "faults.json").write_text(Path(model.path).with_suffix(".json").read_text())
    with pytest.raises(ModelError, match="sha256"):
        TFLiteFaultModel(bad)
    (tmp_path / "faults.json").write_text("{not json")
    with pytest.raises(ModelError, match="JSON"):
        TFLiteFaultModel(bad)


def test_live_monitor_drives_the_streaming_mixer(model, synth):
    """The live-loop API: FaultMonitor.push/active → Strategies.live_settings → Mixer."""
    from edge.faults.mixer import Mixer
    from edge.faults.strategies import Strategies

    prog = synth.programme(np.random.default_rng(21))
    x, f = inject(prog, "hum", 8_000, 72_000, seed=2, f0=50.0, snr_db=-3.0)
    mon, mixer, strat = FaultMonitor(model), Mixer(), Strategies.load()
    out, closed, seen = [], [], set()
    for i in range(0, len(x), 160):
        closed += mon.push(x[i:i + 160])
        if i % 1600 == 0:  # re-plan ten times a second, as a live loop would
            settings = strat.live_settings(mon.active())
            seen.add(tuple(sorted(settings)))
            mixer.set(**settings)
        out.append(mixer.process(x[i:i + 160]))
    y = np.concatenate(out)
    assert ("notches",) in seen
    seg = slice(40_000, 70_000)  # the hum has been on for > 1 s: notches are in
    t = np.arange(30_000) / SR
    ratio = abs(np.dot(x[seg], np.exp(-2j * np.pi * 50 * t))) / abs(
        np.dot(y[seg], np.exp(-2j * np.pi * 50 * t)))
    assert 20 * np.log10(ratio) >= 20
    assert np.abs(np.diff(y)).max() <= np.abs(np.diff(x)).max() * 1.02


def test_live_loop_fix_faults_logs_and_removes_hum(synth, tmp_path):
    """`live --fix-faults` path: the loop's post stage detects hum, logs it, notches it out."""
    import json

    from edge.denoise import Denoiser
    from edge.dsp import FrontEnd
    from edge.faults.live import LiveFaultFixer
    from edge.live import LiveLoop, LoopConfig
    from edge.sinks import CallbackSink
    from edge.sources import FileSource

    class Bypass:  # the loop's model stage is not under test here
        front_end = FrontEnd()

        def init_state(self):
            return [np.zeros((1, 1), dtype=np.float32)]

        def step(self, features, state):
            return np.ones(161, dtype=np.float32), state

    x, _ = inject(synth.programme(np.random.default_rng(21)), "hum", 8_000, 72_000, seed=2,
                  f0=50.0, snr_db=-3.0)
    got, log = [], tmp_path / "events.jsonl"
    fixer = LiveFaultFixer(log)
    loop = LiveLoop(FileSource(x, SR, 160, speed=0.0), Denoiser(Bypass()),
                    [CallbackSink(got.append)], LoopConfig(queue_blocks=4096), post=fixer,
                    pre=fixer.pre)
    s = loop.run()
    assert s["error"] is None
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert events == fixer.events and "hum" in {e["kind"] for e in events}
    y = np.concatenate(got)
    seg = slice(40_000, 70_000)  # hum on for > 1 s: the notches are in
    t = np.arange(30_000) / SR
    tone = np.exp(-2j * np.pi * 50 * t)
    assert 20 * np.log10(abs(np.dot(x[seg], tone)) / abs(np.dot(y[seg], tone))) >= 20


def test_live_fix_faults_sees_what_the_denoiser_hides(synth, tmp_path):
    """Issue 19 item 1, its clip (hum, clipping, a dropout, DC) through the live loop with the
    shipped denoiser: the capture monitor finds all four (watching the denoised output found
    only clipping and the dropout), the background monitor (the residual X·(1−m)) finds the
    hum and the DC the denoiser removed; each event is logged with its source and the host
    reads them with get_events; dropout and clipping are repaired before the denoiser."""
    import json

    from edge.agent import FileTelemetry
    from edge.denoise import Denoiser
    from edge.faults.live import LiveFaultFixer
    from edge.live import LiveLoop, LoopConfig
    from edge.model import StepModel
    from edge.sinks import CallbackSink
    from edge.sources import FileSource

    prog = synth.programme(np.random.default_rng(21))
    prog = np.r_[prog, synth.programme(np.random.default_rng(22))[:48_000]]  # 8 s
    x, _ = inject(prog, "hum", 8_000, 40_000, seed=2, f0=50.0, snr_db=0.0)
    x, _ = inject(x, "clipping", 48_000, 72_000, seed=1, mode="hard", level=0.4)
    x, _ = inject(x, "dropout", 80_000, 80_800)
    x, _ = inject(x, "dc", 96_000, 120_000, offset=0.1)
    got, log = [], tmp_path / "events.jsonl"
    model = StepModel()
    fixer = LiveFaultFixer(log, delay_samples=model.front_end.overlap)
    loop = LiveLoop(FileSource(x, SR, 160, speed=0.0), Denoiser(model),
                    [CallbackSink(got.append)], LoopConfig(queue_blocks=4096), post=fixer,
                    pre=fixer.pre)
    assert loop.run()["error"] is None
    fixer.flush()
    seen = {(e["source"], e["kind"]) for e in fixer.events}
    assert {("capture", k) for k in ("hum", "clipping", "dropout", "dc")} <= seen, seen
    assert {("background", "hum"), ("background", "dc")} <= seen, seen
    for kind, t0, t1 in (("hum", 0.5, 2.5), ("dropout", 5.0, 5.05), ("dc", 6.0, 7.5)):
        ev = [e for e in fixer.events if e["kind"] == kind]  # on the capture's clock
        assert all(abs(e["start_s"] - t0) < 0.08 and abs(e["end_s"] - t1) < 0.08
                   for e in ev), ev
    recs = FileTelemetry(log, parse=dict).records()  # what get_events hands the host
    assert recs == [json.loads(line) for line in log.read_text().splitlines()]
    assert {r["source"] for r in recs} == {"capture", "background"}
    y = np.concatenate(got)
    lag = model.front_end.overlap  # output sample i + lag is capture sample i
    assert fixer.repair.counts["dropout"] == 1 and fixer.repair.counts["clipping"] > 0
    out = np.abs(y[80_000 + lag:80_800 + lag])
    assert np.sum(out < 1e-6) < 100  # filled (the bare denoiser leaves 482 of 800 at zero)


def test_live_events_pass_the_same_checks_as_offline(model, shared_data):
    """Issue 19 item 1: the live fixer applies the coarse pre-check and the measurement to
    each closed event, as `edge-denoise faults` does: a beep in clean held-out speech that
    the classifier calls a howl (benchmark clip 653) is not reported, a real hum is."""
    from edge.faults.live import LiveFaultFixer

    synth = Synth("test", 5.0, shared=shared_data.parent)
    clean = synth.programme(np.random.default_rng(900_653))
    hum, _ = inject(synth.programme(np.random.default_rng(8)), "hum", 16_000, 56_000, seed=1,
                    f0=50.0, snr_db=0.0)
    got = {}
    for name, x, confirm in (("clean", clean, True), ("clean_unchecked", clean, False),
                             ("hum", hum, True)):
        fixer = LiveFaultFixer(model=model, repair=False, confirm=confirm)
        for i in range(0, len(x), 480):
            fixer.pre(x[i:i + 480])
        fixer.flush()
        got[name] = {e["kind"] for e in fixer.events}
    assert "howl" in got["clean_unchecked"] and got["clean"] == set()
    assert "hum" in got["hum"]
