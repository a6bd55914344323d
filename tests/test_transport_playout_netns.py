"""Issue #19 item 2 with real processes: one sender, two receivers in their own network
namespaces behind different links (5 ms vs 40 ms ± 10 ms with 1% loss), both playing at PTP
time (``receive --playout ptp``) and recording. Their recordings must line up within one
sample at 48 kHz (±20.8 µs = 1/3 sample at 16 kHz) by cross-correlation, window by window,
and the source must play at its capture time + the link offset. 24 s here; the 5-minute run
is benchmarks/playout.py."""

from __future__ import annotations

import os
import shutil

import pytest
import soundfile as sf
from playout_rig import RATE, recording, run, source_error, speech, star, windows
from sandbox import need

pytestmark = [pytest.mark.slow, pytest.mark.root]
SECONDS = 24
OFFSET_MS = 150.0  # > 20 ms frame + 50 ms worst path + 20 ms lead, with room for a busy CPU
TOLERANCE = RATE / 48_000  # one sample at 48 kHz, in 16 kHz samples
LINKS = [["--delay", "5ms", "--jitter", "1ms"],
         ["--delay", "40ms", "--jitter", "10ms", "--loss", "1%"]]


@pytest.fixture(scope="module")
def nets():
    need(os.geteuid() == 0 and shutil.which("ip") is not None,
         "network namespaces need root and iproute2")
    with star(f"hp{os.getpid()}", 2) as (hub, spokes):
        yield hub, spokes


def test_two_receivers_play_in_step_at_ptp_time(nets, shared_data, tmp_path):
    hub, spokes = nets
    src = speech(shared_data, SECONDS)
    wav = tmp_path / "in.wav"
    sf.write(wav, src, RATE)
    # SCHED_FIFO as a device would run it: a loaded CI box must not stall the playout
    res = run(hub, spokes, tmp_path, wav, LINKS, OFFSET_MS, timeout_s=SECONDS + 60,
              rx_args=("--realtime-priority", "5"))
    near, far = res["receivers"]
    assert res["truths"][1]["rtp"]["dropped"] > 0  # the far link did lose packets
    frames = SECONDS * RATE // 320
    for rx in (near, far):
        assert rx["playout"] == "ptp" and rx["received"] >= 0.97 * frames, rx
        # decoded after its play time (silence instead): only when a loaded CPU stalls the
        # process for longer than the 20 ms lead (seen here: stalls of 0.4 s at load 7)
        assert rx["missed"] <= 0.1 * frames, rx
    assert far["fec"] + far["plc"] > 0  # its losses were concealed in place
    a, a0 = recording(near)
    b, b0 = recording(far)
    assert a0 == b0  # both recordings start on the same PTP second
    lags = windows(a, a0, b, b0, window_s=4.0)
    assert len(lags) >= 4, lags
    worst = max(abs(w["lag"]) for w in lags)
    assert worst <= TOLERANCE, lags
    # and where: the source plays at capture time + link offset (codec delay compensated)
    for rx in (near, far):
        err, peak = source_error(src, rx, res["sender"]["capture_start_ns"], OFFSET_MS)
        assert peak > 0.7 and abs(err) <= TOLERANCE, (err, peak)
