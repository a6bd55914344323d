"""Push bundles to a device, and ask it for status, confirm and rollback.

Two transports, one sequence (verify → write inactive slot → health check → switch on trial
→ start check → confirm):

- ``--root DIR``: a device filesystem mounted on this computer (or a local install): the
  slot store (``edge/slots.py``) is driven directly.
- ``--port PORT``: the serial link (``host/link.py``): the bundle is uploaded in CRC-checked
  chunks into the device's staging area (resumed from what the device already holds, so an
  interrupted push continues where it stopped), then ``flash.install`` and
  ``flash.confirm`` run on the device (``edge/flashdev.py``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

from edge.errors import HushlinkError
from edge.slots import SPACE_MARGIN, FlashError, SlotStore
from host.fleet import RolledBack


class PushError(HushlinkError):
    pass


def _store(root: str | Path, profile: str | None) -> SlotStore:
    return SlotStore(root, profile=profile)


# ------------------------------------------------------------------------- --root DIR
def init_root(root: str | Path, keys: list[Path], *, max_bundle_bytes: int | None = None,
              trial_timeout_s: float | None = None, profile: str | None = None) -> list[str]:
    datas = []
    for k in keys:
        try:
            datas.append(Path(k).read_bytes())
        except OSError as e:
            raise PushError(f"cannot read public key {k}: {e.strerror}") from None
    if profile is not None:
        from edge.profile import DeviceProfile

        DeviceProfile.by_name(profile)  # an unknown profile is an error now
    return _store(root, None).init(datas, max_bundle_bytes=max_bundle_bytes,
                                   trial_timeout_s=trial_timeout_s, profile=profile)


def push_root(bundle: str | Path, root: str | Path, *, profile: str | None = None,
              allow_downgrade: bool = False, confirm: bool = True,
              trial_timeout_s: float | None = None, log=lambda msg: None) -> dict:
    """Install into a mounted device root; confirms after a healthy start unless told not to."""
    t0 = time.perf_counter()
    s = _store(root, profile)
    s.boot(log=log)  # a trial left over from an earlier, interrupted push is not kept
    out = s.install(bundle, allow_downgrade=allow_downgrade, trial_timeout_s=trial_timeout_s,
                    log=log)
    if confirm:
        done = s.confirm(log=log)
        out["confirmed"], out["live"] = done["health"], done["live"]
    out["state"] = s.status()["state"]
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def status_root(root: str | Path, profile: str | None = None) -> dict:
    return _store(root, profile).status()


def rollback_root(root: str | Path) -> dict:
    return _store(root, None).rollback("requested")


def confirm_root(root: str | Path) -> dict:
    return _store(root, None).confirm()


# ------------------------------------------------------------------------- --port PORT
def _connect(port: str, baud: int, pace: bool = False):
    from host.link import connect

    dev = connect(port, baud, pace=pace, timeout=1.0)
    if "flash.install" not in dev.info.get("messages", []):
        dev.close()
        raise PushError(f"the agent on {port} has no flash messages (hushlink "
                        f"{dev.info.get('runtime')} without edge/flashdev.py)")
    return dev


def _call(dev, method: str, args: dict | None = None):
    from host.link import RemoteError

    try:
        return dev.call(method, args or {})
    except RemoteError as e:  # the device's one-line reason, with its code
        raise FlashError(f"{e.remote_message} [{e.code}]", e.code) from None


def push_serial(bundle: str | Path, port: str, baud: int = 921_600, *,
                allow_downgrade: bool = False, confirm: bool = True,
                trial_timeout_s: float | None = None, pace: bool = False,
                progress: Callable[[int, int], None] | None = None,
                log=lambda msg: None, stage: Callable[[str], None] = lambda s: None,
                rollback_on_failure: bool = False) -> dict:
    """Upload (resuming), install, and confirm over the serial link. Returns a summary with
    the transfer's bytes, seconds and resume offset. ``stage`` hears "upload", "install",
    "confirm" as they start. ``rollback_on_failure``: when the switched bundle fails its
    confirm-time checks, leave the device on its previous bundle now (raise ``RolledBack``)
    rather than on trial until its deadline (fleet pushes)."""
    p = Path(bundle)
    try:  # before connecting: a missing bundle is the user's error, not the device's
        p.open("rb").close()
    except OSError as e:
        raise PushError(f"cannot read {p}: {e.strerror}") from None
    with _connect(port, baud, pace) as dev:
        return push_over(dev, p, allow_downgrade=allow_downgrade, confirm=confirm,
                         trial_timeout_s=trial_timeout_s, progress=progress, log=log,
                         stage=stage, rollback_on_failure=rollback_on_failure)


def push_over(dev, bundle: str | Path, *, allow_downgrade: bool = False, confirm: bool = True,
              trial_timeout_s: float | None = None,
              progress: Callable[[int, int], None] | None = None,
              log=lambda msg: None, stage: Callable[[str], None] = lambda s: None,
              rollback_on_failure: bool = False) -> dict:
    """``push_serial`` on a connection the caller holds (the dashboard's own)."""
    p = Path(bundle)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise PushError(f"cannot read {p}: {e.strerror}") from None
    sha = hashlib.sha256(data).hexdigest()
    name = f"bundle-{sha[:16]}.hlb"  # content-named: a resumed push finds its partial upload
    t0 = time.perf_counter()
    if "flash.install" not in dev.info.get("messages", []):
        raise PushError(f"the agent on {dev.url} has no flash messages")
    old_slow = dev.rpc.slow_timeout
    dev.rpc.slow_timeout = 120.0  # install/confirm run a health check (a subprocess)
    try:
        first: list[int] = []

        def cb(done: int, total: int) -> None:
            if not first:
                first.append(done)
            if progress:
                progress(done, total)

        st = _call(dev, "flash.status")
        staged = _call(dev, "flash.staged", {"name": name, "sha256": sha})["present"]
        if len(data) > st.get("max_bundle_bytes", len(data)):
            raise FlashError(f"bundle is {len(data):,} bytes, over the device's limit of "
                             f"{st['max_bundle_bytes']:,}; not sent", "oversize")
        need = (1 if staged else 2) * len(data) + SPACE_MARGIN  # upload + slot copy
        if st.get("free_bytes") is not None and st["free_bytes"] < need:
            raise FlashError(f"not enough disk space on the device: the bundle needs {need:,} "
                             f"bytes, {st['free_bytes']:,} are free; not sent", "no_space")
        t_up = time.perf_counter()
        stage("upload")
        if staged:
            first.append(len(data))
            if progress:
                progress(len(data), len(data))
        else:
            dev.upload(p, name, progress=cb)
        upload_s = time.perf_counter() - t_up
        args = {"name": name, "allow_downgrade": allow_downgrade}
        if trial_timeout_s is not None:
            args["trial_timeout_s"] = float(trial_timeout_s)
        log("verifying, writing the inactive slot and checking health on the device")
        stage("install")
        out = _call(dev, "flash.install", args)
        if confirm:
            stage("confirm")
            try:
                done = _call(dev, "flash.confirm")
            except FlashError as e:
                if not rollback_on_failure:
                    raise
                raise _rolled_back(dev, out, e) from None
            out["confirmed"], out["live"] = done["health"], done.get("live")
        out["state"] = _call(dev, "flash.status")["state"]
    finally:
        dev.rpc.slow_timeout = old_slow
    out.update(bytes=len(data), resumed_from=first[0] if first else 0,
               upload_s=round(upload_s, 3), seconds=round(time.perf_counter() - t0, 3))
    return out


def _rolled_back(dev, out: dict, why: FlashError) -> RolledBack:
    """After a failed confirm: roll back what is still on trial (a failed live check has
    rolled back already) and say what the device runs now."""
    st = _call(dev, "flash.status")
    if st["state"] == "trial" and st["active"] == out["slot"]:
        _call(dev, "flash.rollback")
        st = _call(dev, "flash.status")
    now = f"bundle {st['version']}" if st.get("version") else "the packaged model"
    msg = str(why) if "rolled back" in str(why) else f"{why}; rolled back to {now}"
    return RolledBack(msg, {"tried": out["version"], "slot": st["active"],
                            "version": st.get("version"), "state": st["state"],
                            "code": why.code})


def status_serial(port: str, baud: int = 921_600) -> dict:
    with _connect(port, baud) as dev:
        return _call(dev, "flash.status")


def rollback_serial(port: str, baud: int = 921_600) -> dict:
    with _connect(port, baud) as dev:
        return _call(dev, "flash.rollback")


def confirm_serial(port: str, baud: int = 921_600) -> dict:
    with _connect(port, baud) as dev:
        return _call(dev, "flash.confirm")
