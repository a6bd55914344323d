#!/usr/bin/env python3
"""`edge-denoise file` on aarch64 (a Debian arm64 root under qemu user-mode emulation) against
this machine, on the same input with the shipped model: are the outputs the same?

Run by ``scripts/check-aarch64`` (``make check-aarch64``), which builds the root and installs
``.[edge]``'s aarch64 wheels into /opt/hl-target there; this script only runs and compares.
The aarch64 timing is emulation's, not a board's (qemu translates every instruction): it
shows the install works, not how fast a Pi is.

    python benchmarks/aarch64.py --root build/arm64root [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_io import write_results  # noqa: E402
from edge.audio import load_audio  # noqa: E402

IN_ROOT = "/tmp/hushlink-aarch64"  # work directory inside the arm64 root
SITE = "/opt/hl-target"  # where scripts/check-aarch64 installed .[edge] in it


def in_root(rootfs: Path, *cmd: str) -> str:
    env = ["/usr/bin/env", "-i", "PATH=/usr/bin:/bin", "HOME=/root", "LC_ALL=C.UTF-8",
           f"PYTHONPATH={SITE}"]
    r = subprocess.run(["chroot", str(rootfs), *env, *cmd], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"in the arm64 root, {' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return r.stdout


def compare(ref: np.ndarray, other: np.ndarray) -> dict:
    """How far ``other`` is from ``ref``: max |difference| and ref's energy over the
    difference's in dB (None when identical)."""
    assert ref.shape == other.shape, (ref.shape, other.shape)
    err = float(np.sum((ref - other) ** 2))
    return {"identical": err == 0.0, "max_abs_diff": float(np.max(np.abs(ref - other))),
            "snr_db": None if err == 0 else round(float(10 * np.log10(np.sum(ref ** 2) / err)), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=ROOT / "build/arm64root")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    ap.add_argument("--install-s", type=float, help="How long the install took (the script).")
    args = ap.parse_args()
    rootfs = args.root.resolve()
    work = rootfs / IN_ROOT.lstrip("/")
    work.mkdir(parents=True, exist_ok=True)
    noisy = work / "noisy.wav"
    subprocess.run([sys.executable, str(ROOT / "scripts/make_demo_audio.py"), "--out",
                    str(noisy)], check=True, cwd=ROOT)

    arm = json.loads(in_root(rootfs, "/usr/bin/python3", "-m", "edge", "file",
                             f"{IN_ROOT}/noisy.wav", f"{IN_ROOT}/out_aarch64.wav", "--json"))
    x86 = subprocess.run([sys.executable, "-m", "edge", "file", str(noisy),
                          str(work / "out_x86_64.wav"), "--json"], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    x86 = json.loads(x86.stdout)
    machine = in_root(rootfs, "/usr/bin/uname", "-m").strip()
    pyver = in_root(rootfs, "/usr/bin/python3", "-c",
                    "import platform; print(platform.python_version())").strip()
    pkgs = json.loads(in_root(rootfs, "/usr/bin/python3", "-c", (
        "import json, importlib.metadata as m; print(json.dumps({d.metadata['Name'].lower(): "
        "d.version for d in m.distributions()}))")))
    a = load_audio(work / "out_aarch64.wav").samples
    b = load_audio(work / "out_x86_64.wav").samples
    x = load_audio(noisy).samples
    res = {
        "input": {"seconds": round(len(x) / 16_000, 2), "what": "make_demo_audio.py (5 dB)"},
        "aarch64": {"machine": machine, "python": pyver, "emulated": "qemu-user-static",
                    "debian": "bookworm arm64 (debootstrap)", "rtf": arm["rtf"],
                    "backend": arm["model"].get("backend"),
                    "packages": {k: pkgs.get(k) for k in ("numpy", "scipy", "ai-edge-litert",
                                                          "soundfile", "soxr", "sounddevice")},
                    "install_s": args.install_s},
        "x86_64": {"machine": platform.machine(), "python": platform.python_version(),
                   "rtf": x86["rtf"], "backend": x86["model"].get("backend")},
        "aarch64_vs_x86_64": compare(b, a),
        "model_changed_audio_db": round(float(10 * np.log10(np.sum(x ** 2)
                                                            / np.sum((x - b) ** 2))), 2),
    }
    d = res["aarch64_vs_x86_64"]
    same = "bit-identical" if d["identical"] else f"{d['snr_db']} dB apart"
    table = "\n".join([
        "| | aarch64 (qemu) | x86_64 (this machine) |",
        "|---|---|---|",
        f"| Python | {pyver} | {platform.python_version()} |",
        f"| numpy / ai-edge-litert | {pkgs.get('numpy')} / {pkgs.get('ai-edge-litert')} | "
        f"{np.__version__} / {_version('ai-edge-litert')} |",
        f"| real-time factor of `file` | {arm['rtf']:.3f} (emulated) | {x86['rtf']:.4f} |",
        f"| output on {res['input']['seconds']} s of noisy speech | {same} "
        f"(max difference {d['max_abs_diff']:.2e}) | reference |",
        "",
    ])
    if args.install_s is not None:
        table += f"\n`pip install '.[edge]'` in the arm64 root took {args.install_s:.0f} s.\n"
    write_results(args.out, "aarch64", res, table)
    # the bound of the two interpreter backends' comparison (README, tflite-runtime): 30 dB
    if not d["identical"] and (d["snr_db"] or 0) < 30:
        raise SystemExit(f"aarch64 output differs from x86_64 ({d['snr_db']} dB)")


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
