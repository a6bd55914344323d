# ruff: noqa: F401, F811  (pytest fixtures imported from test_flash_util are arguments here)
"""The device's A/B slot store (edge/slots.py) with a --root device: install, trial, confirm,
rollback, every refusal (message + active slot unchanged), disk space on a real tmpfs, and
SIGKILL at each install stage followed by a restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_flash_util import (
    ROOT,
    bundles,
    device,
    fingerprint,
    golden,
    keys,
    read_entries,
    resign,
    small_fs,
    step_model,
    write_tar,
)

from edge.slots import CRASH_STAGES, FlashError, SlotStore
from host.flash import push_root
from host.flash_cli import cli

pytestmark = pytest.mark.train  # the fixture model is exported with torch + litert-torch


def test_install_trial_confirm_rollback(device, bundles):
    s = SlotStore(device, profile="generic-linux")
    assert s.status()["active"] == "A" and s.status()["state"] == "confirmed"
    out = s.install(bundles["2.0.0"])
    assert out["slot"] == "B" and out["health"]["ok"] and out["health"]["max_error"] <= 0.05
    st = s.status()
    assert st["state"] == "trial" and st["previous"] == "A" and st["revert_in_s"] > 100
    assert s.active_model() == device / "slots" / "B" / "model.tflite"
    s.confirm()
    assert s.status()["state"] == "confirmed"
    with pytest.raises(FlashError, match="no bundle is waiting for confirmation"):
        s.confirm()
    s.rollback()
    st = s.status()
    assert (st["active"], st["version"], st["previous"]) == ("A", "1.0.0", "B")
    s.verify_slot("A")


def test_unconfirmed_trial_rolls_back_at_next_start(device, bundles):
    s = SlotStore(device, profile="generic-linux")
    before = fingerprint(device)
    s.install(bundles["2.0.0"])
    assert fingerprint(device)["version"] == "2.0.0"
    st = SlotStore(device).boot()  # the device restarts before anyone confirmed
    assert fingerprint(device) == before
    assert st["active"] == "A" and st["state"] == "confirmed" and st["previous"] == "B"


def test_unconfirmed_trial_rolls_back_after_timeout(device, bundles):
    s = SlotStore(device, profile="generic-linux")
    s.install(bundles["2.0.0"], trial_timeout_s=0.3)
    assert s.expire() is None  # not yet
    time.sleep(0.4)
    assert s.expire()["slot"] == "A"
    assert s.status()["active"] == "A"
    with pytest.raises(FlashError, match="no bundle is waiting"):
        s.confirm()


def test_trial_is_kept_when_the_previous_slot_is_damaged(device, bundles):
    s = SlotStore(device, profile="generic-linux")
    s.install(bundles["2.0.0"], trial_timeout_s=0.2)
    (device / "slots" / "A" / "model.json").write_text("{}")  # the rollback target rots
    time.sleep(0.3)
    assert s.expire()["slot"] == "B"
    st = s.status()
    assert (st["active"], st["state"]) == ("B", "confirmed")
    assert s.expire() is None  # settled: no retry on every tick


def test_first_bundle_rolled_back_leaves_no_bundle(tmp_path, bundles, keys):
    s = SlotStore(tmp_path / "dev")
    s.init([keys["vendor"]["pub"].read_bytes()])
    s.install(bundles["1.0.0"])
    assert s.boot()["active"] is None and s.active_model() is None


def test_boot_falls_back_when_the_active_slot_is_damaged(device, bundles):
    s = SlotStore(device, profile="generic-linux")
    s.install(bundles["2.0.0"])
    s.confirm()
    (device / "slots" / "B" / "model.tflite").write_bytes(b"bitrot")
    st = s.boot()
    assert st["active"] == "A" and st["version"] == "1.0.0"


# --------------------------------------------------------------------------- refusals
def _forged(tmp_path, bundles, keys, kind: str) -> Path:
    good = bundles["2.0.0"]
    e = read_entries(good)
    vendor, stranger = keys["vendor"]["key"], keys["stranger"]["key"]
    out = tmp_path / f"{kind}.hlb"
    if kind == "unsigned":
        del e["manifest.sig"]
        return write_tar(out, e)
    if kind == "bad-signature":  # the manifest altered after signing
        e["manifest.json"] = e["manifest.json"].replace(b'"2.0.0"', b'"9.0.0"')
        return write_tar(out, e)
    if kind == "unknown-key":
        return resign(good, out, stranger)
    if kind == "tampered":
        t = bytearray(e["model.tflite"])
        t[len(t) // 2] ^= 0xFF
        e["model.tflite"] = bytes(t)
        return write_tar(out, e)
    if kind == "absolute-path":
        e["/etc/cron.d/evil"] = b"* * * * * root sh\n"
        return write_tar(out, e)
    if kind == "dotdot":
        e["../../evil"] = b"x"
        return write_tar(out, e)
    if kind == "symlink":
        return write_tar(out, e, symlink="model.link")
    if kind == "new-runtime":
        return resign(good, out, vendor, manifest_edit=lambda m: m.update(min_runtime="99.0"))
    if kind == "other-profile":
        return resign(good, out, vendor, manifest_edit=lambda m: m.update(profiles=["rpi4"]))
    if kind == "other-hop":
        def edit(m):
            m["model"]["metadata"]["front_end"]["hop"] = 256
        return resign(good, out, vendor, manifest_edit=edit)
    if kind == "wrong-test-vector":  # signed and intact, but the model does not do what it says
        md = json.loads(e["model.json"])
        md["test_vector"]["mask"] = [[1.0 - v for v in row] for row in md["test_vector"]["mask"]]
        return resign(good, out, vendor, files={"model.json": json.dumps(md).encode()})
    if kind == "garbage-model":
        md = json.loads(e["model.json"])
        junk = os.urandom(len(e["model.tflite"]))
        import hashlib

        md["tflite_sha256"] = hashlib.sha256(junk).hexdigest()

        def edit(m):
            m["model"]["metadata"]["tflite_sha256"] = md["tflite_sha256"]
            m["model"]["sha256"] = md["tflite_sha256"]
        return resign(good, out, vendor, files={"model.tflite": junk,
                                                "model.json": json.dumps(md).encode()},
                      manifest_edit=edit)
    raise AssertionError(kind)


REFUSALS = [
    ("unsigned", "unsigned", "bundle is not signed"),
    ("bad-signature", "bad_signature", "signature does not verify"),
    ("unknown-key", "unknown_key", "which this device does not trust"),
    ("tampered", "tampered", "model.tflite does not match its sha256"),
    ("absolute-path", "unsafe_path", "has an absolute path"),
    ("dotdot", "unsafe_path", "climbs out with '..'"),
    ("symlink", "unsafe_path", "not a regular file"),
    ("new-runtime", "incompatible", "needs runtime 99.0 or newer"),
    ("other-profile", "incompatible", "not this device's 'generic-linux'"),
    ("other-hop", "incompatible", "hop 256 (runtime 160)"),
    ("wrong-test-vector", "unhealthy", "test vector mismatch"),
    ("garbage-model", "unhealthy", "health check failed"),
]


@pytest.mark.parametrize(("kind", "code", "message"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusal_changes_nothing(device, bundles, keys, tmp_path, kind, code, message):
    bundle = _forged(tmp_path, bundles, keys, kind)
    before = fingerprint(device)
    r = CliRunner().invoke(cli, ["push", str(bundle), "--root", str(device),
                                 "--profile", "generic-linux"])
    assert r.exit_code == 1, r.output
    error = r.output.strip().splitlines()[-1]  # progress lines come first (stderr)
    assert error.startswith("Error: ") and message in error, r.output
    assert "Traceback" not in r.output
    with pytest.raises(FlashError) as e:
        SlotStore(device, profile="generic-linux").install(bundle)
    assert e.value.code == code
    assert fingerprint(device) == before
    assert not (device / "slots" / ".incoming").exists()


def test_refuses_oversize(device, bundles, keys):
    SlotStore(device).init([], max_bundle_bytes=50_000)
    before = fingerprint(device)
    with pytest.raises(FlashError, match=r"over this device's limit of 50,000") as e:
        SlotStore(device).install(bundles["2.0.0"])
    assert e.value.code == "oversize" and fingerprint(device) == before


def test_refuses_downgrade_unless_allowed(device, bundles):
    s = SlotStore(device, profile="generic-linux")
    s.install(bundles["3.0.0"])
    s.confirm()
    before = fingerprint(device)
    r = CliRunner().invoke(cli, ["push", str(bundles["2.0.0"]), "--root", str(device)])
    assert r.exit_code == 1
    assert "bundle version 2.0.0 is older than the active 3.0.0; pass --allow-downgrade" \
        in r.output
    assert fingerprint(device) == before
    r = CliRunner().invoke(cli, ["push", str(bundles["2.0.0"]), "--root", str(device),
                                 "--allow-downgrade", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["state"] == "confirmed"
    assert s.status()["version"] == "2.0.0"


def test_cli_init_push_status_confirm_on_a_root(tmp_path, bundles, keys):
    run, root = CliRunner().invoke, str(tmp_path / "dev")
    res = run(cli, ["init", "--root", root, "--trust", str(keys["vendor"]["pub"]),
                    "--profile", "rpi4", "--trial-timeout", "30"])
    assert res.exit_code == 0 and keys["vendor"]["id"] in res.output
    res = run(cli, ["push", str(bundles["1.0.0"]), "--root", root])
    assert res.exit_code == 1 and "not this device's 'rpi4'" in res.output  # fits rpi5 only
    run(cli, ["init", "--root", root, "--trust", str(keys["vendor"]["pub"]),
              "--profile", "rpi5"])
    res = run(cli, ["push", str(bundles["1.0.0"]), "--root", root, "--no-confirm"])
    assert res.exit_code == 0 and "(trial)" in res.output, res.output
    res = run(cli, ["status", "--root", root])
    assert "active slot  A (trial, rolls back in" in res.output
    res = run(cli, ["confirm", "--root", root])
    assert res.exit_code == 0 and "confirmed: bundle 1.0.0 in slot A" in res.output
    res = run(cli, ["status", "--root", root, "--json"])
    assert json.loads(res.output)["state"] == "confirmed"
    res = run(cli, ["status"])
    assert res.exit_code == 2 and "give a serial PORT or --root DIR" in res.output


def test_refuses_uninitialised_device(tmp_path, bundles):
    r = CliRunner().invoke(cli, ["push", str(bundles["1.0.0"]), "--root", str(tmp_path / "d")])
    assert r.exit_code == 1 and "trusts no keys" in r.output


def test_refuses_when_disk_is_full(small_fs, bundles, keys):
    s = SlotStore(small_fs / "dev", profile="generic-linux")
    s.init([keys["vendor"]["pub"].read_bytes()])
    s.install(bundles["1.0.0"])
    s.confirm()
    before = fingerprint(small_fs / "dev")
    free = os.statvfs(small_fs).f_bavail * os.statvfs(small_fs).f_frsize
    (small_fs / "filler").write_bytes(b"\0" * (free - 600_000))  # leaves less than needed
    r = CliRunner().invoke(cli, ["push", str(bundles["2.0.0"]), "--root", str(small_fs / "dev")])
    assert r.exit_code == 1 and "not enough disk space" in r.output, r.output
    assert fingerprint(small_fs / "dev") == before
    (small_fs / "filler").unlink()
    push_root(bundles["2.0.0"], small_fs / "dev")
    assert s.status()["version"] == "2.0.0"


# ------------------------------------------------------------------ crash consistency
PUSH = "import sys; from host.flash_cli import main; sys.argv[0] = 'flash-to-device'; main()"


@pytest.mark.slow
@pytest.mark.parametrize("stage", CRASH_STAGES)
def test_sigkill_at_each_stage_then_restart(device, bundles, stage):
    """The pusher (the device side, in --root mode) SIGKILLs itself at ``stage``; after a
    restart the device runs a complete, verified bundle (old or new, never a mix), and a new
    push completes."""
    env = {**os.environ, "HUSHLINK_CRASH_AT": stage}
    r = subprocess.run([sys.executable, "-c", PUSH, "push", str(bundles["2.0.0"]), "--root",
                        str(device)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == -9, r.stderr
    assert f"HUSHLINK_CRASH_AT={stage}" in r.stderr
    st = SlotStore(device, profile="generic-linux").boot()  # the device starts again
    m = SlotStore(device).verify_slot(st["active"])  # every file matches the signed manifest
    assert st["state"] == "confirmed" and m["version"] in ("1.0.0", "2.0.0")
    assert st["version"] == m["version"]
    assert not (device / "slots" / ".incoming").exists()
    out = push_root(bundles["2.0.0"], device)
    assert out["state"] == "confirmed"
    st = SlotStore(device).status()
    assert st["version"] == "2.0.0"
    SlotStore(device).verify_slot(st["active"])
