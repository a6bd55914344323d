"""The systemd units beside hardware/hushlink-live.service (issue 22, item 5): the serial agent,
the PTP clock (a template per interface) and the sender. Each is verified by
``systemd-analyze verify`` and scored by ``systemd-analyze security --offline``; its command
line is parsed by edge-denoise's own click commands, so an option that does not exist fails
here, not on the device."""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from importlib import resources

import pytest
from sandbox import need_tools

from edge.cli import cli

UNITS = {"hushlink-serve.service": "hushlink-serve.service",
         "hushlink-clock@.service": "hushlink-clock@eth0.service",
         "hushlink-send.service": "hushlink-send.service"}
PTP_CAPS = {"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE", "CAP_SYS_TIME"}
SAMPLE_ENV = {"HUSHLINK_CLOCK_ROLE": "slave", "HUSHLINK_SEND_FILE": "tone.wav",
              "HUSHLINK_SEND_TO": "udp://192.0.2.7:5004"}


def unit_text(name: str) -> str:
    return resources.files("hardware").joinpath(name).read_text()


def settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            k, _, v = line.partition("=")
            out.setdefault(k, []).append(v)
    return out


def _analyze(tmp_path, name, *args):
    need_tools("systemd-analyze", hint="(apt-get install systemd)")
    exe = shutil.which("edge-denoise") or shutil.which("true")
    (tmp_path / UNITS[name]).write_text(
        unit_text(name).replace("/usr/local/bin/edge-denoise", exe))
    return subprocess.run(["systemd-analyze", *args, UNITS[name]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_verifies_the_unit(tmp_path, name):
    r = _analyze(tmp_path, name, "verify")
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


@pytest.mark.parametrize("name", UNITS)
def test_unit_is_hardened(tmp_path, name):
    """systemd's own exposure score stays in its 'OK' band (< 5; a unit with no hardening
    scores 9.6), and the settings that matter most are there."""
    r = _analyze(tmp_path, name, "security", "--offline=true")
    assert r.returncode == 0, r.stderr
    score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout).group(1))
    assert score < 5.0, r.stdout[-3000:]
    s = settings(unit_text(name))
    assert s["ProtectSystem"] == ["strict"] and s["NoNewPrivileges"] == ["yes"]
    assert s["ProtectHome"] == ["yes"] and s["PrivateTmp"] == ["yes"]
    caps = set(s["CapabilityBoundingSet"][0].split())
    if name.startswith("hushlink-clock"):
        assert caps == PTP_CAPS  # root, but only what ptp4l and phc2sys need
    else:
        assert caps == set() and s.get("AmbientCapabilities", [""]) == [""]
        assert s.get("DynamicUser") == ["yes"] or s.get("User") == ["hushlink"]
        assert "StateDirectory" in s


@pytest.mark.parametrize("name", UNITS)
def test_exec_start_parses_with_the_real_cli(name):
    argv = settings(unit_text(name))["ExecStart"][0].split()
    assert argv[0] == "/usr/local/bin/edge-denoise"
    args = [re.sub(r"\$\{?(\w+)\}?", lambda m: SAMPLE_ENV.get(m.group(1), ""), a)
            .replace("%i", "eth0") for a in argv[1:]]
    args = [a for a in args if a]
    ctx = cli.make_context("edge-denoise", args)
    cmd, rest = cli, _rest(ctx)
    while rest:  # descend through groups; the leaf's make_context checks every option
        sub = cmd.get_command(ctx, rest[0])
        assert sub is not None, rest
        ctx = sub.make_context(rest[0], rest[1:], parent=ctx)
        cmd, rest = sub, (_rest(ctx) if hasattr(sub, "commands") else [])
    assert cmd.name in ("serve", "start", "send")


def _rest(ctx) -> list[str]:
    with warnings.catch_warnings():  # click 8.2 deprecates protected_args (merged in 9.0)
        warnings.simplefilter("ignore", DeprecationWarning)
        return [*ctx.protected_args, *ctx.args]


@pytest.fixture
def log_setup():
    import logging

    from edge import logs

    yield logs
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, logs._MARK, False)]:
        root.removeHandler(h)
    root.setLevel(logging.WARNING)


def test_log_level_gives_time_and_level_and_host_parameter_changes_are_logged(
        tmp_path, capsys, log_setup):
    from click.testing import CliRunner

    from edge.agent import HANDLERS, Agent

    r = CliRunner().invoke(cli, ["--log-level", "info", "profiles"])
    assert r.exit_code == 0 and log_setup.configured(), r.output
    log_setup.setup("info")  # again, onto the stderr pytest captures here: still one handler
    agent = Agent("loop://", state_dir=tmp_path / "st",
                  log=log_setup.reporter("edge.agent", "edge-denoise serve"))
    HANDLERS["set_params"].fn(agent, {"params": {"bitrate_kbps": 96}})
    HANDLERS["apply"].fn(agent, {"timeout_s": 0})
    err = capsys.readouterr().err.splitlines()
    changes = [x for x in err if "parameters: " in x]
    assert len(changes) == 1, err
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} INFO edge\.agent: "
                        r"parameters: bitrate_kbps 64 -> 96", changes[0]), changes


def test_without_log_level_the_plain_lines_stay(capsys, log_setup):
    log_setup.reporter("edge.agent", "edge-denoise serve")("hello")
    assert capsys.readouterr().err == "edge-denoise serve: hello\n"


def test_json_lines_logs_rotate_at_their_size_bound(tmp_path, monkeypatch):
    """The receiver's telemetry and live's fault events stay within HUSHLINK_ROTATE_MB per
    file plus the backups, and the agent's reader follows the rotation."""
    import json
    import math

    from edge.agent import FileTelemetry
    from edge.faults.live import LiveFaultFixer
    from edge.outpaths import RotatingLines
    from edge.params import Telemetry
    from edge.transport.telemetry import TelemetryLog

    monkeypatch.setenv("HUSHLINK_ROTATE_MB", "0.002")  # 2000 bytes
    path = tmp_path / "tele.jsonl"
    reader = FileTelemetry(path)
    log = TelemetryLog(path)
    for i in range(200):
        log.append(Telemetry(t=float(i), latency_ms=20.0, loss_pct=0.0, jitter_ms=1.0,
                             bandwidth_util=0.5, snr_db=30.0))
        if i % 20 == 0:
            reader.records()
    log.close()
    sizes = [p.stat().st_size for p in (path, tmp_path / "tele.jsonl.1",
                                        tmp_path / "tele.jsonl.2")]
    assert all(0 < s <= 2000 for s in sizes), sizes
    assert not (tmp_path / "tele.jsonl.3").exists()
    newest = [json.loads(x)["t"] for x in path.read_text().splitlines()]
    assert newest[-1] == 199.0 and reader.records()[-1]["t"] == 199.0
    older = [json.loads(x)["t"] for x in (tmp_path / "tele.jsonl.1").read_text().splitlines()]
    assert older[-1] + 1 == newest[0]  # nothing lost at the seam

    fixer = LiveFaultFixer(tmp_path / "ev.jsonl")
    assert fixer._events_log.max_bytes == 2000
    lines = RotatingLines(tmp_path / "x.jsonl", max_bytes=100, backups=1)
    for i in range(30):
        lines.write(json.dumps({"i": i}))
    lines.close()
    assert lines.rotations == math.ceil(sum(len(f'{{"i": {i}}}') + 1 for i in range(30)) / 100) - 1
    assert (tmp_path / "x.jsonl").stat().st_size <= 100
    assert not (tmp_path / "x.jsonl.2").exists()
