"""What the sync core tells its faces, as plain frozen dataclasses.

Subscribers are called on the worker thread: they must only hand the event
on (the console posts a Textual message, headless mode logs a line), never do
work of their own there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    at: datetime


@dataclass(frozen=True)
class SyncStarted(Event):
    run_id: int | None
    kind: str  # normal | force | listen
    trigger: str
    dry_run: bool


@dataclass(frozen=True)
class ChangeRecord:
    at: datetime
    document_id: str
    operation: str
    field: str | None = None
    old: str | None = None
    new: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class BatchApplied(Event):
    run_id: int | None
    counts: dict[str, int]
    changes: tuple[ChangeRecord, ...] = ()
    rejects: tuple[tuple[str, str], ...] = ()  # (document id, reason)
    new_rejects: tuple[str, ...] = ()  # the ids among rejects that were not rejected before


@dataclass(frozen=True)
class SyncFinished(Event):
    result: Any  # engine.RunResult; Any keeps this module free of the engine


@dataclass(frozen=True)
class SyncFailed(Event):
    run_id: int | None
    kind: str
    error: str
    hint: str = ""


@dataclass(frozen=True)
class StatusChanged(Event):
    state: str  # idle | syncing | paused | disabled | standby | error | listening | reconnecting | ...
    detail: str = ""
    snapshot: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NotificationSent(Event):
    """The outcome of one notification to one receiver (core/notify.py); ``ok`` False: it was given up."""

    kind: str
    title: str
    receiver: str
    ok: bool
    attempts: int
    detail: str = ""


@dataclass(frozen=True)
class LogRecord(Event):
    level: str
    logger: str
    message: str


Subscriber = Callable[[Event], None]


class EventBus:
    """Fan-out to subscribers; a failing subscriber is logged, never fatal."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Subscriber] = []

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def emit(self, event: Event) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:  # noqa: BLE001 - a face's bug must not stop the sync
                log.exception("event subscriber %r failed", callback)
