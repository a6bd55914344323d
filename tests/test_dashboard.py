"""``host-calibrate dashboard`` in a real headless Chromium (tests/browser.py), against the
simulated source (host/dashboard/sources.py FakeSource): the page loads, its values follow
the link, plots redraw every second, an applied parameter and a pushed bundle show. The
same page against a real system: tests/test_system.py."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest
from browser import chromium_page
from click.testing import CliRunner

from host.cli import cli
from host.dashboard.app import Background
from host.dashboard.sources import FakeSource, device_view

pytestmark = pytest.mark.slow


@pytest.fixture
def fake():
    src = FakeSource(2, seed=1)
    srv = Background(src, period_s=0.5)
    yield src, srv.url
    srv.stop()


def _post(url: str, body) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _number(page, sel: str, k: int = 1) -> float:
    """The ``k``-th number of an element's text (``2.93 ms / 25.0 % / ...``: k=1 is 25.0)."""
    return float(page.inner_text(sel).replace("/", " ").split()[2 * k])


def test_page_follows_the_link_and_shows_applied_params(fake):
    src, url = fake
    with chromium_page() as page:
        page.goto(url)
        page.wait_for_function("document.body.dataset.updates >= 2", timeout=20_000)
        assert page.inner_text("#d1-ptp").startswith("UNCALIBRATED")
        assert _number(page, "#d1-link") < 3  # loss %, unimpaired
        blank = page.evaluate("document.getElementById('d1-plot-loss').toDataURL()")
        src.impair(1, 30.0)
        page.wait_for_function(
            "parseFloat(document.getElementById('d1-link').textContent.split('/')[1]) > 20",
            timeout=10_000)
        assert _number(page, "#d2-link") < 3  # the other device is untouched
        drawn = page.evaluate("document.getElementById('d1-plot-loss').toDataURL()")
        assert drawn != blank  # the plot redrew with the new values
        page.fill("#d1-apply input[name=bitrate_kbps]", "96")
        page.fill("#d1-apply input[name=buffer_ms]", "150")
        page.click("#d1-apply button")
        page.wait_for_function(
            "document.getElementById('d1-inforce').textContent.startsWith('96 kbit/s / 150')",
            timeout=10_000)
        assert "done" in page.inner_text("#d1-result")
        page.click("#d2-push button")
        page.wait_for_function(
            "document.getElementById('d2-bundle').textContent.includes('sim.1')",
            timeout=10_000)
        assert "dropout" in page.inner_text("#d1-events")  # the fault event of the change
        assert src.params[2]["bitrate_kbps"] == 64


def test_actions_refuse_bad_requests_with_a_reason(fake):
    _, url = fake
    code, body = _post(url + "api/devices/1/apply", {"params": {"bitrate_kbps": 999}})
    assert code == 422 and "bitrate_kbps" in body["error"]
    code, body = _post(url + "api/devices/1/apply", [1, 2])
    assert code == 400 and not body["ok"]
    code, body = _post(url + "api/devices/x/apply", {})
    assert code == 400
    with urllib.request.urlopen(url + "api/state", timeout=10) as r:
        state = json.loads(r.read())
    assert [d["index"] for d in state["devices"]] == [1, 2]


def test_device_view_reads_replies():
    v = device_view(3, {"clock": [{"port_state": "UNCALIBRATED", "offset_ns": -12.0}],
                        "live": {"bypass": True, "hop_cpu_ms": {"p50": 0.4, "p99": 0.9},
                                 "transport": {"bitrate_kbps": 80}}},
                    [{"t": 1.0, "loss_pct": 5.0, "bitrate_kbps": 40.0,
                      "bandwidth_util": 0.5}], {"active": {"bitrate_kbps": 80}, "trial": True},
                    {"state": "trial", "version": "2.0.1"}, [], {"rate_kbit": 120})
    assert v["ptp"]["offset_ns"] == -12.0 and v["live"]["denoiser"] is False
    assert v["link"]["allocated_kbps"] == 80.0 and v["link"]["capacity_kbps"] == 120
    assert v["params"]["trial"] and v["bundle"]["version"] == "2.0.1"


def test_cli_help_and_missing_system(tmp_path):
    r = CliRunner().invoke(cli, ["dashboard", "--help"])
    assert r.exit_code == 0 and "--fake" in r.output
    r = CliRunner().invoke(cli, ["dashboard", "--state-dir", str(tmp_path)])
    assert r.exit_code == 1 and "no system is up" in r.output
    with socket.socket() as s:  # a port in use: one line, no traceback
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = CliRunner().invoke(cli, ["dashboard", "--fake", "1", "--port",
                                     str(s.getsockname()[1])])
    assert r.exit_code == 1 and "cannot serve on 127.0.0.1" in r.output
    assert "Traceback" not in r.output
