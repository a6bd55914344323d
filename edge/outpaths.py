"""Output files: checked before the long work starts, written atomically with the umask's mode.

``tempfile.mkstemp`` creates 0600 files, and an atomic rename would carry that mode onto every
output; ``atomic_temp`` gives the temporary file the mode an ordinary ``open()`` would have
(0666 minus the umask), so outputs follow the umask like any other tool's.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from edge.errors import HushlinkError


def umask_mode(base: int = 0o666) -> int:
    """``base`` minus the process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return base & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # not thread safe, hence only the fallback
    os.umask(mask)
    return base & ~mask


def atomic_temp(path: str | os.PathLike, suffix: str = ".part") -> tuple[int, str]:
    """(fd, name) of a temporary file beside ``path`` for a write-then-rename, with the mode
    a plain ``open(path, "w")`` would give."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=suffix, dir=p.parent)
    os.fchmod(fd, umask_mode())
    return fd, tmp


def check_output(path: str | os.PathLike | None, what: str = "output",
                 directory: bool = False) -> None:
    """Refuse an output path before any work: a missing or unwritable parent directory, a
    directory where a file goes (or a file where a directory goes). ``None`` passes."""
    if path is None:
        return
    p = Path(path)
    if directory:
        if p.exists() and not p.is_dir():
            raise HushlinkError(f"{p}: {what} must be a directory, not a file")
        parent = p if p.is_dir() else _existing_parent(p)
    else:
        if p.is_dir():
            raise HushlinkError(f"{p}: {what} is a directory; give a file name")
        parent = p.parent if str(p.parent) else Path(".")
        if not parent.is_dir():
            raise HushlinkError(f"{parent}: output directory for the {what} does not exist")
        if p.exists() and not os.access(p, os.W_OK):
            raise HushlinkError(f"{p}: {what} is not writable")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise HushlinkError(f"{parent}: no permission to write the {what} there")


def _existing_parent(p: Path) -> Path:
    p = p.absolute()
    while not p.exists():
        p = p.parent
    if not p.is_dir():
        raise HushlinkError(f"{p}: is a file, cannot create a directory under it")
    return p
