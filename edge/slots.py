"""A/B bundle slots on the device: install, verify, health check, atomic switch, trial, rollback.

A state directory (the agent's ``--state-dir``, or a ``--root DIR`` stand-in for a device)::

    trust/<key_id>.pub      ed25519 public keys this device accepts bundles from (PEM)
    flash.json              max_bundle_bytes, trial_timeout_s, profile (written by init)
    slots/A/, slots/B/      an extracted bundle each: manifest.json, manifest.sig, files
    slots/.incoming/        a bundle being written (removed at start: never used)
    active.json             the pointer: {active, previous, state: confirmed|trial, deadline}

Why this order: every check that can refuse a bundle (size, archive paths, signature, key,
hashes, compatibility, downgrade, disk space) runs on the archive before anything on disk
changes; the new bundle is written to ``.incoming``, fsynced, verified again from disk and
health-checked (the model loaded by the interpreter in a subprocess, its test vector run),
and only then moved into the inactive slot. The switch is one ``os.replace`` of
``active.json`` followed by an fsync of the directory, so after a crash at any point the
pointer names either the old slot or the new one, each complete and verified. A switch
enters *trial*: ``confirm`` makes it permanent; a restart before that (``boot``) or the
deadline passing (``expire``) rolls back to the previous slot.

The bundle format (written by ``host/bundle.py``) is an uncompressed tar of flat names:
``manifest.json`` (see ``check_manifest``), ``manifest.sig`` (JSON: ``key_id``, ``alg``,
``sig`` base64 of the ed25519 signature over the exact manifest bytes), and the files the
manifest lists with their sizes and sha256.

Test hook: ``HUSHLINK_CRASH_AT=<stage>`` makes the process SIGKILL itself at that stage
(``after-write``, ``after-verify``, ``after-slot``, ``mid-switch``, ``after-switch``) so the
crash-consistency tests can stop it exactly there.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from edge import __version__, validate
from edge.errors import HushlinkError

FORMAT = "hushlink-bundle"
FORMAT_VERSION = 1
MANIFEST, SIGNATURE = "manifest.json", "manifest.sig"
SLOTS = ("A", "B")
DEFAULT_MAX_BUNDLE = 256 * 2**20  # bytes; a model + config is a few MiB
DEFAULT_TRIAL_TIMEOUT_S = 120.0
MAX_BUNDLE_BYTES = (1, 2**40)  # allowed max_bundle_bytes
TRIAL_TIMEOUT_S = (0.0, 86_400.0)  # allowed trial timeouts: (0 excluded, a day]
SPACE_MARGIN = 1 * 2**20  # bytes kept free beyond what the bundle needs
MAX_META = 1 * 2**20  # manifest.json / manifest.sig larger than this are refused unread
CRASH_STAGES = ("after-write", "after-verify", "after-slot", "mid-switch", "after-switch")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class FlashError(HushlinkError):
    """A bundle or slot operation refused; ``code`` is machine-readable (the serial error)."""

    code = "flash"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        if code:
            self.code = code


def _err(code: str, msg: str) -> FlashError:
    return FlashError(msg, code)


def _bad_args(msg: str) -> FlashError:
    return FlashError(msg, "bad_args")


def check_max_bundle_bytes(v: object) -> int:
    """A bundle size limit: a whole number of bytes, 1 B .. 1 TiB. Raises FlashError."""
    return validate.number("max_bundle_bytes", v, kind=int, lo=MAX_BUNDLE_BYTES[0],
                           hi=MAX_BUNDLE_BYTES[1], error=_bad_args)


def check_trial_timeout(v: object) -> float:
    """Seconds a switched bundle may stay unconfirmed: finite, > 0, at most a day (NaN or
    infinity would never roll back). Raises FlashError."""
    return validate.number("trial_timeout_s", v, lo=TRIAL_TIMEOUT_S[0], hi=TRIAL_TIMEOUT_S[1],
                           lo_open=True, error=_bad_args)


def trial_deadline(ptr: dict) -> float:
    """The pointer's trial deadline (epoch s); anything but a finite number counts as
    already passed, so a damaged pointer rolls back instead of staying on trial for ever."""
    d = ptr.get("deadline")
    if isinstance(d, bool) or not isinstance(d, int | float) or not math.isfinite(d):
        return 0.0
    return float(d)


# ------------------------------------------------------------------------- small pure helpers
def key_id(public_raw: bytes) -> str:
    """16 hex digits naming a public key: the start of the sha256 of its 32 raw bytes."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def version_key(v: str) -> tuple:
    """Sortable key for ``1.2.3`` / ``1.2.3-rc1`` (a pre-release sorts before its release)."""
    m = re.match(r"^\s*v?(\d+(?:\.\d+)*)(.*)$", str(v))
    if not m:
        raise _err("bad_manifest", f"version {v!r} is not like 1.2.3")
    nums = tuple(int(x) for x in m.group(1).split("."))
    nums += (0,) * (4 - len(nums))
    rest = m.group(2).lstrip("-+.")
    return (*nums, 0 if rest else 1, rest)


