"""Textual messages: the core's events as they arrive on the event loop, and the console's own.

A core event travels as it is, inside one ``CoreEvent``: its frozen
dataclass is the message's data, so nothing here re-declares it. Other
threads only ever post these (``post_message`` is thread-safe); everything
that touches a widget happens in their handlers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from textual.message import Message

from core import events as core


class CoreEvent(Message):
    """A core event (``core.events``: frozen data) carried to the event loop as it is; the App matches on its type."""

    def __init__(self, event: core.Event) -> None:
        super().__init__()
        self.event = event


# -- the console's own -----------------------------------------------------------


class LogLine(Message):
    """One log record; ``source`` names the process it came from when that is not this one."""

    def __init__(self, at: datetime, level: str, logger: str, text: str, source: str = "") -> None:
        super().__init__()
        self.at, self.level, self.logger, self.text, self.source = at, level, logger, text, source


class ChangesLoaded(Message):
    """Recent changes read from the database by a thread worker (start-up or a filter); None: it failed."""

    def __init__(self, rows: list[dict[str, Any]] | None, needle: str) -> None:
        super().__init__()
        self.rows, self.needle = rows, needle


class RemoteLoaded(Message):
    """What other processes added since the last look: audit rows and log lines (None: the read failed)."""

    def __init__(self, changes: list[dict[str, Any]] | None, lines: list[dict[str, Any]] | None, leading: bool) -> None:
        super().__init__()
        self.changes, self.lines, self.leading = changes, lines, leading


class RejectsLoaded(Message):
    def __init__(self, rows: list[dict[str, Any]], error: str = "") -> None:
        super().__init__()
        self.rows, self.error = rows, error


class ServiceStopped(Message):
    """The service's worker has finished (``clean``) or did not within the timeout."""

    def __init__(self, clean: bool) -> None:
        super().__init__()
        self.clean = clean
