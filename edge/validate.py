"""Checks for values that arrive from outside (serial requests, state and config files, the
command line): exact types, finite numbers, ranges, text without control characters.

Each check returns the value (ints stay ints; a float field takes an int) or raises the
caller's error class, so a module keeps its own error type while the rules live here once.
``NaN`` fails every comparison, so a plain ``lo <= x <= hi`` lets it through: that is why
numbers are checked for finiteness first.
"""

from __future__ import annotations

import math
import re

from edge.errors import HushlinkError

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidValue(HushlinkError, ValueError):
    """A value of the wrong type or outside its range."""


def describe_range(lo: float | None, hi: float | None, lo_open: bool = False) -> str:
    """``50..200``, ``(0, 1]``, ``>= 0``: how a range reads in an error message."""
    if lo is None and hi is None:
        return "any finite number"
    if hi is None:
        return f"> {_num(lo)}" if lo_open else f">= {_num(lo)}"
    if lo is None:
        return f"<= {_num(hi)}"
    return f"({_num(lo)}, {_num(hi)}]" if lo_open else f"{_num(lo)}..{_num(hi)}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def number(name: str, v: object, *, kind: type = float, lo: float | None = None,
           hi: float | None = None, lo_open: bool = False,
           error: type[Exception] = InvalidValue) -> int | float:
    """``v`` as ``kind`` (int or float), finite and within ``lo``..``hi`` (``lo`` excluded
    when ``lo_open``). bool is never a number; a float field accepts an int."""
    if isinstance(v, bool) or not isinstance(v, int | float) or (kind is int
                                                                  and not isinstance(v, int)):
        want = "an integer" if kind is int else "a number"
        raise error(f"{name} must be {want}, got {_show(v)}")
    if kind is float:
        try:
            v = float(v)
        except OverflowError:  # an int beyond float's range
            raise error(f"{_subject(name, v)} is out of range "
                        f"{describe_range(lo, hi, lo_open)}") from None
        if not math.isfinite(v):
            raise error(f"{_subject(name, v)} is not a finite number")
    if ((lo is not None and (v <= lo if lo_open else v < lo))
            or (hi is not None and v > hi)):
        raise error(f"{_subject(name, v)} is out of range {describe_range(lo, hi, lo_open)}")
    return v


def _subject(name: str, v: object) -> str:
    return f"{name}={_show(v)}" if name else _show(v)


def choice(name: str, v: object, allowed: tuple[str, ...], *,
           error: type[Exception] = InvalidValue) -> str:
    if not isinstance(v, str) or v not in allowed:
        shown = repr(v) if isinstance(v, str) and len(v) <= 40 else _show(v)
        raise error(f"{name}={shown} must be one of {', '.join(allowed)}")
    return v


def boolean(name: str, v: object, *, error: type[Exception] = InvalidValue) -> bool:
    if not isinstance(v, bool):
        raise error(f"{name} must be true or false, got {_show(v)}")
    return v


def plain_text(name: str, v: object, *, max_len: int = 4096,
               error: type[Exception] = InvalidValue) -> str:
    """A string without control characters (newline, tab, NUL, ESC ...), as anything that is
    written into a line-based file (a systemd unit, a config) needs."""
    if not isinstance(v, str):
        raise error(f"{name} must be text, got {_show(v)}")
    if _CONTROL.search(v):
        shown = repr(v) if len(v) <= 60 else repr(v[:57]) + "..."
        raise error(f"{name}={shown} contains control characters (newline, tab, NUL ...)")
    if len(v) > max_len:
        raise error(f"{name} is longer than {max_len} characters")
    return v


def one_line(text: str) -> str:
    """A message on one line: line breaks (e.g. in a library's error) become '; '."""
    parts = [p.strip() for p in str(text).splitlines()]
    return "; ".join(p for p in parts if p)


def _show(v: object) -> str:
    """A value in a message: short, on one line, with its type when it is not a number."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        r = repr(v)
        r = r if len(r) <= 40 else r[:37] + "..."
        return f"{type(v).__name__} {r}"
    r = repr(v)
    return r if len(r) <= 40 else f"{r[:20]}...({len(r)} digits)"


# ------------------------------------------------------------------------- systemd units
_UNIT_NAME = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_-]{0,30}|[0-9]{1,10})$")
_EXEC_SAFE = re.compile(r"^[A-Za-z0-9_@+=:,./-]+$")


def unit_user(name: str, v: object, *, error: type[Exception] = InvalidValue) -> str:
    """A ``User=``/``Group=`` value: a POSIX-style name (or a numeric id), nothing a unit
    file line could be split or extended with."""
    plain_text(name, v, max_len=32, error=error)
    if not _UNIT_NAME.match(v):
        raise error(f"{name}={v!r} is not a user/group name (letters, digits, '_', '-'; "
                    "not starting with a digit or '-'), nor a numeric id")
    return v


def systemd_exec_word(v: str, *, program: bool = False, name: str = "argument",
                      error: type[Exception] = InvalidValue) -> str:
    """One word of an ``ExecStart=`` line, quoted per systemd.exec(5): double quotes with
    C-style escapes where needed, ``%`` (specifiers) as ``%%`` and, in arguments (not in
    the ``program`` path, which systemd does not expand), ``$`` as ``$$``, so the word
    reaches the program exactly as given. Control characters are refused: a line break
    would start a new directive."""
    plain_text(name, v, error=error)
    v = v.replace("%", "%%") if program else v.replace("%", "%%").replace("$", "$$")
    if _EXEC_SAFE.match(v):
        return v
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
