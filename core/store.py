"""Batched reads and writes of the mirror table, its audit rows and its rejects.

Every method takes the open transaction: the engine commits a batch's rows,
audit rows, rejects and checkpoint together or not at all.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.engine import Connection

from .config import DELETED_AT_COLUMN, HASH_COLUMN, SYNCED_AT_COLUMN, UPDATE_TIME_COLUMN
from .db import Database, insert_rows, upsert
from .diff import Decision, Op, Stored
from .mapping import Reject, display
from .times import naive_utc

# Keep IN (...) lists well inside every server's limits.
ID_CHUNK = 500
# What an audit row carries besides its values: run id, time, operation, field name, placeholders.
AUDIT_ROW_BYTES = 512
# The audit operation of a write that put a drifted row right (old: what the row held).
REPAIR = "repair"


@dataclass(frozen=True)
class Planned:
    """One document's outcome in a batch."""

    doc_id: str
    decision: Decision
    row: dict[str, Any]
    content_hash: str
    update_time: datetime | None
    # For a repaired restore: the deleted_at the row was found with.
    found_deleted_at: datetime | None = None


@dataclass(frozen=True)
class Rejected:
    doc_id: str
    reject: Reject
    update_time: datetime | None


class MirrorStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.t = db.tables
        self.id_column = db.config.target.id_column
        self.mapped = self.t.mapped_columns
        m = self.t.mirror
        key = m.c[self.id_column]
        # Only what the diff needs, as plain tuples: the id, mapped values, hash, update time, deleted or not.
        self._load = select(
            key,
            *(m.c[c] for c in self.mapped),
            m.c[HASH_COLUMN],
            m.c[UPDATE_TIME_COLUMN],
            m.c[DELETED_AT_COLUMN],
        ).where(key.in_(bindparam("ids", expanding=True)))
        # The most text an upsert of this table carries besides its values: the column
        # names in the head and in the conflict clause, the placeholders, the bookkeeping values.
        self._row_text = sum(3 * len(c.name) + 64 for c in m.columns) + 256
        r = self.t.rejects
        self._rejected = select(r.c.document_id).where(r.c.document_id.in_(bindparam("ids", expanding=True)))

    def load(self, conn: Connection, ids: Sequence[str]) -> dict[str, Stored]:
        """The stored rows for some ids, in one query per chunk."""
        found: dict[str, Stored] = {}
        n = len(self.mapped)
        for start in range(0, len(ids), ID_CHUNK):
            chunk = ids[start : start + ID_CHUNK]
            for row in conn.execute(self._load, {"ids": chunk}):
                found[row[0]] = Stored(
                    values=dict(zip(self.mapped, row[1 : n + 1], strict=True)),
                    content_hash=row[n + 1],
                    update_time=row[n + 2],
                    deleted_at=row[n + 3],
                )
        return found

    def refuse_unstorable(self, conn: Connection, plans: list[Planned]) -> tuple[list[Planned], list[Rejected]]:
        """Writes the database cannot take become rejects naming the field, so the rest of the batch lands.

        A row, or an audit row of one of its changes, that alone is larger
        than one statement may carry on this connection (MySQL's
        max_allowed_packet) would have the server drop the connection on every
        retry; a value the database cannot hold (U+0000 in PostgreSQL text)
        would fail the batch on every run. The previous good row stays.
        """
        dialect = self.db.dialect
        size = dialect.param_bytes
        room = dialect.limits(conn).bytes - self._row_text
        kept: list[Planned] = []
        refused: list[Rejected] = []
        for plan in plans:
            decision = plan.decision
            if not decision.writes:
                kept.append(plan)
                continue
            values = plan.row if decision.op is Op.INSERT else {c: plan.row[c] for c in decision.columns}
            problem = dialect.unstorable(values)
            if problem is None:
                widths = {c: size(v) for c, v in values.items()}
                needed = sum(widths.values()) + size(plan.doc_id)
                widest = max(widths, key=widths.__getitem__, default=self.id_column)
                for change in decision.field_changes:  # audit rows hold the old and the new value
                    audited = (
                        size(display(change.old)) + size(display(change.new)) + size(plan.doc_id) + AUDIT_ROW_BYTES
                    )
                    if audited > needed:
                        needed, widest = audited, change.column
                if needed > room:
                    problem = (
                        widest,
                        (
                            f"too large to write: {needed:,} bytes where one statement on this server carries "
                            f"{max(room, 0):,}{dialect.limit_hint}"
                        ),
                    )
            if problem is None:
                kept.append(plan)
                continue
            column, reason = problem
            spec = self.db.config.field_by_column(column)
            refused.append(Rejected(plan.doc_id, Reject(spec.path if spec else column, reason), plan.update_time))
        return kept, refused

    def rejected_among(self, conn: Connection, ids: Sequence[str]) -> set[str]:
        """Which of these documents have a recorded reject."""
        found: set[str] = set()
        for start in range(0, len(ids), ID_CHUNK):
            found.update(conn.execute(self._rejected, {"ids": ids[start : start + ID_CHUNK]}).scalars())
        return found

    def write(
        self, conn: Connection, plans: Iterable[Planned], run_id: int | None, now: datetime
    ) -> list[dict[str, Any]]:
        """Apply the writing plans; returns the audit rows it stored."""
        inserts: list[dict[str, Any]] = []
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        audit: list[dict[str, Any]] = []
        for plan in plans:
            op = plan.decision.op
            if not plan.decision.writes:
                continue
            bookkeeping = {
                self.id_column: plan.doc_id,
                UPDATE_TIME_COLUMN: naive_utc(plan.update_time),
                SYNCED_AT_COLUMN: now,
                HASH_COLUMN: plan.content_hash,
            }
            # A repair is audited as one: what the row held (found) and what the document says.
            repaired = plan.decision.repaired
            if op is Op.INSERT:
                inserts.append({**plan.row, **bookkeeping, DELETED_AT_COLUMN: None})
                audit.append(self._audit(run_id, now, plan.doc_id, REPAIR if repaired else op, None, None, None))
                continue
            columns = plan.decision.columns
            values = {c: plan.row[c] for c in columns}
            if op is Op.RESTORE:
                values[DELETED_AT_COLUMN] = None
                # What it was deleted at, so that a rollback can delete it again as it was.
                found = plan.found_deleted_at
                if repaired:
                    audit.append(self._audit(run_id, now, plan.doc_id, REPAIR, DELETED_AT_COLUMN, found, None))
                else:
                    audit.append(self._audit(run_id, now, plan.doc_id, op, None, found, None))
            by_columns[tuple(values)].append({**values, **bookkeeping})
            field_op = REPAIR if repaired else Op.UPDATE
            for change in plan.decision.changes:
                audit.append(self._audit(run_id, now, plan.doc_id, field_op, change.column, change.old, change.new))

        if inserts:
            upsert(conn, self.t.mirror, inserts, update=[c for c in inserts[0] if c != self.id_column])
        # Rows that changed the same columns share one multi-row statement that sets only those.
        for columns, rows in by_columns.items():
            upsert(conn, self.t.mirror, rows, update=[*columns, UPDATE_TIME_COLUMN, SYNCED_AT_COLUMN, HASH_COLUMN])
        if audit:
            insert_rows(conn, self.t.changes, audit)
        return audit

    @staticmethod
    def _audit(
        run_id: int | None, now: datetime, doc_id: str, op: Op | str, field: str | None, old: object, new: object
    ) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "changed_at": now,
            "document_id": doc_id,
            "operation": str(op),
            "field": field,
            "old_value": display(old),
            "new_value": display(new),
        }

    def record_rejects(self, conn: Connection, rejected: Sequence[Rejected], run_id: int | None, now: datetime) -> None:
        rows = [
            {
                "document_id": r.doc_id,
                "run_id": run_id,
                "rejected_at": now,
                "field": r.reject.field[:1500],
                "reason": str(r.reject),
                "firestore_update_time": naive_utc(r.update_time),
            }
            for r in rejected
        ]
        upsert(conn, self.t.rejects, rows, update=["run_id", "rejected_at", "field", "reason", "firestore_update_time"])

    def clear_rejects(self, conn: Connection, ids: Sequence[str]) -> None:
        key = self.t.rejects.c.document_id
        for start in range(0, len(ids), ID_CHUNK):
            conn.execute(delete(self.t.rejects).where(key.in_(ids[start : start + ID_CHUNK])))

    def live_ids(self, conn: Connection) -> Iterator[str]:
        """Ids of rows not soft-deleted, streamed so a large table costs no memory here."""
        m = self.t.mirror
        stmt = select(m.c[self.id_column]).where(m.c[DELETED_AT_COLUMN].is_(None))
        yield from conn.execution_options(yield_per=5000).execute(stmt).scalars()

    def row_ids(self, conn: Connection) -> Iterator[tuple[str, bool]]:
        """Every row's id and whether it is soft-deleted, streamed like ``live_ids``."""
        m = self.t.mirror
        stmt = select(m.c[self.id_column], m.c[DELETED_AT_COLUMN].is_not(None))
        for doc_id, deleted in conn.execution_options(yield_per=5000).execute(stmt):
            yield doc_id, bool(deleted)

    def remove(
        self, conn: Connection, ids: Sequence[str], mode: str, run_id: int | None, now: datetime
    ) -> list[dict[str, Any]]:
        """Rows whose documents are gone: soft-delete or delete them, with audit rows.

        Each audit row keeps the row's mapped values as JSON (its ``old_value``),
        so a rollback can put back even a row that a hard delete removed.
        """
        m = self.t.mirror
        key = m.c[self.id_column]
        audit = []
        for start in range(0, len(ids), ID_CHUNK):
            chunk = ids[start : start + ID_CHUNK]
            held = self.load(conn, chunk)
            if mode == "hard":
                conn.execute(delete(m).where(key.in_(chunk)))
            else:
                conn.execute(update(m).where(key.in_(chunk)).values({DELETED_AT_COLUMN: now, SYNCED_AT_COLUMN: now}))
            for doc_id in chunk:
                values = row_json(held[doc_id].values) if doc_id in held else None
                audit.append({**self._audit(run_id, now, doc_id, Op.DELETE, None, None, None), "old_value": values})
        if audit:
            insert_rows(conn, self.t.changes, audit)
        return audit

    def held_among(self, conn: Connection, ids: Sequence[str]) -> set[str]:
        """Which of these documents a rollback holds out of every sync."""
        found: set[str] = set()
        h = self.t.holds.c.document_id
        for start in range(0, len(ids), ID_CHUNK):
            found.update(conn.execute(select(h).where(h.in_(ids[start : start + ID_CHUNK]))).scalars())
        return found


def row_json(values: Mapping[str, Any]) -> str:
    """A row's mapped values as audit text: JSON of each value's display form."""
    return json.dumps({k: display(v) for k, v in values.items()}, sort_keys=True, ensure_ascii=False)
