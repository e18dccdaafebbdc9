"""Status and stats as plain dicts, read from the database so any process can answer.

The CLI prints them, the HTTP API serves them, the console renders them; a
running service adds its live view (state, leader, next tick) on top.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, TypedDict, cast

from .contracts import RunRow, Stats, Status
from .engine import SyncEngine
from .errors import EmpsyncError
from .presence import live_leader
from .rollups import DAYS, HOURS, rollup
from .state import StateKey, StateValues
from .times import iso, parse_iso, utcnow

# A status call never waits long on Firestore just to refresh the count.
COUNT_TIMEOUT_S = 5


def _run_json(run: dict[str, Any] | None) -> RunRow | None:
    if run is None:
        return None
    out = dict(run)
    for k in ("started_at", "finished_at"):
        out[k] = iso(out[k])
    out.pop("host", None)
    return cast(RunRow, out)  # a row of empsync_runs (core/schema.py), its times as text


def document_count(engine: SyncEngine, values: StateValues) -> tuple[int | None, str | None]:
    """The collection size, from a count() aggregation cached for cache_timeout seconds.

    The cache lives in empsync_state, so watching status from many shells costs
    Firestore one aggregation per cache_timeout, not one per look.
    """
    cached, at = values.get(StateKey.DOC_COUNT), parse_iso(values.get(StateKey.DOC_COUNT_AT))
    fresh = at is not None and utcnow() - at < timedelta(seconds=engine.config.sync.cache_timeout)
    if cached is not None and fresh:
        return int(cached), iso(at)
    try:
        n = engine.source.count(timeout=COUNT_TIMEOUT_S)
    except EmpsyncError:
        return (int(cached) if cached is not None else None), iso(at)
    now = utcnow()
    try:
        engine.state.set({StateKey.DOC_COUNT: n, StateKey.DOC_COUNT_AT: iso(now)})
    except EmpsyncError:
        pass
    return n, iso(now)


def build_status(engine: SyncEngine, *, count_documents: bool = True) -> Status:
    config = engine.config
    engine.db.ensure_schema()
    values = engine.state.get_all()
    interval = engine.state.interval(values)
    paused = values.get(StateKey.PAUSED) == "1"
    with engine.db.connect() as conn:
        sizes = engine.state.row_counts(conn)
        last_run = engine.state.last_run(conn)
    next_at = engine.next_due(values) if config.sync.enabled and not paused else None
    if next_at is not None and next_at < utcnow():
        next_at = utcnow()
    documents, counted_at = document_count(engine, values) if count_documents else (None, None)
    s = config.source
    return {
        "enabled": config.sync.enabled,
        "mode": config.sync.mode,
        "interval": interval.seconds,
        "interval_source": interval.source,
        "force_interval": config.sync.force_interval,
        "paused": paused,
        "last_sync_at": values.get(StateKey.LAST_SYNC_AT),
        "last_force_sync_at": values.get(StateKey.LAST_FORCE_SYNC_AT),
        "next_sync_at": iso(next_at) if config.sync.enabled and not paused else None,
        "last_status": values.get(StateKey.LAST_STATUS),
        "last_error": values.get(StateKey.LAST_ERROR),
        "rows": sizes["rows"],
        "soft_deleted": sizes["soft_deleted"],
        "rejects": sizes["rejects"],
        "documents": documents,
        "documents_counted_at": counted_at,
        "leader": values.get(StateKey.LEADER),
        **_leader_heartbeat(values),
        "watermark": values.get(StateKey.WATERMARK),
        "source": {
            "project": s.project,
            "database": s.database,
            "collection": s.collection,
            "emulator_host": s.emulator_host or None,
            "updated_field": s.updated_field or None,
        },
        "target": engine.db.url_masked,
        "table": config.target.table,
        "delete_mode": config.target.delete_mode,
        "last_run": _run_json(last_run),
        "last_verify": values.get(StateKey.LAST_VERIFY),
        "mass_delete_guard": _json_value(values.get(StateKey.MASS_DELETE_GUARD)),
        "notifications": _json_value(values.get(StateKey.NOTIFY)),
    }


class LeaderHeartbeat(TypedDict):
    leader_alive: bool | None
    leader_seen_at: str | None
    leader_state: str | None


def _leader_heartbeat(values: StateValues) -> LeaderHeartbeat:
    """Whether the leader answers: when it last published its view, and what it was doing."""
    live = live_leader(values)
    if live is None:
        return {"leader_alive": None, "leader_seen_at": None, "leader_state": None}
    return {"leader_alive": live.fresh(), "leader_seen_at": iso(live.at), "leader_state": live.snapshot.get("state")}


def _json_value(text: str | None) -> Any:
    """A JSON state value, or None when absent or unreadable."""
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def build_stats(engine: SyncEngine, rollups: bool = True) -> Stats:
    """Totals and rates; with ``rollups``, hourly and daily figures too (a month of runs read)."""
    engine.db.ensure_schema()
    now = utcnow()
    with engine.db.connect() as conn:
        totals = engine.state.totals(conn)
        recent = engine.state.recent_runs(conn, limit=50)
        sizes = engine.state.row_counts(conn)
        month = engine.state.runs_between(conn, now - timedelta(days=DAYS if rollups else 1))
        lags = engine.state.lag_since(conn, now - timedelta(days=DAYS)) if rollups else []
    last_24h = [r for r in month if r["started_at"] >= now - timedelta(hours=24)]
    finished = [r for r in recent if r["duration_ms"] is not None and r["status"] == "ok"]
    reads, naive = totals["firestore_reads"], totals["naive_reads"]
    return {
        "runs": totals["runs"],
        "runs_by_status": totals["by_status"],
        "fetched": totals["fetched"],
        "inserted": totals["inserted"],
        "updated": totals["updated"],
        "restored": totals["restored"],
        "deleted": totals["deleted"],
        "unchanged": totals["unchanged"],
        "repaired": totals["repaired"],
        "rejected": totals["rejected"],
        "firestore_reads": reads,
        "naive_reads": naive,
        "reads_saved_pct": round(100 * (1 - reads / naive), 1) if naive else None,
        "rows": sizes["rows"],
        "rejects_open": sizes["rejects"],
        "last_run": _run_json(recent[0]) if recent else None,
        "last_duration_ms": finished[0]["duration_ms"] if finished else None,
        "avg_duration_ms": round(sum(r["duration_ms"] for r in finished) / len(finished)) if finished else None,
        "recent_durations_ms": [r["duration_ms"] for r in reversed(finished)],
        "last_24h": {
            "runs": len(last_24h),
            "failed": sum(r["status"] == "failed" for r in last_24h),
            "written": sum(r["inserted"] + r["updated"] + r["deleted"] for r in last_24h),
            "firestore_reads": sum(r["firestore_reads"] for r in last_24h),
        },
        "hourly": rollup(month, lags, now, hours=1, count=HOURS) if rollups else [],
        "daily": rollup(month, lags, now, hours=24, count=DAYS) if rollups else [],
    }
