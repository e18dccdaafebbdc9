"""A stand-in for the sync service the console hosts: its face API, real core events, no servers.

The console's own behaviour (keys, dialogs, the filter, bounds, coalescing)
is tested against ``FakeService``: the calls of ``core.face.SyncFace``, the
Protocol the console is typed against (test_tui.py checks that it and
``SyncService`` both have each, with the same parameters). Every call is
recorded; runs are played as the real service plays them: on a worker
thread of its own, as real ``core.events`` (``SyncStarted``,
``BatchApplied`` with ``ChangeRecord``s, ``SyncFinished`` with a frozen
``RunReport``, ``SyncFailed``, ``StatusChanged``, ``RequestUpdate``) sent
through an ``EventBus`` to the subscriber the App registered, so the real
Bridge and ``post_message`` path carries them. What it answers for reads
(recent changes, rejects, runs) is a list in memory that its runs keep up
to date.

It stands in for the service, not for the database or Firestore: the
service itself is tested against the real servers (test_service.py), and a
few console tests host it there (test_tui.py).
"""

from __future__ import annotations

import copy
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from core.config import check_interval
from core.engine import Counts, RunResult
from core.errors import EmpsyncError
from core.events import (
    BatchApplied,
    ChangeRecord,
    Event,
    EventBus,
    RequestUpdate,
    RunCounts,
    RunReport,
    StatusChanged,
    SyncFailed,
    SyncFinished,
    SyncStarted,
)
from core.face import RollbackOptions, Ticket
from core.service import ONE_OFF_KINDS
from core.times import iso, utcnow

log = logging.getLogger("empsync.sync")

IDENTITY = "console-test:4242"
IDLE_WAIT_S = 0.02  # the fake worker's wait for a command


def base_snapshot(identity: str = IDENTITY) -> dict[str, Any]:
    """A console's service before it starts: the keys the real ``snapshot()`` has."""
    return {
        "state": "starting",
        "detail": "",
        "is_leader": False,
        "service": identity,
        "leader": None,
        "attached": False,
        "current_run": None,
        "last_result": None,
        "failures": 0,
        "retry_at": None,
        "pending": [],
        "paused": False,
        "interval": 300,
        "interval_source": "config",
        "force_interval": 3600,
        "mode": "poll",
        "last_sync_at": None,
        "last_force_sync_at": None,
        "next_sync_at": None,
        "next_force_sync_at": None,
        "rows": 0,
        "documents": 0,
        "source": {"project": "fake-hr", "database": "(default)", "collection": "employees"},
        "target": "sqlite:///mirror.db",
        "table": "employees",
        "leader_view": None,
    }


def base_stats() -> dict[str, Any]:
    return {
        "runs": 0,
        "runs_by_status": {},
        **{k: 0 for k in ("inserted", "updated", "deleted", "unchanged", "rejected", "rejects_open", "rows")},
        "firestore_reads": 0,
        "naive_reads": 0,
        "reads_saved_pct": None,
        "last_duration_ms": None,
        "recent_durations_ms": [],
        "hourly": [],
    }


def change(
    document_id: str,
    operation: str = "update",
    field: str | None = None,
    old: str | None = None,
    new: str | None = None,
    name: str | None = None,
) -> ChangeRecord:
    """One change as the engine reports it: ``change("e1", field="salary", old="1", new="2")``."""
    return ChangeRecord(utcnow(), document_id, operation, field, old, new, name)


