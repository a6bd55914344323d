"""A denoised virtual microphone in the sound server (PulseAudio, or PipeWire's pipewire-pulse,
which implements the same modules and ``pactl``).

``edge-denoise virtual-mic`` plays the live loop's output into a null sink and exposes that
sink's monitor as an ordinary source (``module-remap-source``): many applications hide
monitor sources from their microphone list, a remapped source with a description is listed
like any microphone. Modules loaded with ``pactl`` outlive the client that loaded them, so
every module this process loads is also handed to a guard process (``ModuleGuard``) that
unloads it when this process goes away without doing so itself (``kill -9``, a crash).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from edge.errors import HushlinkError

NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
PACTL_HINT = ("install pulseaudio-utils (PulseAudio) or pulseaudio-utils with pipewire-pulse "
              "(PipeWire)")

# Runs detached from our process group (Ctrl-C in the terminal must not kill it first) and
# ignores INT/TERM/HUP (systemd signals the whole cgroup on stop). It collects module indices,
# one a line; "done" means we unloaded them ourselves; EOF without it means we died.
_GUARD = ('trap "" INT TERM HUP; ids=""; '
          'while read -r i; do [ "$i" = done ] && exit 0; ids="$i $ids"; done; '
          'for i in $ids; do pactl unload-module "$i" >/dev/null 2>&1; done')


class SoundServerError(HushlinkError):
    """pactl is missing, no sound server answers, or a module cannot be loaded."""


def pactl(*args: str, timeout: float = 10.0) -> str:
    """Run ``pactl args`` (C locale: its labels are translated otherwise); stdout."""
    if shutil.which("pactl") is None:
        raise SoundServerError(f"pactl not found: {PACTL_HINT}")
    try:
        r = subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "LC_ALL": "C"})
    except subprocess.TimeoutExpired:
        raise SoundServerError(f"pactl {args[0]}: no answer from the sound server in "
                               f"{timeout:g} s") from None
    if r.returncode != 0:
        why = (r.stderr or r.stdout).strip().splitlines()
        raise SoundServerError(f"pactl {' '.join(args[:2])}: {why[-1] if why else 'failed'}")
    return r.stdout


def server_info() -> dict[str, str]:
    """``pactl info`` as a dict ("Server Name", "Default Source", ...); an error names the
    missing server."""
    try:
        text = pactl("info")
    except SoundServerError as e:
        raise SoundServerError(f"no PulseAudio/PipeWire server to talk to ({e})") from None
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


def short_list(kind: str) -> list[list[str]]:
    """``pactl list short <kind>`` rows as tab-separated fields (kind: modules, sources ...)."""
    return [line.split("\t") for line in pactl("list", "short", kind).splitlines() if line]


def source_names() -> list[str]:
    return [row[1] for row in short_list("sources")]


def modules_naming(name: str) -> list[int]:
    """Indices of loaded modules whose arguments name ``name`` (sink_name=, source_name=,
    master=): a leftover of a run that could not clean up, or another running instance."""
    pat = re.compile(rf"(?:^|\s)(?:sink_name|source_name|master)={re.escape(name)}(?:\s|$)")
    return [int(row[0]) for row in short_list("modules")
            if len(row) > 2 and pat.search(row[2])]


def quote_description(text: str) -> str:
    """A ``*_properties=`` module argument holding device.description; both servers parse
    this quoting (outer single quotes, inner double quotes) and keep the spaces."""
    if any(c in text for c in "'\"\\\n"):
        raise SoundServerError(f"description {text!r}: no quotes, backslashes or newlines")
    return f"'device.description=\"{text}\"'"


def capture_argv(source: str, rate: int) -> list[str]:
    """``parec`` recording ``source`` as raw mono float32 (edge.sources.ProcessSource)."""
    return [_tool("parec"), f"--device={source}", "--raw", "--format=float32le",
            f"--rate={int(rate)}", "--channels=1", "--latency-msec=10",
            "--client-name=hushlink virtual-mic", "--stream-name=denoiser input"]


def playback_argv(sink: str, rate: int, latency_ms: int) -> list[str]:
    """``pacat`` playing raw mono float32 into ``sink`` (edge.sinks.ProcessSink)."""
    return [_tool("pacat"), "--playback", f"--device={sink}", "--raw", "--format=float32le",
            f"--rate={int(rate)}", "--channels=1", f"--latency-msec={int(latency_ms)}",
            "--client-name=hushlink virtual-mic", "--stream-name=denoised output"]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SoundServerError(f"{name} not found: {PACTL_HINT}")
    return path


class ModuleGuard:
    """Loads modules and unloads exactly those, in reverse order, on ``close()``; a detached
    ``sh`` unloads them too if this process dies before ``close()``."""

    def __init__(self):
        self.loaded: list[int] = []
        self._guard = subprocess.Popen(["sh", "-c", _GUARD], stdin=subprocess.PIPE, text=True,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       start_new_session=True)

    def load(self, module: str, *args: str) -> int:
        out = pactl("load-module", module, *args).strip()
        try:
            index = int(out.splitlines()[-1])
        except (ValueError, IndexError):
            raise SoundServerError(f"pactl load-module {module}: unexpected answer "
                                   f"{out!r}") from None
        self.loaded.append(index)
        self._guard.stdin.write(f"{index}\n")
        self._guard.stdin.flush()
        return index

    def close(self) -> list[str]:
        """Unload what was loaded (newest first); returns the failures (already gone ...)."""
        failures = []
        while self.loaded:
            index = self.loaded.pop()
            try:
                pactl("unload-module", str(index))
            except SoundServerError as e:
                failures.append(str(e))
        try:
            self._guard.stdin.write("done\n")
            self._guard.stdin.close()
        except (BrokenPipeError, ValueError):
            pass
        try:
            self._guard.wait(5)
        except subprocess.TimeoutExpired:
            self._guard.kill()
        return failures


@dataclass(frozen=True)
class VirtualMic:
    """What ``virtual_mic`` set up: capture from ``capture_source``, play into ``sink``;
    applications record from ``source``."""

    source: str  # the virtual microphone applications pick
    sink: str  # the null sink the denoiser plays into (internal)
    capture_source: str  # what the denoiser listens to
    description: str
    modules: tuple[int, ...]


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise SoundServerError(f"--name {name!r}: use 1-64 letters, digits, '_', '.', '-'")
    return name


@contextmanager
def virtual_mic(name: str, capture: str | None, description: str, rate: int,
                warn=None) -> Iterator[VirtualMic]:
    """Load a mono null sink ``<name>_feed`` at ``rate`` Hz and ``module-remap-source`` of its
    monitor as source ``name``; unloads both on exit, whatever happens inside.

    ``capture``: the source to denoise; None = the server's default source, resolved now,
    before our own source exists (a server may make a new source the default).
    ``warn(message)``: told when unloading fails (the server went away: nothing is left).
    """
    check_name(name)
    sink = f"{name}_feed"
    info = server_info()
    capture = capture or info.get("Default Source", "")
    if not capture or capture == "@DEFAULT_SOURCE@":
        raise SoundServerError("the sound server has no default source: pass --source "
                               "(`pactl list short sources`)")
    sources = source_names()
    if capture in (name, f"{sink}.monitor"):
        raise SoundServerError(f"source {capture!r} is the virtual microphone itself (it would "
                               "feed back): pass --source with the real microphone")
    if capture not in sources:
        raise SoundServerError(f"no source {capture!r}; sources: {', '.join(sources) or 'none'}")
    stale = sorted(set(modules_naming(name) + modules_naming(sink)))
    if stale or name in sources:
        raise SoundServerError(
            f"a source or sink named {name!r} already exists (another virtual-mic, or a "
            f"leftover: pactl unload-module {' '.join(map(str, stale)) or '<index>'}); "
            "or pick another --name")
    guard = ModuleGuard()
    try:
        guard.load("module-null-sink", f"sink_name={sink}", f"rate={int(rate)}", "channels=1",
                   "sink_properties=" + quote_description(f"{description} (feed)"))
        guard.load("module-remap-source", f"master={sink}.monitor", f"source_name={name}",
                   "channels=1", "source_properties=" + quote_description(description))
        yield VirtualMic(source=name, sink=sink, capture_source=capture,
                         description=description, modules=tuple(guard.loaded))
    finally:
        for failure in guard.close():
            if warn is not None:
                warn(f"unloading: {failure}")
