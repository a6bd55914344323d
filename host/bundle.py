"""Signed model/config bundles on the host: key generation, build, inspect.

A bundle (``.hlb``) is an uncompressed tar of flat names: ``model.tflite``, ``model.json``,
optionally ``config.json``, the ``manifest.json`` that lists them with sizes and sha256, and
``manifest.sig``. The format and the device-side checks live in ``edge/slots.py`` (the
device must verify without ``host``); this module writes bundles.

Why ed25519 (``cryptography``): small keys and signatures, deterministic signing, fast
verification on a Pi, and no parameters to get wrong. The signature covers the exact bytes
of ``manifest.json``; the manifest pins every file by sha256, so one signature covers all.
"""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
import time
from pathlib import Path

from edge import __version__
from edge.errors import HushlinkError
from edge.slots import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    SIGNATURE,
    FlashError,
    check_manifest,
    key_id,
    load_public_key,
    public_raw,
    read_bundle,
)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (Jetson JetPack 6): tomli is the same parser
    import tomli as tomllib


class BundleError(HushlinkError):
    """A bundle that cannot be built or read on the host."""


# ---------------------------------------------------------------------------------- keys
def keygen(prefix: str | os.PathLike, *, force: bool = False) -> tuple[Path, Path, str]:
    """Write ``PREFIX.key`` (private, PKCS#8 PEM, mode 0600) and ``PREFIX.pub`` (public PEM).
    Returns (key path, pub path, key id)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    prefix = Path(prefix)
    if prefix.suffix in (".key", ".pub"):
        prefix = prefix.with_suffix("")
    key_path, pub_path = prefix.with_suffix(".key"), prefix.with_suffix(".pub")
    for p in (key_path, pub_path):
        if p.exists() and not force:
            raise BundleError(f"{p} exists; pass --force to replace it (devices that trust the "
                              "old key will refuse bundles signed with the new one)")
    priv = Ed25519PrivateKey.generate()
    pem = priv.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = priv.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(key_path, pem, mode=0o600)
    _atomic_write(pub_path, pub)
    return key_path, pub_path, key_id(public_raw(priv.public_key()))


def load_private_key(path: str | os.PathLike):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except FileNotFoundError:
        raise BundleError(f"signing key {path} not found (create one with "
                          "`flash-to-device keygen`)") from None
    except (ValueError, TypeError) as e:
        raise BundleError(f"{path} is not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"{path} is not an ed25519 key")
    return key


def _atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------------- build
def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def load_config(path: str | os.PathLike) -> dict:
    """A device config as a dict, from JSON or TOML; its ``transport`` table (if any) must be
    valid TransportParams, so a bad value is caught on the host, not on the device."""
    from edge.params import ParamsError, TransportParams

    p = Path(path)
    try:
        text = p.read_text()
        cfg = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
    except FileNotFoundError:
        raise BundleError(f"config {p} not found") from None
    except (ValueError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"config {p} is not valid {p.suffix.lstrip('.') or 'JSON'}: {e}"
                          ) from None
    if not isinstance(cfg, dict):
        raise BundleError(f"config {p} must be a table/object")
    if "transport" in cfg:
        try:
            TransportParams.from_dict(cfg["transport"])
        except (ParamsError, TypeError) as e:
            raise BundleError(f"config {p}: transport: {e}") from None
    live = cfg.get("live", {})
    budget = live.get("hop_budget_ms", 1.0) if isinstance(live, dict) else None
    if (not isinstance(live, dict) or set(live) - {"hop_budget_ms"}
            or not isinstance(budget, (int, float)) or isinstance(budget, bool) or budget <= 0):
        raise BundleError(f"config {p}: live: only hop_budget_ms (CPU ms per hop, > 0) is "
                          "allowed (edge/liveslot.py)")
    return cfg


def build(model: str | os.PathLike, key: str | os.PathLike, out: str | os.PathLike, *,
          config: str | os.PathLike | None = None, version: str | None = None,
          profiles: tuple[str, ...] = (), min_runtime: str = __version__) -> dict:
    """Write a signed bundle to ``out`` (atomically); returns its manifest.

    ``model``: ``NAME.tflite`` or ``NAME.json`` (both must exist, sha256 must agree).
    ``version``: the bundle's version (default: the model's), compared for downgrades.
    ``profiles``: hardware profiles it fits (empty: any).
    """
    from edge.model import ModelError, ModelMetadata, sha256_file
    from edge.profile import DeviceProfile

    mp = Path(model)
    mp = mp.with_suffix(".tflite") if mp.suffix == ".json" else mp
    try:
        md = ModelMetadata.load(mp.with_suffix(".json")).to_dict()
        if not mp.is_file():
            raise ModelError(f"{mp}: model file not found")
        if sha256_file(mp) != md["tflite_sha256"]:
            raise ModelError(f"{mp}: sha256 does not match its metadata")
    except ModelError as e:
        raise BundleError(str(e)) from None
    if not md.get("test_vector"):
        raise BundleError(f"{mp.with_suffix('.json')}: no test_vector; the device health check "
                          "needs one (re-export the model)")
    for prof in profiles:
        DeviceProfile.by_name(prof)  # unknown profile: ProfileError now, not on the device
    priv = load_private_key(key)
    payload = {"model.tflite": mp.read_bytes(),
               "model.json": mp.with_suffix(".json").read_bytes()}
    cfg = None
    if config is not None:
        cfg = load_config(config)
        payload["config.json"] = json.dumps(cfg, indent=1, sort_keys=True).encode()
    meta = {k: v for k, v in md.items() if k != "test_vector"}
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "version": version or str(md["version"]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "min_runtime": min_runtime, "profiles": sorted(profiles),
        "model": {"name": md["name"], "version": md["version"], "file": "model.tflite",
                  "metadata_file": "model.json", "sha256": md["tflite_sha256"],
                  "metadata": meta},
        "config": cfg,
        "files": [{"path": n, "size": len(b), "sha256": _sha256(b)} for n, b in payload.items()],
        "key_id": key_id(public_raw(priv.public_key())),
    }
    try:
        check_manifest(manifest, profile=None, runtime=min_runtime)
    except FlashError as e:
        raise BundleError(f"the model cannot go into a bundle: {e}") from None
    mbytes = json.dumps(manifest, indent=1, sort_keys=True).encode()
    sig = {"alg": "ed25519", "key_id": manifest["key_id"],
           "public_key": base64.b64encode(public_raw(priv.public_key())).decode(),
           "sig": base64.b64encode(priv.sign(mbytes)).decode()}
    entries = {MANIFEST: mbytes, SIGNATURE: json.dumps(sig).encode(), **payload}
    outp = Path(out)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.PAX_FORMAT) as tf:
        for name, data in entries.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), int(time.time()), 0o644
            tf.addfile(ti, io.BytesIO(data))
    outp.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(outp, buf.getvalue())
    return manifest


# ------------------------------------------------------------------------------- inspect
def inspect(path: str | os.PathLike, trust: tuple[str | os.PathLike, ...] = ()) -> dict:
    """Read and verify a bundle: every file's sha256 and the signature, against ``trust``
    (public key files) when given, else against the public key the bundle carries (which
    proves integrity, not origin: a device checks origin with its own trusted keys)."""
    p = Path(path)
    with_trust = bool(trust)
    if with_trust:
        keys = [load_public_key(_read_key(k)) for k in trust]
        trusted = {key_id(public_raw(k)): k for k in keys}
    else:
        trusted = _embedded_key(p)
    try:
        b = read_bundle(p, trusted, max_bytes=2**40, runtime="9999")
    except FlashError as e:  # name the file once (most of read_bundle's messages do)
        raise BundleError(str(e) if p.name in str(e) else f"{p.name}: {e}") from None
    m = b.manifest
    return {"path": str(p), "size": p.stat().st_size, "version": m["version"],
            "created": m["created"], "min_runtime": m["min_runtime"],
            "profiles": m["profiles"] or ["any"], "model": m["model"]["name"],
            "model_version": m["model"]["version"], "model_sha256": m["model"]["sha256"],
            "quantization": m["model"]["metadata"].get("quantization"),
            "state_shapes": m["model"]["metadata"].get("state_shapes"),
            "config": m.get("config"), "files": m["files"], "key_id": b.key_id,
            "signature": "valid, key trusted" if with_trust
            else "valid (integrity only: pass --trust KEY.pub to check the signer)"}


def _read_key(path: str | os.PathLike) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise BundleError(f"cannot read public key {path}: {e.strerror or e}") from None


def _embedded_key(p: Path) -> dict:
    try:
        with tarfile.open(p, "r:") as tf:
            sig = json.loads(tf.extractfile(SIGNATURE).read())
        key = load_public_key(base64.b64decode(sig["public_key"]))
        return {key_id(public_raw(key)): key}
    except (KeyError, ValueError, TypeError, tarfile.TarError, OSError, AttributeError,
            FlashError):
        return {}  # read_bundle then says what is wrong (unsigned, unknown key, not a bundle)
