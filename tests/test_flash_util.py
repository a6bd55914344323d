"""Helpers for the flash tests: keys, the tiny int8 test model, bundles (good and forged),
device roots, and a fingerprint of the active slot to prove a refusal changed nothing."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from edge.slots import SlotStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def step_model(tmp_path_factory) -> Path:
    from stepmodels import build_test_model

    return build_test_model(tmp_path_factory.getbasetemp() / "stepmodel")


@pytest.fixture
def small_fs(tmp_path):
    """A real 2 MiB tmpfs (root only: mount)."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("CI runs as root")
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / f"fs{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture(scope="session")
def keys(tmp_path_factory) -> dict:
    from host.bundle import keygen

    d = tmp_path_factory.mktemp("keys")
    out = {}
    for name in ("vendor", "stranger"):
        key, pub, kid = keygen(d / name)
        out[name] = {"key": key, "pub": pub, "id": kid}
    return out


@pytest.fixture(scope="session")
def bundles(tmp_path_factory, step_model, keys) -> dict:
    """Signed bundles of the test model: versions 1.0.0, 2.0.0 and 3.0.0."""
    from host.bundle import build

    d = tmp_path_factory.mktemp("bundles")
    out = {}
    for v in ("1.0.0", "2.0.0", "3.0.0"):
        out[v] = d / f"b{v}.hlb"
        build(step_model, keys["vendor"]["key"], out[v], version=v,
              profiles=("generic-linux", "rpi5"))
    return out


@pytest.fixture(scope="session")
def golden(tmp_path_factory, bundles, keys) -> Path:
    """A device root trusting the vendor key with 1.0.0 installed and confirmed."""
    root = tmp_path_factory.mktemp("golden") / "dev"
    s = SlotStore(root, profile="generic-linux")
    s.init([keys["vendor"]["pub"].read_bytes()])
    s.install(bundles["1.0.0"])
    s.confirm()
    return root


@pytest.fixture
def device(golden, tmp_path) -> Path:
    root = tmp_path / "dev"
    shutil.copytree(golden, root, symlinks=True)
    return root


def fingerprint(root: Path) -> dict:
    """The pointer and every file of the active slot, hashed: equal before and after means
    the active bundle is unchanged."""
    s = SlotStore(root)
    ptr = s.read_pointer()
    files = {}
    a = ptr.get("active")
    if a:
        for p in sorted((root / "slots" / a).iterdir()):
            files[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
    return {"active": a, "state": ptr.get("state"), "version": ptr.get("version"),
            "files": files}


def read_entries(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle, "r:") as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers()}


def write_tar(path: Path, entries: dict[str, bytes], *, symlink: str | None = None) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:") as tf:
        for name, data in entries.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime = len(data), int(time.time())
            tf.addfile(ti, io.BytesIO(data))
        if symlink:
            ti = tarfile.TarInfo(symlink)
            ti.type, ti.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tf.addfile(ti)
    path.write_bytes(buf.getvalue())
    return path


def sign(manifest: dict, key_path: Path) -> tuple[bytes, bytes]:
    """(manifest bytes, manifest.sig bytes) signed with ``key_path``."""
    from edge.slots import key_id, public_raw
    from host.bundle import load_private_key

    priv = load_private_key(key_path)
    mb = json.dumps(manifest, indent=1, sort_keys=True).encode()
    pub = public_raw(priv.public_key())
    sig = {"alg": "ed25519", "key_id": key_id(pub), "public_key": base64.b64encode(pub).decode(),
           "sig": base64.b64encode(priv.sign(mb)).decode()}
    return mb, json.dumps(sig).encode()


def resign(bundle: Path, out: Path, key_path: Path, *, manifest_edit=None,
           files: dict[str, bytes] | None = None) -> Path:
    """A correctly signed variant of ``bundle``: ``files`` replaced (the manifest's hashes
    follow them), then ``manifest_edit(manifest)`` applied, then signed with ``key_path``."""
    e = read_entries(bundle)
    m = json.loads(e["manifest.json"])
    for name, data in (files or {}).items():
        e[name] = data
    for f in m["files"]:
        f["size"], f["sha256"] = len(e[f["path"]]), hashlib.sha256(e[f["path"]]).hexdigest()
    if manifest_edit:
        manifest_edit(m)
    e["manifest.json"], e["manifest.sig"] = sign(m, key_path)
    return write_tar(out, e)