def check_entry_name(name: str) -> None:
    """Refuse absolute paths, ``..``, directories and anything but a plain flat file name."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise _err("unsafe_path", f"archive entry {name!r} has an absolute path; refused")
    if ".." in re.split(r"[/\\]", name):
        raise _err("unsafe_path", f"archive entry {name!r} climbs out with '..'; refused")
    if not _NAME.match(name):
        raise _err("unsafe_path", f"archive entry {name!r} is not a plain file name; refused")


def check_manifest(m: dict, *, runtime: str = __version__, profile: str | None = None) -> None:
    """Structure and compatibility of a manifest (no I/O). Raises FlashError."""
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise _err("bad_manifest", f"not a hushlink bundle manifest (format {FORMAT!r} expected)")
    if m.get("format_version") != FORMAT_VERSION:
        raise _err("incompatible", f"bundle format_version {m.get('format_version')!r}; this "
                   f"runtime reads version {FORMAT_VERSION}")
    for k in ("version", "created", "min_runtime", "profiles", "model", "files"):
        if k not in m:
            raise _err("bad_manifest", f"manifest lacks {k!r}")
    version_key(m["version"])
    if version_key(m["min_runtime"]) > version_key(runtime):
        raise _err("incompatible", f"bundle needs runtime {m['min_runtime']} or newer; this "
                   f"device runs {runtime} (update hushlink on the device first)")
    profiles = m["profiles"]
    if profile and profiles and profile not in profiles:
        raise _err("incompatible", f"bundle fits hardware profiles {', '.join(profiles)}, "
                   f"not this device's {profile!r}")
    files = m["files"]
    if not isinstance(files, list) or not files:
        raise _err("bad_manifest", "manifest lists no files")
    seen = set()
    for f in files:
        if not isinstance(f, dict) or not {"path", "size", "sha256"} <= set(f):
            raise _err("bad_manifest", "each manifest file needs path, size and sha256")
        check_entry_name(f["path"])
        if f["path"] in (MANIFEST, SIGNATURE) or f["path"] in seen:
            raise _err("bad_manifest", f"manifest lists {f['path']!r} twice or as a reserved name")
        seen.add(f["path"])
    model = m["model"]
    if model.get("file") not in seen or model.get("metadata_file") not in seen:
        raise _err("bad_manifest", "manifest's model file / metadata file are not in its list")
    _check_front_end(model.get("metadata", {}))


def _check_front_end(md: dict) -> None:
    """The model's rate, hop and window against this runtime's front end."""
    from edge.dsp import FrontEnd

    want = FrontEnd().as_dict()
    fe = md.get("front_end") or {}
    diffs = [f"{k} {fe.get(k)!r} (runtime {want[k]!r})"
             for k in ("sample_rate", "win", "hop", "n_fft", "n_bins", "window", "feature")
             if fe.get(k) != want[k]]
    if diffs:
        raise _err("incompatible", f"model front end does not match this runtime: "
                   f"{'; '.join(diffs)}")
    shapes = md.get("state_shapes")
    if (not isinstance(shapes, list)
            or not all(isinstance(s, list) and s and all(isinstance(n, int) and n > 0 for n in s)
                       for s in shapes)):
        raise _err("incompatible", f"model state_shapes {shapes!r} are not a list of shapes")


def verify_signature(manifest_bytes: bytes, sig_bytes: bytes | None, trusted: dict) -> str:
    """Check ``manifest.sig`` against ``trusted`` ({key_id: Ed25519PublicKey}); returns the
    key id. Raises FlashError: missing, malformed, unknown key, does not verify."""
    from cryptography.exceptions import InvalidSignature

    if sig_bytes is None:
        raise _err("unsigned", f"bundle is not signed (no {SIGNATURE}); refused")
    try:
        sig = json.loads(sig_bytes)
        kid, raw = str(sig["key_id"]), base64.b64decode(sig["sig"], validate=True)
        if sig.get("alg", "ed25519") != "ed25519":
            raise ValueError(f"algorithm {sig.get('alg')!r}")
    except (ValueError, KeyError, TypeError) as e:
        raise _err("bad_signature", f"{SIGNATURE} is malformed ({e}); refused") from None
    key = trusted.get(kid)
    if key is None:
        raise _err("unknown_key", f"bundle is signed by key {kid}, which this device does not "
                   "trust (add it with `flash-to-device init --trust KEY.pub`)")
    try:
        key.verify(raw, manifest_bytes)
    except InvalidSignature:
        raise _err("bad_signature", f"bundle signature does not verify with key {kid} "
                   "(the manifest was altered or signed by another key); refused") from None
    return kid


def load_public_key(data: bytes):
    """An Ed25519 public key from PEM (SubjectPublicKeyInfo) or 32 raw bytes."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        if len(data) == 32:
            return Ed25519PublicKey.from_public_bytes(data)
        key = serialization.load_pem_public_key(data)
    except ValueError as e:
        raise _err("bad_key", f"not an ed25519 public key ({e})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise _err("bad_key", "not an ed25519 public key")
    return key


def public_raw(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# ------------------------------------------------------------------------------- the archive
@dataclass(frozen=True)
class Bundle:
    """A bundle read and verified from its archive (nothing written yet)."""

    manifest: dict
    manifest_bytes: bytes
    sig_bytes: bytes
    key_id: str

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def payload_bytes(self) -> int:
        return sum(int(f["size"]) for f in self.manifest["files"]) + len(self.manifest_bytes)


def read_bundle(path: str | os.PathLike, trusted: dict, *, max_bytes: int = DEFAULT_MAX_BUNDLE,
                runtime: str = __version__, profile: str | None = None) -> Bundle:
    """Open, bound, and verify a bundle archive without extracting it: entry names, signature
    against ``trusted``, manifest compatibility, and the sha256 of every listed file."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as e:
        raise _err("not_found", f"cannot read bundle {p}: {e.strerror}") from None
    if size > max_bytes:
        raise _err("oversize", f"bundle is {size:,} bytes, over this device's limit of "
                   f"{max_bytes:,}; refused")
    try:
        tf = tarfile.open(p, "r:")  # noqa: SIM115 (closed by the with below)
    except (tarfile.TarError, OSError) as e:
        raise _err("bad_bundle", f"{p.name} is not a bundle archive ({e})") from None
    with tf:
        try:
            members = tf.getmembers()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise _err("bad_bundle", f"{p.name}: damaged archive ({e})") from None
        by_name: dict[str, tarfile.TarInfo] = {}
        for mem in members:
            check_entry_name(mem.name)
            if not mem.isreg():
                raise _err("unsafe_path", f"archive entry {mem.name!r} is not a regular file "
                           "(links and devices are refused)")
            if mem.name in by_name:
                raise _err("bad_bundle", f"archive entry {mem.name!r} appears twice")
            by_name[mem.name] = mem
        if sum(m.size for m in members) > max_bytes:
            raise _err("oversize", f"bundle content exceeds this device's limit of "
                       f"{max_bytes:,} bytes; refused")

        def small(name: str) -> bytes | None:
            mem = by_name.get(name)
            if mem is None:
                return None
            if mem.size > MAX_META:
                raise _err("oversize", f"{name} is {mem.size:,} bytes; refused")
            return tf.extractfile(mem).read()

        manifest_bytes = small(MANIFEST)
        if manifest_bytes is None:
            raise _err("bad_bundle", f"{p.name} has no {MANIFEST}: not a hushlink bundle")
        sig_bytes = small(SIGNATURE)
        kid = verify_signature(manifest_bytes, sig_bytes, trusted)
        try:
            manifest = json.loads(manifest_bytes)
        except ValueError as e:
            raise _err("bad_manifest", f"{MANIFEST} is not JSON ({e})") from None
        check_manifest(manifest, runtime=runtime, profile=profile)
        listed = {f["path"]: f for f in manifest["files"]}
        extra = set(by_name) - set(listed) - {MANIFEST, SIGNATURE}
        if extra:
            raise _err("tampered", f"archive holds files the signed manifest does not list: "
                       f"{', '.join(sorted(extra))}; refused")
        for name, f in listed.items():
            mem = by_name.get(name)
            if mem is None:
                raise _err("tampered", f"{name} is listed in the manifest but missing")
            if mem.size != f["size"]:
                raise _err("tampered", f"{name} is {mem.size} bytes, the signed manifest says "
                           f"{f['size']} (tampered or corrupt); refused")
            if _sha256_stream(tf.extractfile(mem)) != f["sha256"]:
                raise _err("tampered", f"{name} does not match its sha256 in the signed "
                           "manifest (tampered or corrupt); refused")
    return Bundle(manifest, manifest_bytes, sig_bytes, kid)


def _sha256_stream(f) -> str:
    h = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------ durable files
def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: Path, data: bytes, *, hook: str | None = None) -> None:
    """Write via a temp file, fsync it, rename over ``path``, fsync the directory."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if hook:
        crash_point(hook)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def crash_point(stage: str) -> None:
    """Test hook: SIGKILL this process at ``stage`` when HUSHLINK_CRASH_AT names it."""
    if os.environ.get("HUSHLINK_CRASH_AT") == stage:
        sys.stderr.write(f"HUSHLINK_CRASH_AT={stage}: killing myself\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------------------- health check
def health_check(slot_dir: Path, timeout_s: float = 60.0) -> dict:
    """Load the slot's model with the TFLite interpreter and run its test vector, in a
    subprocess so that a model that crashes the interpreter cannot take the caller down.
    Returns ``{"ok": True, "max_error": ..., "backend": ...}`` or raises FlashError."""
    cmd = [sys.executable, "-m", "edge.slots", "check", str(slot_dir)]
    env = {k: v for k, v in os.environ.items() if k != "HUSHLINK_CRASH_AT"}
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        raise _err("unhealthy", f"health check did not finish in {timeout_s:.0f} s") from None
    try:
        out = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise _err("unhealthy", f"health check crashed (exit {r.returncode}): {tail}") from None
    if not out.get("ok"):
        raise _err("unhealthy", f"health check failed: {out.get('error')}")
    return out


def _check_slot_main(slot_dir: str) -> int:
    """``python -m edge.slots check DIR``: one JSON line (the health check's child side)."""
    from edge.dsp import FrontEnd
    from edge.model import StepModel

    try:
        d = Path(slot_dir)
        m = json.loads((d / MANIFEST).read_text())
        model = StepModel(d / m["model"]["file"], front_end=FrontEnd())
        md = model.metadata.to_dict()
        for k in ("name", "version", "front_end", "state_shapes", "tflite_sha256"):
            if m["model"]["metadata"].get(k) != md.get(k):
                raise HushlinkError(f"model metadata {k!r} differs from the manifest's")
        err = model.check_test_vector()
        out = {"ok": True, "max_error": round(err, 6), "backend": model.backend,
               "model": md["name"], "model_version": md["version"]}
    except Exception as e:  # any failure is a failed check, reported as one line
        msg = str(e).replace(f"{Path(slot_dir)}/", "")  # "model.tflite: ...", not a temp path
        out = {"ok": False, "error": f"{type(e).__name__}: {msg}"}
    print(json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


# -------------------------------------------------------------------------------- the store
class SlotStore:
    """The device's bundle state under ``root``. Each public method holds an exclusive lock
    (``root/.lock``), so a CLI and the agent never interleave."""

    def __init__(self, root: str | os.PathLike, *, profile: str | None = None,
                 runtime: str = __version__, health=health_check, live_check=None):
        self.root = Path(root)
        self.profile, self.runtime, self.health = profile, runtime, health
        self.live_check = live_check  # None: edge.liveslot.live_check (the running service)
        self.slots_dir = self.root / "slots"
        self.trust_dir = self.root / "trust"
        self.pointer = self.root / "active.json"

    # -- setup
    def init(self, keys: list[bytes], *, max_bundle_bytes: int | None = None,
             trial_timeout_s: float | None = None, profile: str | None = None) -> list[str]:
        """Create the layout and add trusted public keys (PEM or raw); returns their ids."""
        self.trust_dir.mkdir(parents=True, exist_ok=True)
        self.slots_dir.mkdir(exist_ok=True)
        ids = []
        with self._locked():
            for data in keys:
                key = load_public_key(data)
                kid = key_id(public_raw(key))
                from cryptography.hazmat.primitives import serialization

                pem = key.public_bytes(serialization.Encoding.PEM,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)
                write_durable(self.trust_dir / f"{kid}.pub", pem)
                ids.append(kid)
            cfg = self.config()
            if max_bundle_bytes is not None:
                cfg["max_bundle_bytes"] = check_max_bundle_bytes(max_bundle_bytes)
            if trial_timeout_s is not None:
                cfg["trial_timeout_s"] = check_trial_timeout(trial_timeout_s)
            if profile is not None:
                cfg["profile"] = validate.plain_text("profile", profile, max_len=128,
                                                     error=_bad_args)
            write_durable(self.root / "flash.json", json.dumps(cfg, indent=1).encode())
            if not self.pointer.exists():
                self._write_pointer({"active": None, "previous": None, "state": "empty"})
        return ids

    def config(self) -> dict:
        """``flash.json`` over the defaults; a value of the wrong type or out of range (a
        hand-edited file, an older tool) is ignored, so it cannot stop installs for good."""
        cfg = {"max_bundle_bytes": DEFAULT_MAX_BUNDLE, "trial_timeout_s": DEFAULT_TRIAL_TIMEOUT_S}
        try:
            saved = json.loads((self.root / "flash.json").read_text())
        except (OSError, ValueError):
            return cfg
        checks = {"max_bundle_bytes": check_max_bundle_bytes,
                  "trial_timeout_s": check_trial_timeout,
                  "profile": lambda v: validate.plain_text("profile", v, max_len=128,
                                                           error=_bad_args)}
        for k, v in (saved.items() if isinstance(saved, dict) else ()):
            with contextlib.suppress(FlashError):
                cfg[k] = checks[k](v) if k in checks else v
        return cfg

    def trusted(self) -> dict:
        keys = {}
        for p in sorted(self.trust_dir.glob("*.pub")) if self.trust_dir.is_dir() else []:
            with contextlib.suppress(FlashError, OSError):
                key = load_public_key(p.read_bytes())
                keys[key_id(public_raw(key))] = key
        return keys

    def _require_init(self) -> None:
        if not self.trusted():
            raise _err("not_initialised", f"{self.root} trusts no keys: initialise it with "
                       "`flash-to-device init --root DIR --trust KEY.pub`")

    @contextlib.contextmanager
    def _locked(self, wait: bool = True):
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            yield

    # -- the pointer
    def read_pointer(self) -> dict:
        try:
            d = json.loads(self.pointer.read_text())
            if d.get("active") in (*SLOTS, None):
                return d if d.get("previous") in (*SLOTS, None) else {**d, "previous": None}
        except (FileNotFoundError, ValueError, AttributeError):
            pass
        return {"active": None, "previous": None, "state": "empty"}

    def _write_pointer(self, d: dict, hook: str | None = None) -> None:
        d = {**d, "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_durable(self.pointer, json.dumps(d, indent=1).encode(), hook=hook)

    def active_dir(self) -> Path | None:
        """The active slot's directory (the runtime loads its model from here), or None."""
        a = self.read_pointer().get("active")
        return self.slots_dir / a if a else None

    def active_model(self) -> Path | None:
        """Path of the active bundle's ``.tflite`` (None: no bundle, use the packaged model)."""
        d = self.active_dir()
        if d is None:
            return None
        with contextlib.suppress(OSError, ValueError, KeyError):
            return d / json.loads((d / MANIFEST).read_text())["model"]["file"]
        return None

    # -- verification of an installed slot
    def verify_slot(self, slot: str | Path) -> dict:
        """Signature and every file's sha256 of an extracted slot, read back from disk."""
        d = slot if isinstance(slot, Path) else self.slots_dir / slot
        try:
            mb = (d / MANIFEST).read_bytes()
            sb = (d / SIGNATURE).read_bytes()
        except OSError:
            raise _err("bad_slot", f"slot {d.name} holds no complete bundle") from None
        verify_signature(mb, sb, self.trusted())
        m = json.loads(mb)
        for f in m["files"]:
            p = d / f["path"]
            try:
                with p.open("rb") as fh:
                    ok = _sha256_stream(fh) == f["sha256"]
            except OSError:
                ok = False
            if not ok:
                raise _err("bad_slot", f"slot {d.name}: {f['path']} is missing or does not "
                           "match the manifest")
        return m

    def _slot_ok(self, slot: str | None) -> bool:
        if slot is None:
            return False
        try:
            self.verify_slot(slot)
            return True
        except FlashError:
            return False

    # -- install
    def install(self, bundle_path: str | os.PathLike, *, allow_downgrade: bool = False,
                trial_timeout_s: float | None = None, log=lambda msg: None) -> dict:
        """Verify, write to the inactive slot, health-check, and switch into trial."""
        if trial_timeout_s is not None:
            trial_timeout_s = check_trial_timeout(trial_timeout_s)
        self._require_init()
        with self._locked():
            cfg = self.config()
            bundle = read_bundle(bundle_path, self.trusted(), max_bytes=cfg["max_bundle_bytes"],
                                 runtime=self.runtime,
                                 profile=self.profile or cfg.get("profile"))
            ptr = self.read_pointer()
            cur = self._active_manifest(ptr)
            if (cur is not None and not allow_downgrade
                    and version_key(bundle.version) < version_key(cur["version"])):
                raise _err("downgrade", f"bundle version {bundle.version} is older than the "
                           f"active {cur['version']}; pass --allow-downgrade to install it")
            self.slots_dir.mkdir(exist_ok=True)
            need = bundle.payload_bytes + SPACE_MARGIN
            free = shutil.disk_usage(self.slots_dir).free
            if free < need:
                raise _err("no_space", f"not enough disk space in {self.root}: the bundle needs "
                           f"{need:,} bytes, {free:,} are free; refused")
            target = "B" if ptr.get("active") == "A" else "A"
            log(f"writing {Path(bundle_path).name} ({bundle.version}) to slot {target}")
            incoming = self.slots_dir / ".incoming"
            try:
                self._extract(bundle_path, bundle, incoming)
            except OSError as e:
                shutil.rmtree(incoming, ignore_errors=True)
                raise _err("no_space" if e.errno == 28 else "io",
                           f"writing the bundle failed: {e.strerror}; nothing changed") from None
            crash_point("after-write")
            try:
                self.verify_slot(incoming)
                health = self.health(incoming)
            except FlashError:
                shutil.rmtree(incoming, ignore_errors=True)
                raise
            crash_point("after-verify")
            if ptr.get("previous") == target:  # the rollback target is about to be replaced
                ptr = {**ptr, "previous": None}
                self._write_pointer(ptr)
            slot = self.slots_dir / target
            shutil.rmtree(slot, ignore_errors=True)
            os.replace(incoming, slot)
            fsync_dir(self.slots_dir)
            crash_point("after-slot")
            timeout = cfg["trial_timeout_s"] if trial_timeout_s is None else trial_timeout_s
            new = {"active": target, "previous": ptr.get("active"), "state": "trial",
                   "deadline": time.time() + float(timeout), "version": bundle.version}
            self._write_pointer(new, hook="mid-switch")
            crash_point("after-switch")
            log(f"slot {target} active on trial ({timeout:.0f} s to confirm)")
            return {"slot": target, "version": bundle.version, "key_id": bundle.key_id,
                    "health": health, "trial_timeout_s": timeout}

    def _active_manifest(self, ptr: dict) -> dict | None:
        a = ptr.get("active")
        if a is None:
            return None
        with contextlib.suppress(OSError, ValueError):
            return json.loads((self.slots_dir / a / MANIFEST).read_text())
        return None

    def _extract(self, bundle_path, bundle: Bundle, dest: Path) -> None:
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        names = [f["path"] for f in bundle.manifest["files"]]
        with tarfile.open(bundle_path, "r:") as tf:
            for name in (*names, MANIFEST, SIGNATURE):  # names were checked by read_bundle
                src = tf.extractfile(tf.getmember(name))
                with (dest / name).open("wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                    out.flush()
                    os.fsync(out.fileno())
        fsync_dir(dest)
        fsync_dir(dest.parent)

    # -- trial lifecycle
    def confirm(self, *, check=True, log=lambda msg: None) -> dict:
        """Make the trial permanent, after a start check of the active slot and, when a live
        service runs on this directory, a check of that service on the new model (``check``;
        edge/liveslot.py). A failed live check rolls back (the service follows)."""
        with self._locked():
            self._expire_locked(log=lambda m: None)
            ptr = self.read_pointer()
            if ptr.get("state") != "trial":
                raise _err("not_in_trial", "no bundle is waiting for confirmation (already "
                           "confirmed, or rolled back)")
            health = self.health(self.slots_dir / ptr["active"]) if check else None
            live = self._live_check_locked(log) if check else None
            self._write_pointer({**ptr, "state": "confirmed", "deadline": None})
            return {"slot": ptr["active"], "version": ptr.get("version"), "health": health,
                    "live": live}

    def _running_key(self) -> tuple:
        """(slot, version, model sha256) the live service should report for the pointer."""
        from edge import liveslot

        ptr = self.read_pointer()
        m = self._active_manifest(ptr)
        if m is None:
            return liveslot.resolve(self.root).key  # no bundle: the packaged model
        return (ptr["active"], str(m["version"]), m["model"]["sha256"])

    def _live_check_locked(self, log) -> dict:
        from edge import liveslot

        check = self.live_check or liveslot.live_check
        want = self._running_key()
        try:
            return check(self.root, want, timeout_s=float(self.config().get(
                "live_check_timeout_s", liveslot.CHECK_TIMEOUT_S)))
        except FlashError as e:
            back = self._end_trial_locked(str(e), log)
            if back.get("slot") is not None and back["slot"] == want[0]:
                raise _err(e.code, f"{e}; kept: the previous slot does not verify") from None
            name = f"bundle {back['version']}" if back.get("version") else "the packaged model"
            runs = liveslot.wait_running(self.root, self._running_key())
            raise _err(e.code, f"{e}; rolled back to {name}"
                       + (", which the live service runs again" if runs else
                          " (the live service has not reported it yet)")) from None

    def rollback(self, reason: str = "requested", log=lambda msg: None) -> dict:
        """Switch to the previous slot (verified first); from a trial, or a confirmed one."""
        with self._locked():
            return self._rollback_locked(reason, log)

    def _rollback_locked(self, reason: str, log) -> dict:
        ptr = self.read_pointer()
        prev = ptr.get("previous")
        if ptr.get("state") == "trial" and prev is None:
            # the first bundle on trial: back to "no bundle" (the packaged model)
            self._write_pointer({"active": None, "previous": None, "state": "empty"})
            log(f"rolled back ({reason}) to no bundle")
            return {"slot": None, "version": None, "reason": reason}
        if prev is None or not self._slot_ok(prev):
            raise _err("no_previous", "there is no complete, verified previous slot to roll "
                       "back to")
        m = self._active_manifest({"active": prev})
        self._write_pointer({"active": prev, "previous": ptr.get("active"), "state": "confirmed",
                             "deadline": None, "version": m["version"] if m else None})
        log(f"rolled back ({reason}) to slot {prev}")
        return {"slot": prev, "version": m["version"] if m else None, "reason": reason}

    def expire(self, log=lambda msg: None, *, wait: bool = True) -> dict | None:
        """Roll back an unconfirmed trial whose deadline has passed (call periodically).
        ``wait=False``: raise BlockingIOError rather than wait for a running install or
        confirm (the live service must not stall on one)."""
        ptr = self.read_pointer()
        if ptr.get("state") != "trial" or time.time() < trial_deadline(ptr):
            return None
        with self._locked(wait=wait):
            return self._expire_locked(log)

    def _expire_locked(self, log) -> dict | None:
        ptr = self.read_pointer()
        if ptr.get("state") == "trial" and time.time() >= trial_deadline(ptr):
            return self._end_trial_locked("trial not confirmed in time", log)
        return None

    def _end_trial_locked(self, reason: str, log) -> dict:
        """Roll a trial back; if the previous slot no longer verifies, the trial's bundle is
        the only good one: keep it (confirmed) rather than retry for ever."""
        try:
            return self._rollback_locked(reason, log)
        except FlashError:
            ptr = self.read_pointer()
            self._write_pointer({**ptr, "state": "confirmed", "deadline": None})
            log(f"{reason}, but the previous slot does not verify: keeping slot "
                f"{ptr.get('active')}")
            return {"slot": ptr.get("active"), "version": ptr.get("version"), "reason": reason}

    def boot(self, log=lambda msg: None) -> dict:
        """At start: drop half-written leftovers, roll back an unconfirmed trial, and make
        sure the active slot verifies (else fall back to the other one, or to none)."""
        if not self.root.is_dir():
            return self.status()
        with self._locked():
            shutil.rmtree(self.slots_dir / ".incoming", ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                self.pointer.with_name(f".{self.pointer.name}.tmp").unlink()
            ptr = self.read_pointer()
            if ptr.get("state") == "trial":
                self._end_trial_locked("restarted before the trial was confirmed", log)
                ptr = self.read_pointer()
            a = ptr.get("active")
            if a is not None and not self._slot_ok(a):
                other = "B" if a == "A" else "A"
                if self._slot_ok(other):
                    log(f"slot {a} does not verify: falling back to slot {other}")
                    m = self._active_manifest({"active": other})
                    self._write_pointer({"active": other, "previous": None,
                                         "state": "confirmed", "version": m["version"]})
                else:
                    log(f"slot {a} does not verify and no other slot does: no bundle active")
                    self._write_pointer({"active": None, "previous": None, "state": "empty"})
        return self.status()

    def status(self) -> dict:
        ptr = self.read_pointer()
        slots = {}
        for s in SLOTS:
            m = self._active_manifest({"active": s})
            slots[s] = None if m is None else {
                "version": m.get("version"), "model": m["model"].get("name"),
                "model_version": m["model"].get("version"), "created": m.get("created")}
        left = None
        if ptr.get("state") == "trial":
            left = round(max(0.0, trial_deadline(ptr) - time.time()), 1)
        try:
            free = shutil.disk_usage(self.root).free
        except OSError:
            free = None
        return {"root": str(self.root), "active": ptr.get("active"), "free_bytes": free,
                "max_bundle_bytes": self.config()["max_bundle_bytes"],
                "previous": ptr.get("previous"), "state": ptr.get("state", "empty"),
                "version": ptr.get("version"), "revert_in_s": left, "slots": slots,
                "trusted_keys": sorted(self.trusted()), "runtime": self.runtime,
                "profile": self.profile or self.config().get("profile"),
                "live": _live_brief(self.root)}


def _live_brief(root: Path) -> dict | None:
    from edge.liveslot import brief

    return brief(root)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "check":
        return _check_slot_main(argv[1])
    print("usage: python -m edge.slots check SLOT_DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
