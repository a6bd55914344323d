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


ROTATE_ENV = "HUSHLINK_ROTATE_MB"
ROTATE_MB = 16.0  # ~15 h of per-second telemetry before the first rotation
ROTATE_BACKUPS = 2


def rotate_bytes() -> int:
    """The size bound of JSON-lines logs: HUSHLINK_ROTATE_MB (0: unbounded), else 16 MB."""
    try:
        mb = float(os.environ.get(ROTATE_ENV, ROTATE_MB))
    except ValueError:
        raise HushlinkError(f"{ROTATE_ENV}={os.environ[ROTATE_ENV]!r}: give megabytes, "
                            "e.g. 16 (0: never rotate)") from None
    return max(int(mb * 1_000_000), 0)


class RotatingLines:
    """An append-only lines file bounded in size: a line that would take it past ``max_bytes``
    first moves it to PATH.1 (PATH.1 to PATH.2 ..., ``backups`` kept) and starts a new PATH.
    A reader that sees PATH shrink starts again from its top (edge.agent.FileTelemetry)."""

    def __init__(self, path: str | os.PathLike, max_bytes: int | None = None,
                 backups: int = ROTATE_BACKUPS, what: str = "log") -> None:
        self.path = Path(path)
        self.what = what
        self.max_bytes = rotate_bytes() if max_bytes is None else max_bytes
        self.backups = max(backups, 1)
        self.rotations = 0
        self._fh = self._open()

    def _open(self):
        try:
            return open(self.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        except OSError as e:
            raise HushlinkError(f"{self.path}: cannot write {self.what} ({e.strerror})") from None

    def write(self, line: str) -> None:
        """Append one line (``line`` without its newline)."""
        data = line + "\n"
        if self.max_bytes and self._fh.tell() and \
                self._fh.tell() + len(data.encode()) > self.max_bytes:
            self._rotate()
        self._fh.write(data)

    def _rotate(self) -> None:
        self._fh.close()
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self.rotations += 1
        self._fh = self._open()

    def close(self) -> None:
        self._fh.close()
