#!/usr/bin/env python3
"""Does every `[edge]` dependency install from wheels on the boards? (issue 22, item 1)

For each requirement of setup.cfg's ``edge`` extra and each Python version (default
3.10-3.13), asks pip which wheel it would install for manylinux aarch64 with glibc up to
2.35 (Jetson JetPack 6 / Ubuntu 22.04 has 2.35, Raspberry Pi OS Bookworm 2.36), binaries
only, no dependencies resolved (each dependency is listed itself). By default
``pip install --dry-run`` reads only the wheels' metadata (PEP 658); ``--download`` fetches
the wheels with ``pip download`` instead. Needs network to PyPI. Exit 1 when any is missing.

    python scripts/check_aarch64_wheels.py [--python 3.10 --python 3.13] [--download] [--json]
"""

from __future__ import annotations

import argparse
import configparser
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
GLIBC_MAX = 35  # manylinux_2_17 (= manylinux2014) .. manylinux_2_35
PLATFORMS = ["manylinux2014_aarch64"] + [f"manylinux_2_{m}_aarch64"
                                         for m in range(17, GLIBC_MAX + 1)]
# Published only as an sdist, and fine that way: nothing to compile on the board.
PURE_SDIST = {"opuslib": "pure-Python ctypes binding to the system libopus (apt libopus0)"}


def edge_requirements(setup_cfg: Path = ROOT / "setup.cfg") -> list[str]:
    """The edge extra's requirements, markers kept (pip evaluates them for --python-version)."""
    cp = configparser.ConfigParser()
    cp.read(setup_cfg)
    return [r.strip() for r in cp["options.extras_require"]["edge"].splitlines() if r.strip()]


def name_of(req: str) -> str:
    import re

    return re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower()


def pip_argv(req: str, py: str, dest: str, download: bool) -> list[str]:
    plat = [a for p in PLATFORMS for a in ("--platform", p)]
    binary = [] if name_of(req) in PURE_SDIST else ["--only-binary=:all:"]
    common = [*binary, "--no-deps", "--python-version", py, *plat,
              "--disable-pip-version-check", "--quiet"]
    if download:
        return [sys.executable, "-m", "pip", "download", *common, "-d", dest, req]
    return [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
            "--target", dest, "--report", str(Path(dest) / "report.json"), *common, req]


def for_python(req: str, py: str) -> str | None:
    """``req`` without its marker when the marker holds on Python ``py``, else None. (pip
    evaluates markers for the interpreter it runs on, not for --python-version.)"""
    from packaging.requirements import Requirement

    r = Requirement(req)
    if r.marker is not None and not r.marker.evaluate({"python_version": py,
                                                       "python_full_version": f"{py}.0"}):
        return None
    return f"{r.name}{r.specifier}"


def check(req: str, py: str, download: bool = False) -> dict:
    """{"requirement", "python", "ok", "wheel" or "error"} for one requirement."""
    target = for_python(req, py)
    if target is None:
        return {"requirement": req, "python": py, "ok": True, "wheel": None}
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run(pip_argv(target, py, tmp, download), capture_output=True,
                           text=True, timeout=600)
        out = {"requirement": req, "python": py, "ok": r.returncode == 0}
        if r.returncode != 0:
            lines = [x for x in r.stderr.splitlines() if x.startswith("ERROR")]
            out["error"] = (lines or r.stderr.strip().splitlines()[-1:] or ["?"])[0]
        elif download:
            out["wheel"] = ", ".join(p.name for p in Path(tmp).iterdir()) or None
        else:
            rep = json.loads((Path(tmp) / "report.json").read_text())
            urls = [i["download_info"]["url"].rsplit("/", 1)[-1] for i in rep["install"]]
            out["wheel"] = ", ".join(urls) or None  # None: a marker excludes it there
        if name_of(req) in PURE_SDIST:
            out["note"] = PURE_SDIST[name_of(req)]
            out["ok"] = out["ok"] and _pure(out.get("wheel"))
        return out


def _pure(artifact: str | None) -> bool:
    """A wheel that is py3-none-any, or an sdist (the allow-listed pure-Python ones)."""
    return bool(artifact) and (artifact.endswith("-none-any.whl") or
                               artifact.endswith((".tar.gz", ".zip")))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", action="append", help="Python version (repeatable); "
                    f"default {', '.join(PYTHONS)}")
    ap.add_argument("--download", action="store_true", help="pip download the wheels")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(req, py) for py in (args.python or PYTHONS) for req in edge_requirements()]
    with ThreadPoolExecutor(4) as pool:  # network-bound
        rows = list(pool.map(lambda j: check(*j, args.download), jobs))
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            print(f"{r['python']:5s} {'ok ' if r['ok'] else 'NO '} {r['requirement']:24s} "
                  f"{r.get('wheel') or r.get('error') or '(not needed)'}"
                  + (f"  [{r['note']}]" if r.get("note") else ""))
    bad = [r for r in rows if not r["ok"]]
    if bad:
        print(f"{len(bad)} requirement/version pair(s) without an aarch64 wheel", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
