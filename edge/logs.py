"""Diagnostic logging of the long-running commands (serve, clock, live, send, receive).

``edge-denoise --log-level LEVEL`` (or HUSHLINK_LOG_LEVEL) sends every ``logging`` record to
stderr with its time and level, one line each, which journald stores as is under a systemd
unit. Without it the commands keep their plain ``prog: message`` lines. Results still go to
stdout; this is only the side channel.
"""

from __future__ import annotations

import logging
import sys

LEVELS = ("debug", "info", "warning", "error")
FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s"
DATEFMT = "%Y-%m-%dT%H:%M:%S"
_MARK = "_hushlink_handler"


def setup(level: str) -> None:
    """Route log records at ``level`` and above to stderr with time and level (idempotent)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _MARK, False):
            root.removeHandler(h)
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter(FORMAT, DATEFMT))
    setattr(h, _MARK, True)
    root.addHandler(h)
    root.setLevel(level.upper())


def configured() -> bool:
    return any(getattr(h, _MARK, False) for h in logging.getLogger().handlers)


def reporter(name: str, prefix: str):
    """A ``log(msg)`` callable: an INFO record of logger ``name`` when --log-level is set,
    else the plain ``prefix: msg`` line on stderr the command always printed."""
    logger = logging.getLogger(name)

    def log(msg: str) -> None:
        if configured():
            logger.info(msg)
        else:
            print(f"{prefix}: {msg}", file=sys.stderr, flush=True)

    return log