def audit_row(
    id: int,
    document_id: str,
    operation: str = "insert",
    *,
    name: str | None = None,
    field: str | None = None,
    old: str | None = None,
    new: str | None = None,
    run_id: int | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """One row of the audit table, as ``recent_changes()`` returns it."""
    return {
        "id": id,
        "run_id": run_id,
        "changed_at": at or utcnow(),
        "document_id": document_id,
        "operation": operation,
        "field": field,
        "old_value": old,
        "new_value": new,
        "name": name,
    }


@dataclass
class Script:
    """What the next run does: its changes (in batches), or its failure."""

    changes: tuple[ChangeRecord, ...] = ()
    batch_size: int = 100
    fail: str = ""  # the run fails with this reason, as an unreachable source fails it
    hint: str = ""


@dataclass
class Call:
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


class FakeService:
    """The face API ``SyncService`` offers, over a scripted worker (see the module's docstring).

    ``snapshot``/``stats`` seed what it reports; ``changes`` are the audit rows
    a database would hold (newest first). Tests script runs with ``script``,
    hold them open with ``hold_runs``, send events of their own with ``emit``,
    and make reads fail with ``read_error``.
    """

    def __init__(
        self,
        *,
        snapshot: dict[str, Any] | None = None,
        stats: dict[str, Any] | None = None,
        changes: Iterable[dict[str, Any]] = (),
        rejects: Iterable[dict[str, Any]] = (),
        identity: str = IDENTITY,
        leads: bool = True,
    ) -> None:
        self.identity = identity
        self.leads = leads  # False: it never takes the lock; set_state says what it does instead
        self.bus = EventBus()
        self.calls: list[Call] = []
        self.read_error = ""  # set: every read raises EmpsyncError with it, as with the database away
        self.history = list(changes)  # audit rows, newest first
        self.reject_rows = list(rejects)
        self.run_rows: list[dict[str, Any]] = []  # newest first, as service.runs() returns them
        self.run_change_rows: dict[int, list[dict[str, Any]]] = {}
        self.others_changes: list[dict[str, Any]] = []  # another process's audit rows (ids ascending)
        self.others_log: list[dict[str, Any]] = []  # another process's shared log lines (ids ascending)
        self._lock = threading.Lock()
        self._live = {**base_snapshot(identity), **(snapshot or {})}
        self._stats = {**base_stats(), **(stats or {})}
        self._scripts: list[Script] = []
        self._commands: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._gate = threading.Event()
        self._gate.set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tickets = itertools.count(1)
        self._run_ids = itertools.count(max((int(r.get("run_id") or 0) for r in self.history), default=0) + 1)
        self._audit_ids = itertools.count(max((int(r.get("id") or 0) for r in self.history), default=0) + 1)

    # -- what tests use ---------------------------------------------------------------

    def called(self, name: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.name == name]

    def script(self, *scripts: Script) -> None:
        """The next runs do these, in order; a run with no script left reads and writes nothing."""
        with self._lock:
            self._scripts.extend(scripts)

    def hold_runs(self) -> threading.Event:
        """Each batch from now on stays in progress until the returned event is set; stop() waits for it too."""
        self._gate.clear()
        return self._gate

    def emit(self, *events: Event) -> None:
        """Send these events from the worker thread, as the engine would send them."""
        self._commands.put(("emit", events))

    def set_snapshot(self, **values: Any) -> None:
        with self._lock:
            self._live.update(values)

    def set_state(self, state: str, detail: str = "") -> None:
        """The worker enters this state (a StatusChanged from its thread), as a standby or an outage does."""
        self._commands.put(("state", (state, detail)))

    # -- the face API -------------------------------------------------------------------

    def start(self) -> FakeService:
        self._record("start")
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name="fake-worker", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 9.0) -> bool:
        self._record("stop", timeout)
        self._stop.set()
        self._commands.put(("wake", None))
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.alive  # False: the batch in progress did not end in time

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        return self.bus.subscribe(callback)

    def force_sync(self, trigger: str = "api", allow_mass_delete: bool = False) -> Ticket:
        self._record("force_sync", trigger, allow_mass_delete=allow_mass_delete)
        return self._queue("force", trigger, allow_mass_delete=allow_mass_delete)

    def sync_now(self, trigger: str = "api") -> Ticket:
        self._record("sync_now", trigger)
        return self._queue("normal", trigger)

    def sync_ids(self, ids: tuple[str, ...], trigger: str = "api") -> Ticket:
        self._record("sync_ids", ids, trigger)
        return self._queue("ids", trigger, ids=ids)

    def rollback(self, run: int, *, hold: bool = False, cascade: bool = False, trigger: str = "api") -> Ticket:
        self._record("rollback", run, hold=hold, cascade=cascade, trigger=trigger)
        return self._queue("rollback", trigger, rollback=RollbackOptions(run, hold, cascade))

    def plan_rollback(self, run: int, cascade: bool = False) -> RunResult:
        """A dry rollback: every change the run made, to be put back."""
        self._record("plan_rollback", run, cascade=cascade)
        self._check_read()
        rows = self.run_change_rows.get(run)
        if rows is None:
            return RunResult(status="failed", kind="rollback", reason=f"there is no run #{run}", dry_run=True)
        docs = {r["document_id"] for r in rows}
        plan = [{"document_id": d, "operation": "update"} for d in sorted(docs)]  # as rollback.describe() has it
        counts = Counts(updated=len(docs))
        return RunResult(
            status="ok", kind="rollback", dry_run=True, counts=counts, would_change=plan, rolled_back=[run]
        )

    def set_interval(self, seconds: int) -> int:
        self._record("set_interval", seconds)
        check_interval(seconds)  # the real bounds, refused the real way
        with self._lock:
            self._live.update(interval=seconds, interval_source="database")
        return seconds

    def pause(self) -> None:
        self._record("pause")
        self._commands.put(("paused", True))

    def resume(self) -> None:
        self._record("resume")
        self._commands.put(("paused", False))

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._live)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._stats)

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        self._check_read()
        with self._lock:
            return copy.deepcopy(self.run_rows[:limit])

    def run_changes(self, run: int, limit: int = 1000) -> list[dict[str, Any]]:
        self._check_read()
        with self._lock:
            return copy.deepcopy(self.run_change_rows.get(run, [])[:limit])

    def recent_changes(self, limit: int = 50, needle: str = "") -> list[dict[str, Any]]:
        self._record("recent_changes", limit=limit, needle=needle)
        self._check_read()
        folded = needle.casefold()
        with self._lock:
            rows = [r for r in self.history if folded in (str(r["document_id"]) + (r.get("name") or "")).casefold()]
            return copy.deepcopy(rows[:limit])

    def rejects(self) -> list[dict[str, Any]]:
        self._check_read()
        return copy.deepcopy(self.reject_rows)

    def changes_by_others(self, after: int, limit: int = 500) -> list[dict[str, Any]]:
        self._check_read()
        with self._lock:
            return copy.deepcopy([r for r in self.others_changes if r["id"] > after][:limit])

    def log_by_others(self, after: int | None, limit: int = 500) -> list[dict[str, Any]]:
        self._check_read()
        with self._lock:
            lines = self.others_log[-limit:] if after is None else [r for r in self.others_log if r["id"] > after]
            return copy.deepcopy(lines[:limit])

    # -- the worker --------------------------------------------------------------------

    def _record(self, name: str, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            self.calls.append(Call(name, args, kwargs))

    def _check_read(self) -> None:
        if self.read_error:
            raise EmpsyncError(self.read_error)

    def _queue(self, kind: str, trigger: str, **options: Any) -> Ticket:
        with self._lock:
            forwarded = not self._live["is_leader"]  # the leader runs it: this one asks it to
        ticket = Ticket(next(self._tickets), kind, trigger, utcnow(), **options, forwarded=forwarded)
        with self._lock:
            self._live["pending"] = [*self._live["pending"], ticket.to_json()]
        self._commands.put(("run", ticket))
        return ticket

    def _main(self) -> None:
        if self.leads:
            with self._lock:
                self._live.update(is_leader=True, leader=self.identity)
            log.info("Leading: this service syncs (fake)")
            self._set_state(self._idle_state())
        while not self._stop.is_set():
            self._drain(IDLE_WAIT_S)
        with self._lock:
            self._live["is_leader"] = False
        log.info("empsync service stopped (fake)")
        self._set_state("stopped")

    def _drain(self, wait: float, runs: bool = True) -> None:
        """Handle the queued commands; with ``runs`` False (inside a run) only the quick ones, as the service does."""
        held: list[tuple[str, Any]] = []
        deadline = time.monotonic() + wait
        while True:
            try:
                name, arg = self._commands.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if name == "run" and not runs:
                held.append((name, arg))  # after the current run, in its turn
            elif name == "run":
                self._forward(arg) if arg.forwarded else self._run(arg)
            elif name == "emit":
                for event in arg:
                    self.bus.emit(event)
            elif name == "state":
                self._set_state(*arg)
            elif name == "paused":
                with self._lock:
                    self._live["paused"] = arg
                self._set_state(self._idle_state())
            if self._stop.is_set() or self._commands.empty():
                break
        for command in held:
            self._commands.put(command)

    def _idle_state(self) -> str:
        return "paused" if self._live["paused"] else "idle"

    def _set_state(self, state: str, detail: str = "") -> None:
        with self._lock:
            if (self._live["state"], self._live["detail"]) == (state, detail):
                return
            self._live.update(state=state, detail=detail)
        self.bus.emit(StatusChanged(utcnow(), state, detail, self.snapshot()))

    def _run(self, ticket: Ticket) -> None:
        with self._lock:
            script = self._scripts.pop(0) if self._scripts else Script()
            self._live["pending"] = [p for p in self._live["pending"] if p["request_id"] != ticket.request_id]
        run_id, started, counts = next(self._run_ids), utcnow(), Counts()
        with self._lock:
            self._live["current_run"] = {"run_id": run_id, "kind": ticket.kind, "trigger": ticket.trigger, "counts": {}}
        self._set_state("syncing", f"{ticket.kind} run #{run_id}")
        self.bus.emit(SyncStarted(utcnow(), run_id, ticket.kind, ticket.trigger, False))
        log.info("Starting employee sync (%s)", ticket.kind)
        batches = [script.changes[i : i + script.batch_size] for i in range(0, len(script.changes), script.batch_size)]
        for batch in batches or [()]:
            self._apply(run_id, batch, counts)
            while not self._gate.wait(IDLE_WAIT_S):
                self._drain(0, runs=False)  # pause and interval are seen during a run, as between batches
            self._drain(0, runs=False)
            if self._stop.is_set():
                return  # abandoned, as a stopped service abandons its batch
        if script.fail:
            self._fail(ticket, run_id, started, counts, script)
        else:
            self._finish(ticket, run_id, started, counts)

    def _forward(self, ticket: Ticket) -> None:
        """Asked of the leader (through the database, for the real one): the request's progress, as events."""
        with self._lock:
            leader = self._live["leader"]
            self._live["pending"] = [p for p in self._live["pending"] if p["request_id"] != ticket.request_id]
        run_id = next(self._run_ids)
        report = RunReport("ok", ticket.kind, ticket.trigger, RunCounts(), 0, run_id, utcnow(), ticket.kind == "force")
        for status, more in (
            ("queued", {}),
            ("running", {"run_id": run_id}),
            ("done", {"run_id": run_id, "result": report}),
        ):
            update = RequestUpdate(
                utcnow(), ticket.request_id, ticket.request_id, ticket.kind, ticket.trigger, status, leader, **more
            )
            self.bus.emit(update)

    def _apply(self, run_id: int, batch: tuple[ChangeRecord, ...], counts: Counts) -> None:
        counts.fetched += len({r.document_id for r in batch})
        for _, operation in {(r.document_id, r.operation) for r in batch}:  # a document counts once per operation
            setattr(counts, _COUNTER[operation], getattr(counts, _COUNTER[operation]) + 1)
        audit = [
            audit_row(
                next(self._audit_ids),
                r.document_id,
                r.operation,
                name=r.name,
                field=r.field,
                old=r.old,
                new=r.new,
                run_id=run_id,
                at=r.at,
            )
            for r in batch
        ]
        with self._lock:
            self.history[:0] = reversed(audit)
            self.run_change_rows.setdefault(run_id, []).extend(audit)
            if self._live["current_run"] is not None:
                self._live["current_run"] = {**self._live["current_run"], "counts": counts.as_dict()}
        self.bus.emit(BatchApplied(utcnow(), run_id, counts.as_dict(), batch))

    def _finish(self, ticket: Ticket, run_id: int, started: datetime, counts: Counts) -> None:
        duration_ms = int((utcnow() - started).total_seconds() * 1000)
        reason = ""
        if ticket.kind == "rollback" and ticket.rollback is not None:
            reason = f"rolled back #{ticket.rollback.run}; scheduled syncs are paused"
        report = RunReport(
            status="ok",
            kind=ticket.kind,
            trigger=ticket.trigger,
            counts=RunCounts(**counts.as_dict()),
            duration_ms=duration_ms,
            run_id=run_id,
            started_at=started,
            forced=ticket.kind == "force",
            reason=reason,
            rolled_back=(ticket.rollback.run,) if ticket.rollback else (),
        )
        log.info("Employee sync completed: %d inserted, %d updated (fake)", counts.inserted, counts.updated)
        self.bus.emit(SyncFinished(utcnow(), report))
        with self._lock:
            self._record_run(report, "ok", reason)
            self._live.update(current_run=None, failures=0, retry_at=None)
            if ticket.kind not in ONE_OFF_KINDS:
                self._live["last_sync_at"] = iso(started)
                self._live["next_sync_at"] = iso(utcnow() + timedelta(seconds=self._live["interval"]))
            if ticket.kind == "force":
                self._live["last_force_sync_at"] = iso(started)
            if ticket.kind == "rollback" and ticket.rollback and not ticket.rollback.hold:
                self._live["paused"] = True
            s = self._stats
            s["runs"] += 1
            s["runs_by_status"]["ok"] = s["runs_by_status"].get("ok", 0) + 1
            for key in ("inserted", "updated", "deleted", "rejected"):
                s[key] += getattr(counts, key)
            s["last_duration_ms"] = duration_ms
            s["recent_durations_ms"] = [*s["recent_durations_ms"], duration_ms][-12:]
        self._set_state(self._idle_state())

    def _fail(self, ticket: Ticket, run_id: int, started: datetime, counts: Counts, script: Script) -> None:
        log.error("Employee sync failed: %s", script.fail)
        self.bus.emit(SyncFailed(utcnow(), run_id, ticket.kind, script.fail, script.hint))
        report = RunReport("failed", ticket.kind, ticket.trigger, RunCounts(**counts.as_dict()), 0, run_id, started)
        with self._lock:
            self._record_run(report, "failed", script.fail)
            failures = self._live["failures"] + 1
            self._live.update(current_run=None, failures=failures, retry_at=iso(utcnow() + timedelta(seconds=5)))
        self._set_state("error", f"{script.fail}; retrying in 5 s")

    def _record_run(self, report: RunReport, status: str, message: str) -> None:
        """The runs row and last_result of a run that ended (under the lock)."""
        row = {
            "id": report.run_id,
            "kind": report.kind,
            "status": status,
            "trigger": report.trigger,
            "started_at": iso(report.started_at),
            "duration_ms": report.duration_ms,
            "message": message,
            **report.counts.as_dict(),
        }
        self.run_rows.insert(0, row)
        self._live["last_result"] = {"status": status, "kind": report.kind, "run_id": report.run_id, "reason": message}


_COUNTER = {"insert": "inserted", "update": "updated", "delete": "deleted", "restore": "restored"}
