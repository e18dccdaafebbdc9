"""``empsync rollback RUN``: put every row a run changed back as it was before it.

The audit log is the record: a run's field changes carry their old values,
its deletions the values of the rows they removed, its restores the time a
row had been deleted at. Walking a run's audit rows newest first and undoing
each, starting from what the table holds now, gives each row as it was
before the run. The rollback writes that in one transaction, as a run of
kind ``rollback`` with audit rows of its own, so a rollback can be rolled
back.

A later run that changed the same rows would be undone in part: refused,
unless ``cascade``, which rolls back those runs too (and any later run that
touched what they touched), newest first. empsync never writes Firestore,
so the next sync would bring the bad data back: a rollback pauses the
scheduled syncs, or with ``hold`` keeps just its documents out of every sync
until ``empsync release``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection

from .config import DELETED_AT_COLUMN, HASH_COLUMN, SYNCED_AT_COLUMN, UPDATE_TIME_COLUMN
from .db import insert_rows, upsert
from .diff import Op
from .errors import EmpsyncError
from .events import BatchApplied, ChangeRecord, SyncFinished, SyncStarted
from .mapping import content_hash, display
from .state import StateKey
from .store import ID_CHUNK, row_json
from .times import iso, utcnow

log = logging.getLogger("empsync.rollback")

PAUSED_MESSAGE = "paused: fix the documents in Firestore, then `empsync resume`"


class RollbackRefused(EmpsyncError):
    """A rollback that cannot be done as asked (the message says why and what would do)."""

    exit_code = 2


@dataclass
class Row:
    """A row as a rollback sees it: there or not, its mapped values, and its deleted_at."""

    exists: bool
    values: dict[str, Any] = field(default_factory=dict)
    deleted_at: datetime | None = None

    def copy(self) -> Row:
        return Row(self.exists, dict(self.values), self.deleted_at)


@dataclass
class Plan:
    """What a rollback would do: the runs it undoes and, per document, the row now and the row wanted."""

    runs: list[int]
    now: dict[str, Row]
    wanted: dict[str, Row]

    @property
    def changed(self) -> list[str]:
        return [i for i in self.wanted if _differs(self.now[i], self.wanted[i])]

    def counts(self) -> dict[str, int]:
        """How many rows each kind of write touches: what a confirmation states."""
        found: dict[str, int] = {}
        for item in self.describe():
            found[item["operation"]] = found.get(item["operation"], 0) + 1
        return found

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for doc_id in self.changed:
            now, wanted = self.now[doc_id], self.wanted[doc_id]
            item: dict[str, Any] = {"document_id": doc_id, "operation": _operation(now, wanted)}
            if now.exists and wanted.exists:
                item["fields"] = {
                    c: {"old": display(now.values.get(c)), "new": display(v)}
                    for c, v in wanted.values.items()
                    if not _same(now.values.get(c), v)
                }
            out.append(item)
        return out


def _same(a: Any, b: Any) -> bool:
    from .diff import same

    return same(a, b)


def _differs(now: Row, wanted: Row) -> bool:
    if not wanted.exists:
        return now.exists and now.deleted_at is None  # a row already soft-deleted needs nothing more
    if not now.exists:
        return True
    if (now.deleted_at is None) != (wanted.deleted_at is None):
        return True
    return any(not _same(now.values.get(c), v) for c, v in wanted.values.items())


def _operation(now: Row, wanted: Row) -> str:
    if not wanted.exists or (wanted.deleted_at is not None and now.exists and now.deleted_at is None):
        return "delete"
    if not now.exists:
        return "insert"
    if now.deleted_at is not None and wanted.deleted_at is None:
        return "restore"
    return "update"


class Rollback:
    """Plans and applies rollbacks for one engine (its config, database and event bus)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.config = engine.config
        self.t = engine.db.tables
        self.types = {spec.column: spec.type for spec in self.config.fields}

    # -- planning ----------------------------------------------------------------------------

    def plan(self, run_id: int, cascade: bool = False) -> Plan:
        with self.engine.db.connect() as conn:
            target = self._run_row(conn, run_id)
            self._check_rollable(target)
            runs = self._runs_to_undo(conn, run_id, cascade)
            audit = self._audit_of(conn, runs)
            docs = sorted({a["document_id"] for a in audit})
            now = self._rows_now(conn, docs)
        wanted = {doc_id: row.copy() for doc_id, row in now.items()}
        for entry in audit:  # newest first: undo each change in turn
            self._undo(entry, wanted[entry["document_id"]])
        return Plan(runs, now, wanted)

    def _run_row(self, conn: Connection, run_id: int) -> dict[str, Any]:
        runs = self.t.runs
        found = conn.execute(select(runs).where(runs.c.id == run_id)).mappings().first()
        if found is None:
            raise RollbackRefused(f"there is no run #{run_id}", "empsync runs lists them")
        return dict(found)

    def _check_rollable(self, run: dict[str, Any]) -> None:
        number = f"run #{run['id']}"
        if run["status"] == "running":
            raise RollbackRefused(
                f"{number} ({run['kind']}) is still running",
                "wait for it to end (a listen session ends when the service stops or pauses)",
            )
        table = run.get("target_table")
        if table and table != self.config.target.table:
            raise RollbackRefused(f"{number} wrote the table {table}, not {self.config.target.table}")
        days = self.config.sync.audit_retention_days
        if days and run["started_at"] < utcnow() - timedelta(days=days):
            raise RollbackRefused(
                f"{number} started {iso(run['started_at'])}, more than [sync] audit_retention_days = {days} ago: "
                "its field history is gone, so it cannot be rolled back",
                "raise audit_retention_days to keep history longer",
            )

    def _runs_to_undo(self, conn: Connection, run_id: int, cascade: bool) -> list[int]:
        """The run and, with ``cascade``, every later run that touched what they touched; newest first."""
        undo = {run_id}
        docs = self._documents_of(conn, [run_id])
        while True:
            later = self._later_runs(conn, min(undo), docs) - undo
            if not later:
                break
            if not cascade:
                shown = ", ".join(f"#{r}" for r in sorted(later))
                raise RollbackRefused(
                    f"later runs changed the same rows ({shown}): rolling back #{run_id} alone would undo part of them",
                    f"empsync rollback {run_id} --cascade rolls them back too, newest first",
                )
            for other in later:
                self._check_rollable(self._run_row(conn, other))
            undo |= later
            docs |= self._documents_of(conn, later)
        return sorted(undo, reverse=True)

    def _documents_of(self, conn: Connection, runs: Iterable[int]) -> set[str]:
        c = self.t.changes.c
        return set(conn.execute(select(c.document_id).where(c.run_id.in_(list(runs))).distinct()).scalars())

    def _later_runs(self, conn: Connection, after: int, docs: set[str]) -> set[int]:
        c = self.t.changes.c
        found: set[int] = set()
        ids = sorted(docs)
        for start in range(0, len(ids), ID_CHUNK):
            query = (
                select(c.run_id).where(c.run_id > after, c.document_id.in_(ids[start : start + ID_CHUNK])).distinct()
            )
            found.update(r for r in conn.execute(query).scalars() if r is not None)
        return found

    def _audit_of(self, conn: Connection, runs: list[int]) -> list[dict[str, Any]]:
        t = self.t.changes
        query = select(t).where(t.c.run_id.in_(runs)).order_by(t.c.id.desc())
        return [dict(r) for r in conn.execute(query).mappings()]

    def _rows_now(self, conn: Connection, docs: list[str]) -> dict[str, Row]:
        stored = self.engine.mirror.load(conn, docs)
        rows = {doc_id: Row(False) for doc_id in docs}
        for doc_id, have in stored.items():
            rows[doc_id] = Row(True, dict(have.values), have.deleted_at)
        return rows

    def _undo(self, entry: dict[str, Any], row: Row) -> None:
        """Turn ``row`` into what it was before the audited change ``entry``."""
        op, column, old = entry["operation"], entry["field"], entry["old_value"]
        if op in ("update", "repair") and column in self.types:
            row.values[column] = self._parse(column, old)
        elif op == "repair" and column == DELETED_AT_COLUMN:
            row.deleted_at = _parse_time(old)
        elif op in ("insert", "repair"):  # the row was not there before (a repair re-inserted a missing one)
            row.exists = False
        elif op == "delete":
            if not old and not row.exists:
                raise RollbackRefused(
                    f"run #{entry['run_id']} hard-deleted {entry['document_id']!r} before empsync kept a deleted "
                    "row's values in the audit: it cannot be put back",
                    "a force run brings it back if its document still exists",
                )
            row.exists, row.deleted_at = True, None
            if old:  # the values it had, kept by the delete: the row may be gone (a hard delete)
                for key, text in json.loads(old).items():
                    if key in self.types:
                        row.values[key] = self._parse(key, text)
        elif op == "restore":
            row.deleted_at = _parse_time(old) or entry["changed_at"]

    def _parse(self, column: str, text: str | None) -> Any:
        """A value from its audit text (``mapping.display``), as the column holds it."""
        if text is None:
            return None
        kind = self.types[column]
        if kind == "integer":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "boolean":
            return text == "true"
        if kind == "datetime":
            return datetime.fromisoformat(text)
        if kind == "date":
            return date.fromisoformat(text)
        return text

    # -- applying -------------------------------------------------------------------------------

    def apply(self, result, plan: Plan, *, hold: bool, lock) -> None:
        """Write ``plan`` in one transaction as the rollback run ``result`` (its counts are filled in)."""
        engine = self.engine
        state = engine.state
        result.run_id = state.start_run("rollback", result.trigger)
        engine.bus.emit(SyncStarted(utcnow(), result.run_id, "rollback", result.trigger, False))
        log.info("Rolling back run%s %s", "s" if len(plan.runs) > 1 else "", ", ".join(f"#{r}" for r in plan.runs))
        now = utcnow()
        counts = result.counts
        try:
            with engine.db.begin() as conn:
                audit = []
                for doc_id in plan.changed:
                    audit += self._write(
                        conn, doc_id, plan.now[doc_id], plan.wanted[doc_id], result.run_id, now, counts
                    )
                if audit:
                    insert_rows(conn, self.t.changes, audit)
                if hold:
                    held = [{"document_id": i, "run_id": result.run_id, "held_at": now} for i in plan.changed]
                    upsert(conn, self.t.holds, held, update=["run_id", "held_at"])
                else:
                    state.put(conn, {StateKey.PAUSED: "1"})
                state.record_progress(conn, result.run_id, counts.as_dict())
                if lock is not None and not lock.still_held():
                    raise EmpsyncError("lost the sync lock (its database connection ended): nothing was rolled back")
        except EmpsyncError as exc:
            state.finish_run(result.run_id, "failed", counts.as_dict(), 0, exc.message)
            raise
        changes = tuple(ChangeRecord(a["changed_at"], a["document_id"], a["operation"], a["field"], a["old_value"], a["new_value"]) for a in audit)  # fmt: skip
        engine.bus.emit(BatchApplied(utcnow(), result.run_id, counts.as_dict(), changes))
        done = ", ".join(f"#{r}" for r in plan.runs)
        after = f"{len(plan.changed)} documents held until `empsync release`" if hold else PAUSED_MESSAGE
        result.reason = f"rolled back {done}; {after}"
        result.duration_ms = int((utcnow() - now).total_seconds() * 1000)
        state.finish_run(result.run_id, "ok", counts.as_dict(), result.duration_ms, result.reason)
        log.warning("Rolled back %s: %d rows put back; %s", done, len(plan.changed), after)
        engine.bus.emit(SyncFinished(utcnow(), result.report()))

    def _write(self, conn: Connection, doc_id: str, now: Row, wanted: Row, run_id: int, at: datetime, counts) -> list:
        m = self.t.mirror
        key = m.c[self.config.target.id_column]
        audit = engine_audit(run_id, at, doc_id)
        if not wanted.exists:  # the run inserted it: removed by delete_mode (keep: soft-deleted, not left live)
            counts.deleted += 1
            if self.config.target.delete_mode == "hard":
                conn.execute(delete(m).where(key == doc_id))
            else:
                conn.execute(update(m).where(key == doc_id).values({DELETED_AT_COLUMN: at, SYNCED_AT_COLUMN: at}))
            return [audit(Op.DELETE, None, row_json(now.values), None)]
        values = {c: wanted.values.get(c) for c in self.types}
        if not now.exists:
            counts.inserted += 1
            row = {
                key.name: doc_id,
                **values,
                UPDATE_TIME_COLUMN: None,  # not known: the document's next version replaces it, whatever its time
                SYNCED_AT_COLUMN: at,
                DELETED_AT_COLUMN: wanted.deleted_at,
                HASH_COLUMN: content_hash(values),
            }
            insert_rows(conn, m, [row])
            return [audit(Op.INSERT, None, None, None)]
        changed = {c: v for c, v in values.items() if not _same(now.values.get(c), v)}
        setting: dict[str, Any] = {**changed, HASH_COLUMN: content_hash(values), SYNCED_AT_COLUMN: at}
        updates = [audit(Op.UPDATE, c, display(now.values.get(c)), display(v)) for c, v in changed.items()]
        entries = updates
        if now.deleted_at is not None and wanted.deleted_at is None:
            setting[DELETED_AT_COLUMN] = None
            counts.restored += 1
            entries = [audit(Op.RESTORE, None, display(now.deleted_at), None), *updates]
        elif now.deleted_at is None and wanted.deleted_at is not None:
            setting[DELETED_AT_COLUMN] = wanted.deleted_at
            counts.deleted += 1
            entries = [*updates, audit(Op.DELETE, None, row_json(values), None)]
        if changed:
            counts.updated += 1
        conn.execute(update(m).where(key == doc_id).values(setting))
        return entries


def engine_audit(run_id: int, at: datetime, doc_id: str):
    def entry(op, column, old, new) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "changed_at": at,
            "document_id": doc_id,
            "operation": str(op),
            "field": column,
            "old_value": old,
            "new_value": new,
        }

    return entry


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def release(engine, ids: list[str] | None) -> int:
    """Let held documents sync again (``None``: all of them); returns how many were held."""
    holds = engine.db.tables.holds
    with engine.db.begin() as conn:
        query = delete(holds) if ids is None else delete(holds).where(holds.c.document_id.in_(ids))
        return conn.execute(query).rowcount or 0
