"""Fleet operations: one host command on many devices at once.

``flash-to-device push`` and ``host-calibrate collect | tune | apply`` take several devices
(``--port`` repeated or several PORT arguments, a glob such as ``'/dev/ttyUSB*'``, or
``--devices FILE``) and run the same per-device operation on each in a thread pool (serial I/O
blocks; each device has its own link). One device's failure is that device's result: it never
stops or touches the others, except in a staged rollout (``canary``), which starts the first
N devices, waits for their results (a push's result includes the device's health check), and
only then starts the rest, and starts no further device once one has failed.

A devices file is TOML (``[[device]]`` tables with ``port`` and optional ``name`` and
``baud``) or plain lines ``PORT [NAME]`` (``#`` starts a comment). A device's name is its
file name's, else its port's last path component (``ttyUSB0``); names must be unique, since
per-device output files are named after them.

The runner is plain Python (``run``); the CLIs add a progress bar per device, a result table
and ``--json`` (``progress``, ``render_table``, ``summary``).
"""

from __future__ import annotations

import glob
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edge.errors import HushlinkError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (Jetson JetPack 6): tomli is the same parser
    import tomli as tomllib

OK, FAILED, ROLLED_BACK, SKIPPED = "ok", "failed", "rolled back", "skipped"
GLOB_CHARS = re.compile(r"[*?\[]")


class FleetError(HushlinkError):
    """Bad device list (no match for a glob, unreadable devices file, duplicate names)."""


class RolledBack(HushlinkError):
    """A device took the change and then failed its check: it was put back as it was.
    ``detail`` says what it runs now."""

    def __init__(self, message: str, detail: dict | None = None):
        super().__init__(message)
        self.detail = detail or {}


@dataclass(frozen=True)
class Target:
    name: str
    port: str
    baud: int | None = None  # None: the command's --baud


@dataclass
class Result:
    name: str
    port: str
    status: str  # ok | failed | rolled back | skipped
    message: str = ""
    seconds: float = 0.0
    detail: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------- the device list
def load_devices_file(path: str | Path) -> list[Target]:
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise FleetError(f"cannot read devices file {p}: {getattr(e, 'strerror', None) or e}"
                         ) from None
    if p.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise FleetError(f"{p}: not valid TOML ({e})") from None
        out = []
        unknown = set(data) - {"device"}
        if unknown or not isinstance(data.get("device", []), list):
            raise FleetError(f"{p}: expected [[device]] tables only (found "
                             f"{', '.join(sorted(unknown)) or 'device as a plain table'})")
        for i, d in enumerate(data.get("device", []), 1):
            extra = set(d) - {"port", "name", "baud"}
            if extra:
                raise FleetError(f"{p}: device {i}: unknown key(s) {', '.join(sorted(extra))} "
                                 "(port, name, baud)")
            if not isinstance(d.get("port"), str) or not d["port"]:
                raise FleetError(f"{p}: device {i} needs a port (a string)")
            baud = d.get("baud")
            if baud is not None and (isinstance(baud, bool) or not isinstance(baud, int)
                                     or baud <= 0):
                raise FleetError(f"{p}: device {i}: baud {baud!r} is not a positive integer")
            out.append(Target(str(d.get("name") or _default_name(d["port"])), d["port"], baud))
        return out
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) > 2:
            raise FleetError(f"{p}: line {n}: expected 'PORT [NAME]', got {line.strip()!r}")
        out.append(Target(words[1] if len(words) == 2 else _default_name(words[0]), words[0]))
    return out


def _default_name(port: str) -> str:
    return port.rstrip("/").rsplit("/", 1)[-1] or port


def expand(ports: Iterable[str]) -> list[str]:
    """Ports with globs expanded (sorted); URLs such as ``socket://`` are kept as given."""
    out = []
    for p in ports:
        if "://" not in p and GLOB_CHARS.search(p):
            hits = sorted(glob.glob(p))
            if not hits:
                raise FleetError(f"no device matches {p!r}")
            out += hits
        else:
            out.append(p)
    return out


