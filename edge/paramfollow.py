"""A stream that follows the agent's parameters without being restarted.

``edge-denoise serve --stream-cmd "edge-denoise send clip.wav --loop --params-file
{params_file} ..."``: the agent writes the active parameters to ``STATE/params.json`` (atomic
replace) on every set/apply/confirm/revert; the sender polls that file and applies a change
between two packets (``Sender.update``), and announces its parameters to the receiver in an
RTCP APP packet, so the receiver's buffer bound follows too. Restarting the sender instead
would cut the stream for a moment and start a new SSRC at the receiver.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from edge.agent import CommandStream
from edge.params import ParamsError, TransportParams

PLACEHOLDER = "{params_file}"


class FollowingStream(CommandStream):
    """A ``--stream-cmd`` with ``{params_file}``: started once; a parameter change reaches the
    running command through the file, so ``start`` while it runs does nothing."""

    def __init__(self, template: str, params_file: str | Path):
        super().__init__(template.replace(PLACEHOLDER, shlex.quote(str(params_file))))
        self.params_file = Path(params_file)

    def start(self, params: TransportParams) -> None:
        if not self.running:
            super().start(params)


def stream_for(template: str | None, state_dir: str | Path):
    """The agent's stream for ``serve --stream-cmd`` (None without one)."""
    if not template:
        return None
    if PLACEHOLDER in template:
        return FollowingStream(template, Path(state_dir) / "params.json")
    return CommandStream(template)


class ParamsFile:
    """The sender's side: the agent's active parameters, read again whenever the file
    changes (mtime, size or inode)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._sig: tuple | None = None

    def poll(self) -> TransportParams | None:
        """The active parameters if the file changed since the last poll, else None (also
        while it is missing or unreadable: the agent replaces it atomically, so that passes)."""
        try:
            st = self.path.stat()
        except OSError:
            return None
        sig = (st.st_mtime_ns, st.st_size, st.st_ino)
        if sig == self._sig:
            return None
        try:
            params = TransportParams.from_dict(json.loads(self.path.read_text())["active"])
        except (OSError, ValueError, KeyError, TypeError, ParamsError):
            return None
        self._sig = sig
        return params


def describe_change(old: TransportParams, new: TransportParams) -> str:
    """``bitrate_kbps 64 -> 147, buffer_ms 200 -> 100`` (for the logs of both ends)."""
    a, b = old.to_dict(), new.to_dict()
    return ", ".join(f"{k} {a[k]} -> {b[k]}" for k in a if a[k] != b[k])
