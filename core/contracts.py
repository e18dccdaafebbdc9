"""The shapes of the status, the stats and the service's live view, as the faces read them.

These are the JSON contracts of ``empsync status --json``, ``empsync stats
--json`` and the HTTP API (their keys are fixed: users' scripts read them),
and what the console, the text renderer, metrics, notifications and the
event stream read. They are ``TypedDict``s, so the values stay plain JSON
and a misspelt key is a type error. Times are ISO text in UTC (core/times.py).
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class SourceInfo(TypedDict):
    project: str
    database: str
    collection: str
    emulator_host: str | None
    updated_field: str | None


class RunRow(TypedDict):
    """One ``empsync_runs`` row as JSON (``empsync runs --json``; ``last_run`` of status and stats)."""

    id: int
    started_at: str | None
    finished_at: str | None
    kind: str
    trigger: str
    status: str  # running | ok | failed | interrupted
    fetched: int
    inserted: int
    updated: int
    restored: int
    deleted: int
    unchanged: int
    stale: int
    repaired: int
    rejected: int
    firestore_reads: int
    naive_reads: int
    duration_ms: int | None
    message: str | None
    pid: int | None
    target_table: str | None


class Status(TypedDict):
    """``empsync status --json``: the database's view, which any process can read."""

    enabled: bool
    mode: str
    interval: int
    interval_source: str
    force_interval: int
    paused: bool
    last_sync_at: str | None
    last_force_sync_at: str | None
    next_sync_at: str | None
    last_status: str | None
    last_error: str | None
    rows: int
    soft_deleted: int
    rejects: int
    documents: int | None
    documents_counted_at: str | None
    leader: str | None
    leader_alive: bool | None
    leader_seen_at: str | None
    leader_state: str | None
    watermark: str | None
    source: SourceInfo
    target: str
    table: str
    delete_mode: str
    last_run: RunRow | None
    last_verify: str | None  # JSON text, as verify stored it
    mass_delete_guard: Any  # JSON, as the engine stored it; None while the guard is not tripped
    notifications: Any  # JSON, as core/notify.py stored it


class Last24h(TypedDict):
    runs: int
    failed: int
    written: int
    firestore_reads: int


class Rollup(TypedDict):
    """One hourly or daily bucket of the stats (core/rollups.py)."""

    start: str
    runs: int
    failed: int
    changed: int
    reads: int
    duration_p50_ms: float | None
    duration_p95_ms: float | None
    lag_samples: int
    lag_p50_ms: float | None
    lag_p95_ms: float | None


class Stats(TypedDict):
    """``empsync stats --json`` and ``GET /stats``."""

    runs: int
    runs_by_status: dict[str, int]
    fetched: int
    inserted: int
    updated: int
    restored: int
    deleted: int
    unchanged: int
    repaired: int
    rejected: int
    firestore_reads: int
    naive_reads: int
    reads_saved_pct: float | None
    rows: int
    rejects_open: int
    last_run: RunRow | None
    last_duration_ms: int | None
    avg_duration_ms: int | None
    recent_durations_ms: list[int]
    last_24h: Last24h
    hourly: list[Rollup]
    daily: list[Rollup]


class ListenStatus(TypedDict):
    """Listen mode's part of a service's status (core/live.py)."""

    listen_state: str
    listen_detail: str
    lag_ms: int | None
    listen_backlog: int
    listen_reconnects: int
    listen_last_applied_at: str | None
    listen_cost: str


class CurrentRun(TypedDict):
    run_id: int | None
    kind: str
    trigger: str
    started_at: str | None
    counts: dict[str, int]


class TicketJson(TypedDict):
    """A queued run, as the API answers a trigger and the status lists it under ``pending``."""

    request_id: int
    kind: str
    trigger: str
    queued_at: str | None
    allow_mass_delete: bool
    forwarded: bool
    ids: NotRequired[int]  # a run of kind ids: how many documents
    run: NotRequired[int]  # a rollback: the run it puts back, and how
    hold: NotRequired[bool]
    cascade: NotRequired[bool]
    # Sent to the leader through the database: its request row, where it stands, who took it.
    request: NotRequired[int]
    status: NotRequired[str]
    leader: NotRequired[str | None]


class LiveView(TypedDict):
    """What a running service adds to the status: its own state, its runs, its schedule."""

    state: str  # starting | idle | syncing | paused | disabled | standby | attached | error | listening | ...
    detail: str
    is_leader: bool
    service: str  # host:pid
    attached: bool
    current_run: CurrentRun | None
    last_result: dict[str, Any] | None  # the last run's result JSON (RunResult.to_json) and its request_id
    failures: int
    retry_at: str | None
    pending: list[TicketJson]
    interval: int
    interval_source: str
    paused: bool
    leader: str | None
    next_sync_at: str | None
    next_force_sync_at: str | None


class LeaderView(TypedDict):
    """While another process leads: what it last published (core/presence.py)."""

    service: str
    at: str | None
    fresh: bool
    snapshot: dict[str, Any]  # its live view, read from the database: untrusted, read with .get()


class Snapshot(Status, ListenStatus, LiveView, total=False):
    """``snapshot()`` and ``GET /status``: the status, overlaid with the live view.

    The live view's keys and ``leader_view`` are always there. The status's
    keys are there once the service has read the database (not while it has
    never reached it), and the listen keys in listen mode only: read those
    with ``.get()``.
    """

    leader_view: LeaderView | None
