"""The serial agent's ``flash.*`` messages: bundles into A/B slots (``edge/slots.py``).

Imported by ``edge.agent`` (``EXTENSIONS``). The agent's ``--state-dir`` is the slot store:
its ``trust/`` holds the keys (``flash-to-device init --root STATE_DIR --trust KEY.pub``).
At start the store boots (an unconfirmed trial rolls back, leftovers are dropped); every
agent tick checks the trial deadline.

| message | args | result |
|---|---|---|
| ``flash.status`` | — | the store's status |
| ``flash.staged`` | ``name``, ``sha256`` | ``present``: the upload is complete with that hash |
| ``flash.install`` (slow) | ``name``, ``allow_downgrade``, ``trial_timeout_s`` | slot, health |
| ``flash.confirm`` (slow) | — | slot, version, health, live (checks run first) |
| ``flash.rollback`` | — | slot, version |

Refusals answer with the ``FlashError`` code (``unsigned``, ``bad_signature``,
``unknown_key``, ``tampered``, ``unsafe_path``, ``oversize``, ``incompatible``, ``unhealthy``,
``downgrade``, ``no_space``, ``not_in_trial``, ``no_previous``, ``not_initialised``,
``bad_args``: a trial timeout that is not a finite number in (0, 86400] s).
"""

from __future__ import annotations

import contextlib
import hashlib

from edge.agent import Agent, RemoteFailure, arg, handler
from edge.slots import FlashError, SlotStore, check_trial_timeout


def store(agent: Agent) -> SlotStore:
    s = getattr(agent, "_slot_store", None)
    if s is None:
        s = agent._slot_store = SlotStore(agent.state_dir, profile=agent.profile)
    return s


def _run(fn, *a, **kw):
    try:
        return fn(*a, **kw)
    except FlashError as e:
        raise RemoteFailure(e.code, str(e)) from None


@handler("flash.status")
def _status(agent: Agent, args: dict) -> dict:
    return store(agent).status()


@handler("flash.staged")
def _staged(agent: Agent, args: dict) -> dict:
    name, sha = arg(args, "name", str), arg(args, "sha256", str).lower()
    try:
        p = agent.staged_file(name)
    except RemoteFailure:
        return {"present": False}
    h = hashlib.sha256()
    with p.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"present": h.hexdigest() == sha}


@handler("flash.install", slow=True)
def _install(agent: Agent, args: dict) -> dict:
    path = agent.staged_file(arg(args, "name", str))
    timeout = arg(args, "trial_timeout_s", float, None)
    if timeout is not None:  # refused before install, which drops a refused upload
        timeout = _run(check_trial_timeout, timeout)
    try:
        out = _run(store(agent).install, path,
                   allow_downgrade=arg(args, "allow_downgrade", bool, False),
                   trial_timeout_s=timeout, log=agent.log)
    except RemoteFailure as e:
        if e.code not in ("not_initialised", "io"):  # a refused bundle is not kept
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    with contextlib.suppress(OSError):
        path.unlink()  # installed: the slot holds it now
    return out


@handler("flash.confirm", slow=True)
def _confirm(agent: Agent, args: dict) -> dict:
    return _run(store(agent).confirm, log=agent.log)


@handler("flash.rollback")
def _rollback(agent: Agent, args: dict) -> dict:
    return _run(store(agent).rollback, "requested by the host", agent.log)


def setup_agent(agent: Agent) -> None:
    """Boot the slot store and check the trial deadline on every agent tick."""
    s = store(agent)
    try:
        st = s.boot(log=agent.log)
        if st["active"]:
            agent.log(f"bundle {st['version']} active in slot {st['active']}")
    except (FlashError, OSError) as e:
        agent.log(f"slot store unusable: {e}")
    agent.info_providers["bundle"] = lambda: {k: s.status()[k]
                                              for k in ("active", "state", "version")}
    tick = agent.tick

    def tick_with_trial() -> None:
        tick()
        try:
            s.expire(log=agent.log)
        except (FlashError, OSError) as e:
            agent.log(f"trial expiry failed: {e}")

    agent.tick = tick_with_trial
