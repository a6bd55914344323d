"""Exceptions a user can act on. The CLIs turn them into one-line messages and exit 1."""


class HushlinkError(Exception):
    """Base class: the message names the problem and, where there is one, the fix."""


class AudioError(HushlinkError):
    """An audio file or buffer that cannot be used (missing, unreadable, empty, NaN ...)."""


class ProfileError(HushlinkError):
    """A hardware profile that is missing or invalid."""
