# ruff: noqa: F401, F811  (pytest fixtures imported from test_flash_util are arguments here)
"""Bundles on the host: keygen, build, inspect (host/bundle.py, flash-to-device CLI)."""

from __future__ import annotations

import json
import stat
import tarfile

import pytest
from click.testing import CliRunner
from test_flash_util import bundles, keys, read_entries, step_model, write_tar  # noqa: F401

from edge.slots import read_bundle, version_key
from host.bundle import BundleError, build, inspect, keygen, load_config
from host.flash_cli import cli

pytestmark = pytest.mark.train  # the fixture model is exported with torch + litert-torch


def test_keygen_writes_a_private_key_only_the_owner_reads(tmp_path):
    key, pub, kid = keygen(tmp_path / "k")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key.read_bytes() and b"PUBLIC KEY" in pub.read_bytes()
    assert len(kid) == 16
    with pytest.raises(BundleError, match="exists; pass --force"):
        keygen(tmp_path / "k")
    assert keygen(tmp_path / "k", force=True)[2] != kid


def test_build_writes_a_signed_manifest_pinning_every_file(tmp_path, step_model, keys):
    cfg = tmp_path / "device.toml"
    cfg.write_text('[transport]\nbuffer_ms = 150\nprotocol = "udp"\n')
    out = tmp_path / "b.hlb"
    m = build(step_model, keys["vendor"]["key"], out, config=cfg, version="1.2.0",
              profiles=("rpi5",))
    entries = read_entries(out)
    assert set(entries) == {"manifest.json", "manifest.sig", "model.tflite", "model.json",
                            "config.json"}
    assert json.loads(entries["manifest.json"]) == m
    assert m["version"] == "1.2.0" and m["profiles"] == ["rpi5"]
    assert m["model"]["sha256"] == json.loads(step_model.with_suffix(".json").read_text()
                                              )["tflite_sha256"]
    assert m["config"]["transport"]["buffer_ms"] == 150
    assert entries["model.tflite"] == step_model.read_bytes()
    assert "test_vector" not in m["model"]["metadata"]  # it travels in model.json
    b = read_bundle(out, {keys["vendor"]["id"]: _pub(keys["vendor"]["pub"])}, profile="rpi5")
    assert b.key_id == keys["vendor"]["id"] and b.version == "1.2.0"


def _pub(path):
    from edge.slots import load_public_key

    return load_public_key(path.read_bytes())


def test_build_refuses_bad_inputs(tmp_path, step_model, keys):
    with pytest.raises(BundleError, match="signing key .* not found"):
        build(step_model, tmp_path / "nokey", tmp_path / "x.hlb")
    with pytest.raises(BundleError, match="not an unencrypted PEM private key"):
        build(step_model, keys["vendor"]["pub"], tmp_path / "x.hlb")
    bad = tmp_path / "bad.json"
    bad.write_text('{"transport": {"buffer_ms": 5}}')
    with pytest.raises(BundleError, match="buffer_ms"):
        load_config(bad)
    copy = tmp_path / "m.tflite"
    copy.write_bytes(step_model.read_bytes() + b"x")
    copy.with_suffix(".json").write_text(step_model.with_suffix(".json").read_text())
    with pytest.raises(BundleError, match="sha256"):
        build(copy, keys["vendor"]["key"], tmp_path / "x.hlb")
    assert not (tmp_path / "x.hlb").exists()  # never a half-written bundle


def test_inspect_verifies_integrity_and_signer(bundles, keys, tmp_path):
    info = inspect(bundles["2.0.0"])
    assert info["version"] == "2.0.0" and info["model"] == "test-int8"
    assert "integrity only" in info["signature"]
    assert inspect(bundles["2.0.0"], (keys["vendor"]["pub"],))["signature"] == "valid, key trusted"
    with pytest.raises(BundleError, match="does not trust"):
        inspect(bundles["2.0.0"], (keys["stranger"]["pub"],))
    e = read_entries(bundles["2.0.0"])
    e["model.tflite"] = bytes(b ^ 1 if i == 100 else b for i, b in enumerate(e["model.tflite"]))
    with pytest.raises(BundleError, match="does not match its sha256"):
        inspect(write_tar(tmp_path / "t.hlb", e))


def test_cli_keygen_build_inspect(tmp_path, step_model):
    r = CliRunner()
    res = r.invoke(cli, ["keygen", str(tmp_path / "k")])
    assert res.exit_code == 0, res.output
    assert "key id" in res.output
    res = r.invoke(cli, ["build", "-m", str(step_model), "-k", str(tmp_path / "k.key"),
                         "-o", str(tmp_path / "b.hlb"), "--version", "0.3.0"])
    assert res.exit_code == 0, res.output
    res = r.invoke(cli, ["inspect", str(tmp_path / "b.hlb"), "--json",
                         "--trust", str(tmp_path / "k.pub")])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["version"] == "0.3.0"
    res = r.invoke(cli, ["inspect", str(tmp_path / "nope.hlb")])
    assert res.exit_code == 1 and res.output.startswith("Error:") and "Traceback" not in res.output
    (tmp_path / "text.hlb").write_text("not a tar at all\n" * 100)
    res = r.invoke(cli, ["inspect", str(tmp_path / "text.hlb")])
    assert res.exit_code == 1 and "is not a bundle archive" in res.output
    res = r.invoke(cli, ["build", "-m", str(step_model), "-k", str(tmp_path / "k.key"),
                         "-o", str(tmp_path / "c.hlb"), "--profile", "toaster"])
    assert res.exit_code == 1 and "unknown hardware profile 'toaster'" in res.output


def test_version_order():
    assert version_key("1.0.0-rc1") < version_key("1.0.0") < version_key("1.0.1")
    assert version_key("1.10") > version_key("1.9.9")
    assert version_key("2") == version_key("2.0.0")


def test_bundle_is_a_plain_tar(bundles):
    with tarfile.open(bundles["1.0.0"]) as tf:
        assert all(m.isreg() and "/" not in m.name for m in tf.getmembers())


@pytest.mark.parametrize("live, ok", [
    ({"hop_budget_ms": 2.5}, True), ({"hop_budget_ms": 0}, False),
    ({"hop_budget_ms": "fast"}, False), ({"budget": 1}, False), ([1], False)])
def test_config_live_table_holds_only_a_positive_hop_budget(tmp_path, live, ok):
    """The live service's CPU budget for a bundle (edge/liveslot.py) is checked on the host."""
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"live": live}))
    if ok:
        assert load_config(p)["live"] == live
    else:
        with pytest.raises(BundleError, match="live: only hop_budget_ms"):
            load_config(p)
