"""The edge runtime must install on a Pi with only the edge extra: no torch, no sklearn."""

import subprocess
import sys
from pathlib import Path

import edge

FORBIDDEN = ("torch", "sklearn", "host", "training")


def edge_modules() -> list[str]:
    root = Path(edge.__file__).parent
    mods = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__main__":  # running it would start the CLI
            continue
        if parts[-1] == "__init__":
            parts.pop()
        mods.append(".".join(parts))
    return mods


def test_edge_never_imports_torch_or_sklearn():
    mods = edge_modules()
    assert "edge.dsp" in mods and "edge.cli" in mods
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}]\n"
        "print(','.join(bad))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"edge imported {r.stdout.strip()}"
