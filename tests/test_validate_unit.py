"""Issue 18 item 8: no profile value can add lines to the generated systemd unit. User and
group must be names; every ExecStart= word is quoted per systemd.exec(5)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import replace

import pytest
from click.testing import CliRunner

from edge.cli import cli
from edge.errors import HushlinkError, ProfileError
from edge.live import systemd_unit
from edge.profile import DeviceProfile

INJECT = "x\nExecStartPre=/bin/sh -c 'touch /tmp/pwned'"


def _profile_file(tmp_path, **runtime) -> str:
    body = "".join(f"{k} = {v!r}\n".replace("'", '"') if "\n" not in v
                   else f'{k} = "{v.encode("unicode_escape").decode()}"\n'
                   for k, v in runtime.items())
    p = tmp_path / "evil.toml"
    p.write_text(f'name = "evil"\n[runtime]\n{body}')
    return str(p)


@pytest.mark.parametrize("key", ["user", "group"])
def test_a_profile_string_cannot_inject_unit_lines(tmp_path, key):
    """Before: the unit held an ``ExecStartPre=`` line taken from the profile's user."""
    path = _profile_file(tmp_path, **{key: INJECT})
    with pytest.raises(ProfileError, match=f"runtime.{key}=.*control characters"):
        DeviceProfile.load(path)
    r = CliRunner().invoke(cli, ["live", "--print-unit", "--profile", path])
    assert r.exit_code == 1 and r.output.count("\n") == 1, r.output
    assert r.output.startswith("Error: ") and "[Service]" not in r.output


@pytest.mark.parametrize("user", ["root root", "a;b", "-x", "x" * 40, "", "ü"])
def test_user_and_group_must_be_names(tmp_path, user):
    with pytest.raises(ProfileError, match="runtime.user"):
        DeviceProfile.load(_profile_file(tmp_path, user=user))


def test_the_unit_checks_values_that_bypassed_the_profile_loader():
    p = DeviceProfile.by_name("rpi5")
    bad = replace(p, runtime=replace(p.runtime, group=INJECT))
    with pytest.raises(HushlinkError, match="runtime.group"):
        systemd_unit(bad, "/usr/bin/edge-denoise")
    with pytest.raises(HushlinkError, match="control characters"):
        systemd_unit(p, "/usr/bin/edge-denoise\nExecStartPre=/bin/true")
    with pytest.raises(HushlinkError, match="absolute path"):
        systemd_unit(p, "-edge-denoise")


def _systemd_unquote(word: str, program: bool = False) -> str:
    """The inverse of systemd_exec_word for the escapes it writes (for the test only)."""
    if word.startswith('"'):
        assert word.endswith('"')
        out, body, i = [], word[1:-1], 0
        while i < len(body):
            if body[i] == "\\":
                i += 1
            out.append(body[i])
            i += 1
        word = "".join(out)
    word = word.replace("%%", "\0")
    return (word if program else word.replace("$$", "$")).replace("\0", "%")


@pytest.mark.parametrize("word", ["/usr/bin/edge-denoise", "/opt/my dir/edge-denoise",
                                  "/opt/100%/x", "/opt/$HOME/x", '/opt/a"b\\c/x', "/o/'q'/x"])
def test_exec_words_are_quoted_per_systemd_exec(word):
    from edge.validate import systemd_exec_word

    q = systemd_exec_word(word)
    assert _systemd_unquote(q) == word
    assert " " not in q or (q.startswith('"') and q.endswith('"'))
    assert "%" not in q.replace("%%", "") and "$" not in q.replace("$$", "")
    p = systemd_exec_word(word, program=True)  # the program path: no $ expansion there
    assert _systemd_unquote(p, program=True) == word and "%" not in p.replace("%%", "")


def test_systemd_accepts_a_unit_whose_program_path_needs_quoting(tmp_path):
    """systemd-analyze verify resolves the quoted path: the program must exist there."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed (the quoting is checked above)")
    d = tmp_path / "my dir 100% $x"
    d.mkdir()
    exe = d / "edge-denoise"
    os.symlink(shutil.which("true"), exe)
    unit = tmp_path / "hushlink-quoting-test.service"
    unit.write_text(systemd_unit(DeviceProfile.by_name("rpi5"), str(exe)))
    quoted = f'"{str(exe).replace("%", "%%")}"'
    assert f"ExecStart={quoted} live" in unit.read_text()
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    bad = tmp_path / "hushlink-quoting-bad.service"  # the check has teeth: unquoted fails
    bad.write_text(unit.read_text().replace(quoted, str(exe)))
    r = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0
