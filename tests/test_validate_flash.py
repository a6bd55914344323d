"""Issue 18 item 4 on the bundle slots: a NaN, infinite or negative trial timeout or bundle
limit is refused on the command line, by the store's API and by the agent, and a state file
holding one (hand-edited, or written by an older tool) cannot disable rollback or installs."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from edge.model import default_model_path
from edge.slots import FlashError, SlotStore

NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def signed(tmp_path_factory) -> dict:
    """Two signed bundles of the shipped model (1.0.0, 2.0.0) and the key's files."""
    from host.bundle import build, keygen

    d = tmp_path_factory.mktemp("signed")
    key, pub, _ = keygen(d / "vendor")
    out = {"key": key, "pub": pub}
    for v in ("1.0.0", "2.0.0"):
        out[v] = d / f"b{v}.hlb"
        build(default_model_path(), key, out[v], version=v)
    return out


def _store(tmp_path, signed) -> SlotStore:
    s = SlotStore(tmp_path / "dev")
    s.init([signed["pub"].read_bytes()])
    return s


@pytest.mark.parametrize("args, words", [
    (["--max-bundle-mb", "-1"], "out of range"),
    (["--max-bundle-mb", "0"], "out of range"),
    (["--max-bundle-mb", "nan"], "not a finite number"),
    (["--trial-timeout", "nan"], "not a finite number"),
    (["--trial-timeout", "inf"], "not a finite number"),
    (["--trial-timeout", "-5"], "out of range"),
    (["--trial-timeout", "1e9"], "out of range"),
])
def test_init_refuses_numbers_that_would_brick_the_device(tmp_path, signed, args, words):
    """Before: ``init --max-bundle-mb -1`` was written to flash.json and every later install
    was refused as oversize; ``--trial-timeout nan`` made every trial permanent."""
    from host.flash_cli import cli

    root = tmp_path / "dev"
    r = CliRunner().invoke(cli, ["init", "--root", str(root), "--trust", str(signed["pub"]),
                                 *args])
    assert r.exit_code == 2 and words in r.output, r.output
    assert not (root / "flash.json").exists()


@pytest.mark.parametrize("value", [NAN, INF, -1.0, 0.0, "30", True])
def test_push_and_install_refuse_a_trial_timeout_that_never_rolls_back(tmp_path, signed, value):
    from host.flash_cli import cli

    if isinstance(value, float):
        r = CliRunner().invoke(cli, ["push", str(signed["1.0.0"]), "--root", str(tmp_path / "d"),
                                     "--trial-timeout", str(value)])
        assert r.exit_code == 2 and "--trial-timeout" in r.output, r.output
    s = _store(tmp_path, signed)
    with pytest.raises(FlashError, match="trial_timeout_s") as e:
        s.install(signed["1.0.0"], trial_timeout_s=value)
    assert e.value.code == "bad_args" and s.read_pointer()["active"] is None


@pytest.mark.parametrize("bad", [{"max_bundle_bytes": -1}, {"max_bundle_bytes": "big"},
                                 {"max_bundle_bytes": 1.5e300},
                                 {"trial_timeout_s": NAN}, {"trial_timeout_s": -3},
                                 {"trial_timeout_s": None}, {"profile": "x\ny"}])
def test_a_bad_flash_json_value_falls_back_to_the_default(tmp_path, signed, bad):
    s = _store(tmp_path, signed)
    cfg = json.loads((s.root / "flash.json").read_text())
    (s.root / "flash.json").write_text(json.dumps({**cfg, **bad}))
    c = s.config()
    assert c["max_bundle_bytes"] == 256 * 2**20 and c["trial_timeout_s"] == 120.0
    assert "profile" not in c
    out = s.install(signed["1.0.0"])  # before: refused as oversize (-1), or a NaN deadline
    assert out["trial_timeout_s"] == 120.0
    assert 100 < s.status()["revert_in_s"] <= 120


@pytest.mark.parametrize("deadline", [NAN, INF, "soon", None, [1]])
def test_a_trial_with_a_damaged_deadline_rolls_back(tmp_path, signed, deadline):
    """Before: a NaN deadline compared false both ways, so the trial never expired (and a
    text deadline raised ValueError in the agent's tick)."""
    s = _store(tmp_path, signed)
    s.install(signed["1.0.0"])
    s.confirm(check=False)
    s.install(signed["2.0.0"], trial_timeout_s=3600)
    ptr = s.read_pointer()
    assert ptr["state"] == "trial" and ptr["version"] == "2.0.0"
    s.pointer.write_text(json.dumps({**ptr, "deadline": deadline}))
    assert s.status()["revert_in_s"] == 0.0
    out = s.expire()
    assert out is not None and out["version"] == "1.0.0"
    assert s.read_pointer()["state"] == "confirmed"


def test_a_damaged_previous_slot_name_is_ignored(tmp_path, signed):
    s = _store(tmp_path, signed)
    s.install(signed["1.0.0"])
    ptr = s.read_pointer()
    s.pointer.write_text(json.dumps({**ptr, "previous": "../../etc"}))
    assert s.read_pointer()["previous"] is None


def test_agent_refuses_a_nan_trial_timeout_and_keeps_the_upload(tmp_path, signed):
    from edge.agent import Agent, RemoteFailure

    ag = Agent("loop://", state_dir=tmp_path / "state", log=lambda m: None)
    SlotStore(ag.state_dir).init([signed["pub"].read_bytes()])
    staged = ag.staging_dir / "b.hlb"
    staged.write_bytes(signed["1.0.0"].read_bytes())
    with pytest.raises(RemoteFailure, match="trial_timeout_s") as e:
        ag.lookup("flash.install").fn(ag, {"name": "b.hlb", "trial_timeout_s": NAN})
    assert e.value.code == "bad_args"
    assert staged.exists() and SlotStore(ag.state_dir).read_pointer()["active"] is None
    t0 = time.monotonic()
    ag.tick()  # and the tick keeps working
    assert time.monotonic() - t0 < 5