def targets(ports: Sequence[str] = (), devices_file: str | Path | None = None) -> list[Target]:
    """The devices named on the command line (globs expanded) and in a devices file, in
    order; a port given twice counts once. Raises FleetError."""
    found = [Target(_default_name(p), p) for p in expand(ports)]
    if devices_file is not None:
        found += load_devices_file(devices_file)
    out, seen_port, seen_name = [], set(), {}
    for t in found:
        if t.port in seen_port:
            continue
        seen_port.add(t.port)
        if t.name in seen_name:
            raise FleetError(f"two devices are named {t.name!r} ({seen_name[t.name]} and "
                             f"{t.port}): name them in a devices file")
        seen_name[t.name] = t.port
        out.append(t)
    if not out:
        raise FleetError("no devices given (a PORT, a glob, or --devices FILE)")
    return out


def out_path(template: str, name: str) -> Path:
    """A per-device output file: ``{device}`` in ``template`` replaced by the device's name,
    else the name appended to the file's stem (``telemetry.jsonl`` -> ``telemetry-dev1.jsonl``)."""
    if "{device}" in template:
        return Path(template.replace("{device}", name))
    p = Path(template)
    return p.with_name(f"{p.stem}-{name}{p.suffix}")


# ------------------------------------------------------------------------------- the runner
class Reporter:
    """What an operation tells about its device while it runs (the CLI shows it)."""

    def stage(self, text: str) -> None: ...

    def progress(self, done: float, total: float | None) -> None: ...


Op = Callable[[Target, Reporter], dict]


def run(devices: Sequence[Target], op: Op, *, workers: int = 16, canary: int = 0,
        reporter: Callable[[Target], Reporter] = lambda t: Reporter(),
        on_done: Callable[[Result], None] = lambda r: None) -> list[Result]:
    """Run ``op(target, reporter)`` on every device, ``workers`` at a time; results in the
    devices' order. ``op`` returns a detail dict (ok), raises ``RolledBack`` or any other
    exception (failed: its message, never a traceback, and never the others' concern).

    ``canary`` N > 0: a staged rollout. The first N devices run first; if one fails, the rest
    are skipped; else the rest run, and once any of them fails no further device starts
    (those already running finish)."""
    results: dict[int, Result] = {}
    stop = threading.Event()
    lock = threading.Lock()

    def one(i: int, t: Target, stop_on_failure: bool) -> None:
        if stop.is_set():
            res = Result(t.name, t.port, SKIPPED, "not started: an earlier device failed")
        else:
            res = _attempt(t, op, reporter(t))
            if res.status != OK and stop_on_failure:
                stop.set()
        with lock:
            results[i] = res
        on_done(res)

    indexed = list(enumerate(devices))
    phases = ([(indexed[:canary], False), (indexed[canary:], True)] if canary > 0
              else [(indexed, False)])
    for n, (phase, stop_on_failure) in enumerate(phases):
        if n and any(r.status != OK for r in results.values()):
            failed = ", ".join(r.name for r in results.values() if r.status != OK)
            for i, t in phase:
                results[i] = Result(t.name, t.port, SKIPPED, f"not started: canary {failed} "
                                    "failed")
                on_done(results[i])
            break
        if not phase:
            continue
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(phase))),
                                thread_name_prefix="fleet") as pool:
            try:
                for f in [pool.submit(one, i, t, stop_on_failure) for i, t in phase]:
                    f.result()
            except KeyboardInterrupt:  # start no more; those running finish (mid-install)
                stop.set()
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    return [results[i] for i in range(len(devices))]


def _attempt(t: Target, op: Op, rep: Reporter) -> Result:
    t0 = time.perf_counter()
    try:
        detail = op(t, rep)
        status, msg = OK, ""
    except RolledBack as e:
        status, msg, detail = ROLLED_BACK, str(e), e.detail
    except Exception as e:  # noqa: BLE001 (any failure is this device's result, not the fleet's)
        status, msg, detail = FAILED, _one_line(e), {}
    return Result(t.name, t.port, status, msg, round(time.perf_counter() - t0, 3), detail or {})


