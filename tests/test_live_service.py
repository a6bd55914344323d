"""hardware/hushlink-live.service: the systemd unit for the live loop, shipped as package data."""

from __future__ import annotations

import shutil
import subprocess
from importlib import resources

import pytest
from click.testing import CliRunner

from edge.cli import cli
from edge.live import systemd_unit
from edge.profile import DeviceProfile, names


def test_shipped_unit_is_the_rendered_rpi5_unit_and_is_package_data():
    shipped = resources.files("hardware").joinpath("hushlink-live.service").read_text()
    assert shipped == systemd_unit(DeviceProfile.by_name("rpi5"))


@pytest.mark.parametrize("name", names())
def test_unit_takes_user_group_and_cpu_hints_from_the_profile(name):
    p = DeviceProfile.by_name(name)
    unit = systemd_unit(p, "/usr/bin/edge-denoise")
    lines = unit.splitlines()
    assert f"User={p.runtime.user}" in lines and f"Group={p.runtime.group}" in lines
    assert "Restart=on-failure" in lines and any(x.startswith("RestartSec=") for x in lines)
    assert any(x.startswith(f"ExecStart=/usr/bin/edge-denoise live --profile {name} ")
               for x in lines)
    if p.runtime.cpu_affinity:
        assert "CPUAffinity=" + " ".join(map(str, p.runtime.cpu_affinity)) in lines
    else:
        assert not any(x.startswith("CPUAffinity=") for x in lines)


def test_systemd_accepts_the_unit(tmp_path):
    """systemd-analyze verify where systemd is installed; the unit's syntax otherwise."""
    text = systemd_unit(DeviceProfile.by_name("rpi5"), shutil.which("true"))
    sections = [x for x in text.splitlines() if x.startswith("[")]
    assert sections == ["[Unit]", "[Service]", "[Install]"]
    for line in text.splitlines():
        assert not line or line.startswith(("#", "[")) or "=" in line, line
    if shutil.which("systemd-analyze") is None:
        return
    unit = tmp_path / "hushlink-live-test.service"
    unit.write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr


def test_print_unit_option():
    r = CliRunner().invoke(cli, ["live", "--profile", "jetson-orin-nano", "--print-unit"])
    assert r.exit_code == 0 and "--profile jetson-orin-nano" in r.output
    assert "[Service]" in r.output
