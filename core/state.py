"""empsync's own state in the target database: runs, key/value state, and the read side.

Everything here lives beside the mirror table so that any process (a cron
job, ``empsync status`` on another shell, a standby service) sees the same
truth without talking to the process that is syncing.
"""

from __future__ import annotations

import builtins
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, Select, and_, case, delete, func, or_, select, update
from sqlalchemy.engine import Connection

from .config import DELETED_AT_COLUMN, check_interval
from .db import Database, upsert
from .errors import ConfigError
from .rollups import percentile
from .times import utcnow


class StateKey(StrEnum):
    """The keys of ``empsync_state``: every row empsync keeps there, and nothing else."""

    INTERVAL = "interval"
    PAUSED = "paused"
    WATERMARK = "watermark"
    LAST_SYNC_AT = "last_sync_at"
    LAST_FORCE_SYNC_AT = "last_force_sync_at"
    LAST_STATUS = "last_status"
    LAST_ERROR = "last_error"
    LEADER = "leader"
    # The leader's live view and heartbeat (JSON, see core/presence.py), rewritten every few seconds.
    LEADER_LIVE = "leader_live"
    DOC_COUNT = "doc_count"
    DOC_COUNT_AT = "doc_count_at"
    LAST_VERIFY = "last_verify"
    # When the last complete read of the collection began, and for which scope (see watermark.scope_of).
    FULL_READ = "full_read"
    # The largest commit lag measured, in ms: server timestamps that precede their commit.
    COMMIT_LAG_MS = "commit_lag_ms"
    # Set while the mass-delete guard holds back a run's deletions (JSON), cleared when a full read passes it.
    MASS_DELETE_GUARD = "mass_delete_guard"
    # What became of the last notifications (JSON, core/notify.py).
    NOTIFY = "notify"


# What a state row holds: text, or a number stored as its text; None stores NULL.
StateValue = str | int | None
# All the rows at once, as get_all() reads them (looked up by StateKey, a str).
StateValues = Mapping[str, str | None]

RUN_COUNTERS = (
    "fetched",
    "inserted",
    "updated",
    "restored",
    "deleted",
    "unchanged",
    "stale",
    "repaired",
    "rejected",
    "firestore_reads",
    "naive_reads",
)


def whoami() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class IntervalSetting:
    seconds: int
    source: str  # "database" | "file" | "environment" | "default" | "command line"