def _one_line(e: Exception) -> str:
    from edge.validate import one_line

    text = str(e) or type(e).__name__
    return one_line(text if isinstance(e, HushlinkError | OSError) else
                    f"{type(e).__name__}: {text}")


# ------------------------------------------------------------------------ what the CLIs show
def summary(results: Sequence[Result]) -> dict:
    counts = {s: sum(r.status == s for r in results) for s in (OK, FAILED, ROLLED_BACK, SKIPPED)}
    return {"devices": [r.to_dict() for r in results], "total": len(results),
            **{k.replace(" ", "_"): v for k, v in counts.items()},
            "all_ok": counts[OK] == len(results)}


def failure_line(results: Sequence[Result], what: str) -> str | None:
    """One line for the exit status when some device did not succeed, else None."""
    bad = [r for r in results if r.status != OK]
    if not bad:
        return None
    parts = [f"{sum(r.status == s for r in bad)} {s}" for s in (FAILED, ROLLED_BACK, SKIPPED)
             if any(r.status == s for r in bad)]
    return f"{what} succeeded on {len(results) - len(bad)} of {len(results)} devices " \
           f"({', '.join(parts)})"


def render_table(results: Sequence[Result], columns: Sequence[tuple[str, Callable]] = (),
                 width: int | None = None, source: str = "port") -> str:
    """The per-device result table as text: device, port (``source``), result, ``columns``
    (title, fn(result) -> str), seconds, message."""
    import io
    import shutil

    from rich.console import Console
    from rich.table import Table

    style = {OK: "green", FAILED: "red", ROLLED_BACK: "yellow", SKIPPED: "dim"}
    tab = Table(show_edge=False, pad_edge=False)
    for title in ("device", source, "result", *(c for c, _ in columns), "s", "message"):
        tab.add_column(title, justify="right" if title == "s" else "left",
                       overflow="fold")
    for r in results:
        tab.add_row(r.name, r.port, f"[{style[r.status]}]{r.status}[/]",
                    *(str(fn(r)) for _, fn in columns), f"{r.seconds:.1f}", r.message)
    tty = sys.stdout.isatty()
    if width is None:  # a terminal's width; piped, one line per device (for grep)
        width = shutil.get_terminal_size().columns if tty else 1000
    buf = io.StringIO()
    Console(file=buf, width=width, force_terminal=tty, color_system="auto" if tty else None
            ).print(tab)
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines())


class progress:
    """A rich progress display with one row per device (on stderr); ``reporter(target)``
    gives each operation its row. ``enabled=False`` shows nothing (``--json``)."""

    def __init__(self, devices: Sequence[Target], console=None, enabled: bool = True):
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        from edge.cliutil import err_console

        self.enabled = enabled
        width = max(len(t.name) for t in devices)
        self.bar = Progress(TextColumn(f"{{task.fields[name]:<{width}}}"), BarColumn(),
                            TaskProgressColumn(), TextColumn("{task.description}"),
                            TimeElapsedColumn(), console=console or err_console,
                            transient=True, disable=not enabled)
        self.tasks = {t.port: self.bar.add_task("waiting", total=None, name=t.name, start=False)
                      for t in devices}

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        self.bar.__exit__(*exc)

    def reporter(self, t: Target) -> Reporter:
        bar, task = self.bar, self.tasks[t.port]
        bar.start_task(task)

        class _Rep(Reporter):
            def stage(self, text: str) -> None:
                bar.update(task, description=text)

            def progress(self, done: float, total: float | None) -> None:
                bar.update(task, completed=done, total=total)

        return _Rep()

    def done(self, r: Result) -> None:
        task = self.tasks[r.port]
        if r.status == OK:
            self.bar.update(task, description=r.status, total=1, completed=1)
        else:
            self.bar.update(task, description=r.status)
