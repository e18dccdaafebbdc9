"""What the sync core tells its faces, as plain frozen dataclasses.

Subscribers are called on the worker thread: they must only hand the event
on (the console posts a Textual message, headless mode logs a line), never do
work of their own there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

log = logging.getLogger(__name__)


def frozen(value: Any) -> Any:
    """A deep read-only copy of JSON-like data: mappings read-only, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: frozen(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(frozen(item) for item in value)
    return value


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
    counts: Mapping[str, int]  # the run's counters so far, read-only
    changes: tuple[ChangeRecord, ...] = ()
    rejects: tuple[tuple[str, str], ...] = ()  # (document id, reason)
    new_rejects: tuple[str, ...] = ()  # the ids among rejects that were not rejected before

    def __post_init__(self) -> None:
        object.__setattr__(self, "counts", frozen(self.counts))


@dataclass(frozen=True)
class RunCounts:
    """A finished run's counters, as they were when it ended."""

    fetched: int = 0
    inserted: int = 0
    updated: int = 0
    restored: int = 0
    deleted: int = 0
    unchanged: int = 0
    stale: int = 0
    repaired: int = 0
    rejected: int = 0
    firestore_reads: int = 0
    naive_reads: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @property
    def written(self) -> int:
        return self.inserted + self.updated + self.deleted


@dataclass(frozen=True)
class RunReport:
    """What a run ended with, frozen: the runs table, ``--json`` and every face see the same figures."""

    status: str  # ok | skipped | failed
    kind: str  # normal | force | listen | ids | rollback
    trigger: str
    counts: RunCounts
    duration_ms: int
    run_id: int | None
    started_at: datetime | None
    forced: bool = False
    dry_run: bool = False
    incremental: bool = False
    reason: str = ""
    hint: str = ""
    exit_code: int = 0
    rolled_back: tuple[int, ...] = ()


@dataclass(frozen=True)
class SyncFinished(Event):
    result: RunReport


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
    # The service's snapshot (core/contracts.py Snapshot) when it changed: a deep read-only copy.
    snapshot: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "snapshot", frozen(self.snapshot))


@dataclass(frozen=True)
class RequestUpdate(Event):
    """A run this process asked of the leading service (through the database) moved on."""

    request_id: int | None  # the empsync_requests row; None when it could not be queued at all
    ticket: int  # the number the face was given when it asked
    kind: str
    trigger: str
    status: str  # queued | claimed | running | done | failed | expired
    leader: str | None = None  # host:pid of the process that took it
    run_id: int | None = None
    result: RunReport | None = None  # what the leader recorded once the run ended
    reason: str = ""


@dataclass(frozen=True)
class NotificationSent(Event):
    """The outcome of one notification to one receiver (core/notify.py); ``ok`` False: it was given up."""

    kind: str
    title: str
    receiver: str
    ok: bool
    attempts: int
    detail: str = ""


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
