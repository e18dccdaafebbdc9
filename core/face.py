"""The face API: what the console, the HTTP API, the event stream and the browser console call on a sync service.

``core.service.SyncService`` is the one implementation; a face depends on
this protocol only, so a test can hand it another (a fake service that
emits real events). Every call returns at once: a run is only queued, and
what it became arrives as events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from .contracts import RunRow, Snapshot, Stats, TicketJson
from .events import Event
from .times import iso

if TYPE_CHECKING:
    from .engine import RunResult


@dataclass(frozen=True)
class RollbackOptions:
    """How a rollback was asked for (``empsync rollback RUN [--hold] [--cascade]``)."""

    run: int
    hold: bool = False
    cascade: bool = False


@dataclass(frozen=True)
class Ticket:
    """What a trigger queued: faces show it, the API returns it."""

    request_id: int
    kind: str  # normal | force | ids | rollback
    trigger: str
    queued_at: datetime
    allow_mass_delete: bool = False
    ids: tuple[str, ...] = ()  # a run of kind ids: exactly these documents
    rollback: RollbackOptions | None = None
    # Sent to the leading process through the database: this one does not lead.
    forwarded: bool = False

    def to_json(self) -> TicketJson:
        out: TicketJson = {
            "request_id": self.request_id,
            "kind": self.kind,
            "trigger": self.trigger,
            "queued_at": iso(self.queued_at),
            "allow_mass_delete": self.allow_mass_delete,
            "forwarded": self.forwarded,
        }
        if self.ids:
            out["ids"] = len(self.ids)
        if self.rollback:
            out["run"], out["hold"], out["cascade"] = self.rollback.run, self.rollback.hold, self.rollback.cascade
        return out


class SyncFace(Protocol):
    """The service as its faces see it."""

    @property
    def alive(self) -> bool: ...

    def start(self) -> SyncFace: ...

    def stop(self, timeout: float = ...) -> bool: ...

    def force_sync(self, trigger: str = ..., allow_mass_delete: bool = ...) -> Ticket: ...

    def sync_now(self, trigger: str = ...) -> Ticket: ...

    def sync_ids(self, ids: tuple[str, ...], trigger: str = ...) -> Ticket: ...

    def rollback(self, run: int, *, hold: bool = ..., cascade: bool = ..., trigger: str = ...) -> Ticket: ...

    def plan_rollback(self, run: int, cascade: bool = ...) -> RunResult: ...

    def set_interval(self, seconds: int) -> int: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def snapshot(self) -> Snapshot: ...

    def stats(self) -> Stats: ...

    def runs(self, limit: int = ...) -> list[RunRow]: ...

    def run_changes(self, run: int, limit: int = ...) -> list[dict[str, Any]]: ...

    def recent_changes(self, limit: int = ..., needle: str = ...) -> list[dict[str, Any]]: ...

    def rejects(self) -> list[dict[str, Any]]: ...

    def changes_by_others(self, after: int, limit: int = ...) -> list[dict[str, Any]]: ...

    def log_by_others(self, after: int | None, limit: int = ...) -> list[dict[str, Any]]: ...

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]: ...
