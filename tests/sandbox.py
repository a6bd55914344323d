"""Real components for tests, set up once here: a private PulseAudio server and a pair of
network namespaces joined by a veth pair. Each cleans up after itself, even on failure."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI") == "true"


def need(ok: bool, why: str) -> None:
    """A missing facility skips on a user's machine but fails in CI, which installs them all."""
    if not ok:
        if IN_CI:
            pytest.fail(f"CI must run this test: {why}")
        pytest.skip(why)


def need_tools(*tools: str, hint: str = "") -> None:
    for tool in tools:
        need(shutil.which(tool) is not None, f"{tool} not installed {hint}".strip())


@contextmanager
def pulse_server(tmp_path: Path, sinks: list[str]
                 ) -> Iterator[tuple[dict, Path, subprocess.Popen]]:
    """A private PulseAudio server (own HOME and XDG_RUNTIME_DIR) with 16 kHz null sinks and
    ALSA's default device routed to it via ~/.asoundrc. Yields (client env, log path, server
    process); the
    server is killed by PID at the end."""
    from host.system.pulse import prepare_home, server_argv  # the same as `system up`'s

    need_tools("pulseaudio", "pactl", hint="(apt-get install pulseaudio pulseaudio-utils)")
    home = tmp_path / "home"
    penv = prepare_home(home)
    env = {**os.environ, "HOME": penv["HOME"], "XDG_RUNTIME_DIR": penv["XDG_RUNTIME_DIR"]}
    log = tmp_path / "pulse.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(server_argv(tuple(sinks)), env=env, stdout=f,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"PulseAudio did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield env, log, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=20)


def veth_namespaces(ns_names: tuple[str, str], veth_names: tuple[str, str],
                    addrs: tuple[str, str]) -> Callable[[], None]:
    """Create namespaces ``ns_names`` joined by veths ``veth_names`` with ``addrs`` (CIDR),
    links and loopback up. Returns the teardown function (safe to call more than once)."""
    (a, b), (va, vb) = ns_names, veth_names

    def teardown() -> None:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", va], capture_output=True)

    try:
        _sh("ip", "netns", "add", a)
        _sh("ip", "netns", "add", b)
        _sh("ip", "link", "add", va, "type", "veth", "peer", "name", vb)
        _sh("ip", "link", "set", va, "netns", a)
        _sh("ip", "link", "set", vb, "netns", b)
        for ns, dev, ip in ((a, va, addrs[0]), (b, vb, addrs[1])):
            _sh("ip", "-n", ns, "addr", "add", ip, "dev", dev)
            _sh("ip", "-n", ns, "link", "set", dev, "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
    except BaseException:
        teardown()
        raise
    return teardown