class State:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.t = db.tables

    # -- key/value -------------------------------------------------------------

    def get_all(self, conn: Connection | None = None) -> dict[str, str | None]:
        stmt = select(self.t.state.c.key, self.t.state.c.value)
        if conn is not None:
            return {key: value for key, value in conn.execute(stmt).all()}
        with self.db.connect() as c:
            return {key: value for key, value in c.execute(stmt).all()}

    def get(self, key: StateKey) -> str | None:
        return self.get_all().get(key)

    def put(self, conn: Connection, values: Mapping[StateKey, StateValue]) -> None:
        now = utcnow()
        rows = [{"key": str(k), "value": None if v is None else str(v), "updated_at": now} for k, v in values.items()]
        upsert(conn, self.t.state, rows, update=["value", "updated_at"])

    def set(self, values: Mapping[StateKey, StateValue]) -> None:
        with self.db.begin() as conn:
            self.put(conn, values)

    def forget(self, *keys: StateKey) -> None:
        with self.db.begin() as conn:
            self.forget_in(conn, *keys)

    def forget_in(self, conn: Connection, *keys: StateKey) -> None:
        conn.execute(delete(self.t.state).where(self.t.state.c.key.in_([str(k) for k in keys])))

    # -- interval --------------------------------------------------------------

    def interval(self, values: StateValues | None = None) -> IntervalSetting:
        values = self.get_all() if values is None else values
        stored = values.get(StateKey.INTERVAL)
        if stored:
            try:
                return IntervalSetting(check_interval(int(stored)), "database")
            except (ValueError, ConfigError):  # a hand-edited value: fall back to the file
                pass
        return IntervalSetting(self.db.config.sync.interval, self.db.config.interval_source)

    def set_interval(self, seconds: int) -> int:
        check_interval(seconds)
        self.set({StateKey.INTERVAL: seconds})
        return seconds

    # -- runs ------------------------------------------------------------------

    def start_run(self, kind: str, trigger: str) -> int:
        with self.db.begin() as conn:
            result = conn.execute(
                self.t.runs.insert().values(
                    started_at=utcnow(),
                    kind=kind,
                    trigger=trigger,
                    status="running",
                    host=socket.gethostname()[:255],
                    pid=os.getpid(),
                    target_table=self.db.config.target.table,
                    **{c: 0 for c in RUN_COUNTERS},
                )
            )
            key = result.inserted_primary_key
            assert key is not None  # an insert of one row reports its key
            return int(key[0])

    def record_progress(self, conn: Connection, run_id: int, counts: Mapping[str, int]) -> None:
        values = {k: v for k, v in counts.items() if k in RUN_COUNTERS}
        conn.execute(update(self.t.runs).where(self.t.runs.c.id == run_id).values(**values))

    def finish_run(
        self, run_id: int, status: str, counts: Mapping[str, int], duration_ms: int, message: str = ""
    ) -> None:
        values = {k: v for k, v in counts.items() if k in RUN_COUNTERS}
        with self.db.begin() as conn:
            conn.execute(
                update(self.t.runs)
                .where(self.t.runs.c.id == run_id)
                .values(status=status, finished_at=utcnow(), duration_ms=duration_ms, message=message[:2000], **values)
            )

    def close_interrupted_runs(self) -> int:
        """Runs left 'running' by a process that died; call only while holding the lock."""
        with self.db.begin() as conn:
            result = conn.execute(
                update(self.t.runs)
                .where(self.t.runs.c.status == "running")
                .values(status="interrupted", finished_at=utcnow(), message="the process stopped before the run ended")
            )
            return result.rowcount or 0

    def close_runs_of_this_process(self) -> int:
        """This process's runs still 'running' (it is stopping at once): marked interrupted now."""
        with self.db.begin() as conn:
            result = conn.execute(
                update(self.t.runs)
                .where(
                    self.t.runs.c.status == "running",
                    self.t.runs.c.pid == os.getpid(),
                    self.t.runs.c.host == socket.gethostname()[:255],
                )
                .values(status="interrupted", finished_at=utcnow(), message="interrupted before the batch ended")
            )
            return result.rowcount or 0

    def prune_changes(self, days: int) -> None:
        """Field history and lag figures older than ``days`` go (0 keeps everything)."""
        if days > 0:
            cutoff = utcnow() - timedelta(days=days)
            with self.db.begin() as conn:
                conn.execute(delete(self.t.changes).where(self.t.changes.c.changed_at < cutoff))
                conn.execute(delete(self.t.lag).where(self.t.lag.c.hour < cutoff))

    def record_lag(self, hour: datetime, run_id: int, samples: list[int]) -> None:
        """One listen session's write-to-row lag in one hour (its samples so far: the row is replaced)."""
        row = {
            "hour": hour,
            "run_id": run_id,
            "samples": len(samples),
            "p50_ms": int(percentile(samples, 0.5) or 0),
            "p95_ms": int(percentile(samples, 0.95) or 0),
            "max_ms": max(samples),
        }
        with self.db.begin() as conn:
            upsert(conn, self.t.lag, [row], update=["samples", "p50_ms", "p95_ms", "max_ms"])

    def lag_since(self, conn: Connection, since: datetime) -> list[dict[str, Any]]:
        lag = self.t.lag
        return [dict(r) for r in conn.execute(select(lag).where(lag.c.hour >= since)).mappings()]

    # -- read side (status, stats, changes, rejects) ---------------------------

    def row_counts(self, conn: Connection) -> dict[str, int]:
        m = self.t.mirror
        deleted = m.c[DELETED_AT_COLUMN]
        # count(column) skips NULLs: it counts the soft-deleted rows.
        total, soft_deleted = conn.execute(select(func.count(), func.count(deleted)).select_from(m)).one()
        rejects = conn.execute(select(func.count()).select_from(self.t.rejects)).scalar_one()
        # A document that turned invalid has a live row and a reject: count it once.
        r, key = self.t.rejects, m.c[self.db.config.target.id_column]
        live_row = select(key).where(key == r.c.document_id, deleted.is_(None)).exists()
        unmirrored = conn.execute(select(func.count()).select_from(r).where(~live_row)).scalar_one()
        return {
            "rows": int(total) - int(soft_deleted),
            "soft_deleted": int(soft_deleted),
            "rejects": int(rejects),
            "unmirrored_rejects": int(unmirrored),
        }

    def last_run(self, conn: Connection, **where: Any) -> dict[str, Any] | None:
        runs = self.t.runs
        stmt = select(runs).order_by(runs.c.id.desc()).limit(1)
        for key, value in where.items():
            stmt = stmt.where(runs.c[key] == value)
        row = conn.execute(stmt).mappings().first()
        return dict(row) if row else None

    def recent_runs(self, conn: Connection, limit: int = 50) -> list[dict[str, Any]]:
        runs = self.t.runs
        rows = conn.execute(select(runs).order_by(runs.c.id.desc()).limit(limit)).mappings().all()
        return [dict(r) for r in rows]

    def totals(self, conn: Connection) -> dict[str, Any]:
        runs = self.t.runs
        sums = [func.coalesce(func.sum(runs.c[c]), 0).label(c) for c in RUN_COUNTERS]
        # The counters of a run still going (a listen session) are committed work: they count.
        finished = func.coalesce(func.sum(case((runs.c.status != "running", 1), else_=0)), 0).label("runs")
        row = conn.execute(select(finished, *sums)).mappings().one()
        by_status = {k: int(v) for k, v in conn.execute(select(runs.c.status, func.count()).group_by(runs.c.status))}
        return {**{k: int(v) for k, v in row.items()}, "by_status": by_status}

    def _changes_query(self) -> tuple[Select[Any], Column[Any] | None]:
        """Audit rows, with the employee's name when a name column is mapped."""
        ch, m = self.t.changes, self.t.mirror
        name_column = self.db.config.name_column
        columns = [
            ch.c.id,
            ch.c.run_id,
            ch.c.changed_at,
            ch.c.document_id,
            ch.c.operation,
            ch.c.field,
            ch.c.old_value,
            ch.c.new_value,
        ]
        if not name_column:
            return select(*columns), None
        stmt = select(*columns, m.c[name_column].label("name")).outerjoin(
            m, m.c[self.db.config.target.id_column] == ch.c.document_id
        )
        return stmt, m.c[name_column]

    def recent_changes(self, limit: int = 50, needle: str = "") -> list[dict[str, Any]]:
        ch = self.t.changes
        stmt, name = self._changes_query()
        if needle:
            # In any case (ASCII case, where the database folds no more), as the console's own filter matches;
            # % and _ are the operator's, not wildcards.
            clauses = [self.db.dialect.id_text(ch.c.document_id).icontains(needle, autoescape=True)]
            if name is not None:
                clauses.append(name.icontains(needle, autoescape=True))
            stmt = stmt.where(or_(*clauses))
        stmt = stmt.order_by(ch.c.id.desc()).limit(limit)
        with self.db.connect() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings().all()]

    def changes_after(self, after_id: int, limit: int = 500, not_by: str | None = None) -> list[dict[str, Any]]:
        """Audit rows with an id above ``after_id``, oldest first.

        ``not_by`` ("host:pid") leaves out the changes of that process's own runs:
        a console shows those from its own events already.
        """
        ch, runs = self.t.changes, self.t.runs
        stmt, _ = self._changes_query()
        stmt = stmt.where(ch.c.id > after_id)
        if not_by:
            host, _, pid = not_by.rpartition(":")
            stmt = stmt.outerjoin(runs, runs.c.id == ch.c.run_id).where(
                or_(runs.c.id.is_(None), runs.c.host != host, runs.c.pid != int(pid))
            )
        stmt = stmt.order_by(ch.c.id).limit(limit)
        with self.db.connect() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings().all()]

    def changes_of_run(self, run_id: int, limit: int = 1000) -> list[dict[str, Any]]:
        """A run's field-level changes, in the order it made them."""
        ch = self.t.changes
        stmt = select(ch).where(ch.c.run_id == run_id).order_by(ch.c.id).limit(limit)
        with self.db.connect() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings().all()]

    def rejects(self, limit: int = 1000) -> list[dict[str, Any]]:
        r = self.t.rejects
        with self.db.connect() as conn:
            rows = conn.execute(select(r).order_by(r.c.rejected_at.desc()).limit(limit)).mappings().all()
            return [dict(row) for row in rows]

    def reject_ids(self, conn: Connection) -> builtins.set[str]:  # State.set is a method
        return set(conn.execute(select(self.t.rejects.c.document_id)).scalars())

    def runs_between(self, conn: Connection, since: datetime) -> Iterable[dict[str, Any]]:
        runs = self.t.runs
        stmt = select(runs).where(and_(runs.c.started_at >= since, runs.c.status != "running")).order_by(runs.c.id)
        return [dict(r) for r in conn.execute(stmt).mappings().all()]
