"""The serial agent's ``get_status``: the device's PTP clock and live denoiser in one small
reply, so that a host (``host-calibrate dashboard``) can watch them once a second over the
control link alone.

Imported by ``edge.agent`` (``EXTENSIONS``). ``clock``: one row per ``edge-denoise clock``
instance under the run directory (``HUSHLINK_RUN_DIR``); ``live``: what ``edge-denoise live
--state-dir`` (same state directory as ``serve``) last wrote to ``live.json``, or None.
"""

from __future__ import annotations

import time

from edge.agent import Agent, handler

CLOCK_KEYS = ("iface", "role", "port_state", "lock", "offset_ns", "path_delay_ns",
              "offset_rms_ns", "reason")


def clock_rows() -> list[dict]:
    from edge.clock.cli import read_status
    from edge.errors import HushlinkError

    try:
        return [{k: r.get(k) for k in CLOCK_KEYS} for r in read_status(None)]
    except HushlinkError:  # no clock instance: an empty list, not an error
        return []


def live_status(state_dir) -> dict | None:
    from edge.liveslot import brief, read_status

    st = read_status(state_dir)
    if st is None:
        return None
    out = brief(state_dir) or {}
    w = st.get("window") or {}
    out.update(bypass=st.get("bypass"), hop_cpu_ms=w.get("hop_cpu_ms"),
               hops=w.get("hops"), transport=st.get("transport"),
               bundle_state=st.get("bundle_state"), audio_s=st.get("audio_s"))
    return out


@handler("get_status")
def _get_status(agent: Agent, args: dict) -> dict:
    return {"t": time.time(), "clock": clock_rows(), "live": live_status(agent.state_dir)}
