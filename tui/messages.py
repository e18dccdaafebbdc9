"""Textual messages: the core's events as they arrive on the event loop.

One message type per core event (``core/events.py``), plus the console's own.
The service's worker thread only ever posts these (``post_message`` is
thread-safe); everything that touches a widget happens in their handlers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from textual.message import Message

from core import events as core


class ServiceMessage(Message):
    """A core event carried to the event loop."""

    def __init__(self, at: datetime) -> None:
        super().__init__()
        self.at = at


class SyncStarted(ServiceMessage):
    def __init__(self, at: datetime, run_id: int | None, kind: str, trigger: str, dry_run: bool) -> None:
        super().__init__(at)
        self.run_id, self.kind, self.trigger, self.dry_run = run_id, kind, trigger, dry_run


class BatchApplied(ServiceMessage):
    def __init__(
        self,
        at: datetime,
        run_id: int | None,
        counts: dict[str, int],
        changes: tuple[core.ChangeRecord, ...],
        rejects: tuple[tuple[str, str], ...],
    ) -> None:
        super().__init__(at)
        self.run_id, self.counts, self.changes, self.rejects = run_id, counts, changes, rejects


class SyncFinished(ServiceMessage):
    def __init__(self, at: datetime, result: Any) -> None:
        super().__init__(at)
        self.result = result


class SyncFailed(ServiceMessage):
    def __init__(self, at: datetime, run_id: int | None, kind: str, error: str, hint: str) -> None:
        super().__init__(at)
        self.run_id, self.kind, self.error, self.hint = run_id, kind, error, hint


class StatusChanged(ServiceMessage):
    def __init__(self, at: datetime, state: str, detail: str, snapshot: dict[str, Any]) -> None:
        super().__init__(at)
        self.state, self.detail, self.snapshot = state, detail, snapshot


class LogLine(ServiceMessage):
    """One log record; ``source`` names the process it came from when that is not this one."""

    def __init__(self, at: datetime, level: str, logger: str, text: str, source: str = "") -> None:
        super().__init__(at)
        self.level, self.logger, self.text, self.source = level, logger, text, source


class RequestUpdate(ServiceMessage):
    """A run this console asked of the leading process moved on (``core.events.RequestUpdate``)."""

    def __init__(self, event: core.RequestUpdate) -> None:
        super().__init__(event.at)
        self.event = event


def from_event(event: core.Event) -> ServiceMessage | None:
    """The message for a core event, or None for an event the console does not show."""
    if isinstance(event, core.BatchApplied):
        return BatchApplied(event.at, event.run_id, dict(event.counts), event.changes, event.rejects)
    if isinstance(event, core.SyncStarted):
        return SyncStarted(event.at, event.run_id, event.kind, event.trigger, event.dry_run)
    if isinstance(event, core.SyncFinished):
        return SyncFinished(event.at, event.result)
    if isinstance(event, core.SyncFailed):
        return SyncFailed(event.at, event.run_id, event.kind, event.error, event.hint)
    if isinstance(event, core.StatusChanged):
        return StatusChanged(event.at, event.state, event.detail, dict(event.snapshot))
    if isinstance(event, core.RequestUpdate):
        return RequestUpdate(event)
    return None


# -- the console's own -----------------------------------------------------------


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
