"""The edge install on the boards (issue 22, item 1): Python 3.10 (Jetson JetPack 6) through
3.13, and aarch64 wheels for every `[edge]` dependency.

No 3.10 interpreter is installable here (Debian 12 ships 3.11; none can be downloaded), so
3.10 is checked as far as it can be without one: every module parses with the 3.10 grammar,
no 3.11+ standard-library name is used, and the code runs with ``tomllib`` hidden (the
tomli fallback)."""

from __future__ import annotations

import ast
import configparser
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sandbox import need

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for d in ("edge", "host", "training") for p in (ROOT / d).rglob("*.py"))
# Standard-library names new in 3.11 or later (the ones this code base might reach for).
NEW_IN_311 = {"tomllib", "StrEnum", "ReprEnum", "ExceptionGroup", "BaseExceptionGroup",
              "TaskGroup", "file_digest", "Self", "LiteralString", "Never", "assert_never",
              "reveal_type", "NotRequired", "Required", "getencoding", "chdir", "UTC",
              "batched", "override", "TypeAliasType", "getLevelNamesMapping", "cbrt", "exp2"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_parses_with_the_python_3_10_grammar(path):
    ast.parse(path.read_text(), str(path), feature_version=(3, 10))


def _guarded(tree: ast.AST) -> set[int]:
    """Line numbers inside a ``try`` that catches ImportError/ModuleNotFoundError."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError",
                                                               "ModuleNotFoundError")
                for h in node.handlers):
            for stmt in node.body:
                lines.update(range(stmt.lineno, stmt.end_lineno + 1))
    return lines


def test_no_standard_library_name_newer_than_3_10_unguarded():
    bad = []
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        ok = _guarded(tree)
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [a.name for a in node.names] + [node.module.split(".")[0]]
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                    node.value.id in ("datetime", "typing", "enum", "asyncio", "hashlib",
                                      "itertools", "contextlib", "logging", "math", "locale"):
                names = [node.attr]
            hits = NEW_IN_311.intersection(names)
            if hits and node.lineno not in ok:
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {sorted(hits)}")
    assert not bad, bad


HIDE_TOMLLIB = """
import sys, importlib.abc
class Hide(importlib.abc.MetaPathFinder):  # Python 3.10 has no tomllib
    def find_spec(self, name, path=None, target=None):
        if name == "tomllib":
            raise ModuleNotFoundError("No module named 'tomllib'")
sys.meta_path.insert(0, Hide())
from edge.profile import DeviceProfile, names
from edge.faults.strategies import Strategies
import edge.profile, tomli
assert edge.profile.tomllib is tomli
print([DeviceProfile.by_name(n).name for n in names()], len(Strategies.load().table))
"""


def test_runs_with_tomli_where_there_is_no_tomllib():
    r = subprocess.run([sys.executable, "-c", HIDE_TOMLLIB], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "rpi5" in r.stdout and "jetson-orin-nano" in r.stdout


def test_packaging_says_3_10_and_brings_tomli_there():
    cp = configparser.ConfigParser()
    cp.read(ROOT / "setup.cfg")
    assert cp["options"]["python_requires"].strip() == ">=3.10"
    edge = cp["options.extras_require"]["edge"]
    assert 'tomli>=1.1; python_version < "3.11"' in edge


@pytest.mark.slow
def test_every_edge_dependency_installs_on_aarch64_for_python_3_10_to_3_13():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_aarch64_wheels.py"),
                        "--json"], capture_output=True, text=True, timeout=900)
    rows = json.loads(r.stdout)
    unreachable = all("Could not find a version" in x.get("error", "") or
                      "connection" in x.get("error", "").lower() for x in rows)
    need(not unreachable, "no network to the package index")
    assert r.returncode == 0, [x for x in rows if not x["ok"]]
    assert {x["python"] for x in rows} == {"3.10", "3.11", "3.12", "3.13"}
    tags = {x["requirement"].split(">")[0]: x["wheel"] for x in rows if x["python"] == "3.10"}
    assert "aarch64" in tags["numpy"] and "cp310" in tags["numpy"]
    assert "aarch64" in tags["ai-edge-litert"]
    tomli = {x["python"]: x["wheel"] for x in rows if x["requirement"].startswith("tomli")}
    assert "tomli" in tomli["3.10"] and tomli["3.11"] is None  # the marker, per version
