"""The errors an operator can act on.

Each carries a message that names the cause and, where there is one, the fix.
The CLI prints them as one or two lines and maps them to an exit code; nothing
here is meant to surface as a traceback.
"""

from __future__ import annotations


class EmpsyncError(Exception):
    """Base of every expected failure. ``exit_code`` is the command's exit code (0 ok, 1 failed, 2 usage, 3 locked)."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class ConfigError(EmpsyncError):
    """A bad sync.toml, environment variable or command-line value."""

    exit_code = 2

    def __init__(self, key: str, problem: str, hint: str = "") -> None:
        super().__init__(f"config error: {key}: {problem}", hint)
        self.key = key
        self.problem = problem


class SchemaError(EmpsyncError):
    """The target table exists in a shape the configuration cannot use."""

    exit_code = 2


class SourceError(EmpsyncError):
    """Firestore could not be read (down, unreachable, no permission)."""


class TargetError(EmpsyncError):
    """The target database could not be reached or refused the write."""


class LockHeld(EmpsyncError):
    """Another process holds the sync lock."""

    exit_code = 3


class Cancelled(EmpsyncError):
    """The run was asked to stop between batches (shutdown)."""
