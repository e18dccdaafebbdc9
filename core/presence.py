"""What the leading service shows every other process: its live view and its log lines.

Both live in the target database beside the state, so a console on another
shell or host shows what the leader does, not only what it does itself:

- the leader's live snapshot (state, current run, next runs, listener lag and
  backlog) under the state key ``leader_live``, with the time it was written.
  It is rewritten when it changes (looked at every second) and at least every
  ``HEARTBEAT_S``, so it is the leader's heartbeat too: one older than
  ``LIVE_S`` is a leader that is gone or wedged, whatever the leader key says.
- the leader's recent log lines in ``empsync_log``, secrets scrubbed, control
  characters escaped (readers escape again: anyone may write the table),
  trimmed to the newest ``LOG_KEEP``.

A ``Publisher`` thread writes both. Its logging handler only appends to a
bounded buffer, so logging never waits on the database and the sync worker is
never slowed by it; while the process does not lead, nothing is written.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select

from .db import Database, insert_rows
from .errors import EmpsyncError
from .logs import add_filters, record_text
from .state import State, StateKey
from .times import from_timestamp, iso_precise, parse_iso, utcnow

log = logging.getLogger("empsync.presence")

PUBLISH_S = 1.0  # how often the publisher looks for a changed view and new log lines
HEARTBEAT_S = 3.0  # the view is rewritten at least this often
LIVE_S = 15.0  # a heartbeat older than this (by the reader's clock) is a leader that is gone
LOG_KEEP = 5000  # lines kept in empsync_log
TRIM_EVERY_S = 60.0
LOG_BUFFER = 5000  # lines held in memory between two writes; beyond it the oldest are dropped
MAX_LINE = 8000  # characters of one line (a traceback) kept
MAX_VIEW = 30_000  # characters of a published view; past it only the essentials go
ESSENTIAL = ("state", "detail", "is_leader", "service", "current_run", "next_sync_at", "next_force_sync_at")


@dataclass(frozen=True)
class LiveLeader:
    """The leader's published view, as another process reads it."""

    service: str  # host:pid
    at: datetime  # when it was written, naive UTC by the leader's clock
    snapshot: dict[str, Any]

    def fresh(self, now: datetime | None = None) -> bool:
        return (now or utcnow()) - self.at < timedelta(seconds=LIVE_S)


def live_leader(values: Mapping[str, str | None]) -> LiveLeader | None:
    """The published view of the process the leader key names, fresh or not; None without one.

    A view written by any other process (one that lost the lock and wrote a
    last time after its successor took over) is not the leader's.
    """
    leader = values.get(StateKey.LEADER)
    try:
        raw = json.loads(values.get(StateKey.LEADER_LIVE) or "null")
    except ValueError:
        return None
    if not leader or not isinstance(raw, dict) or raw.get("service") != leader:
        return None
    at, snapshot = parse_iso(raw.get("at")), raw.get("snapshot")
    if at is None or not isinstance(snapshot, dict):
        return None
    return LiveLeader(leader, at, snapshot)


class LogBuffer(logging.Handler):
    """Records become rows-to-be, held in memory until the publisher writes them."""

    def __init__(self, service: str, level: int = logging.INFO, capacity: int = LOG_BUFFER) -> None:
        super().__init__(level)
        self.service = service
        add_filters(self, detail=False)  # as the console's and stderr's handlers: scrubbed, libraries in a line
        self.setFormatter(logging.Formatter())
        self._lines: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record_text(self.formatter, record)  # type: ignore[arg-type]  # as the console shows its own
            line = {
                "at": from_timestamp(record.created),
                "service": self.service,
                "level": record.levelname[:16],
                "logger": record.name[:100],
                "text": text[:MAX_LINE],
            }
            with self._lock:
                if len(self._lines) == self._lines.maxlen:
                    self.dropped += 1
                self._lines.append(line)
        except Exception:  # noqa: BLE001 - logging must never raise into the code that logged
            pass

    def take(self) -> list[dict[str, Any]]:
        """The lines buffered since the last call; lines dropped meanwhile are counted in one line of their own."""
        with self._lock:
            lines = list(self._lines)
            dropped, self.dropped = self.dropped, 0
            self._lines.clear()
        if dropped:
            note = f"{dropped:,} log lines were dropped before they reached the database (it was slow or away)"
            lines.append({**lines[-1], "level": "WARNING", "logger": log.name, "text": note})
        return lines


class SharedLog:
    """``empsync_log``: written by the leader's publisher, tailed by other consoles."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.t = db.tables.log

    def write(self, lines: list[dict[str, Any]]) -> None:
        if lines:
            with self.db.begin() as conn:
                insert_rows(conn, self.t, lines)

    def trim(self, keep: int = LOG_KEEP) -> None:
        with self.db.begin() as conn:
            newest = conn.execute(select(func.max(self.t.c.id))).scalar()
            if newest is not None and newest > keep:
                conn.execute(delete(self.t).where(self.t.c.id <= newest - keep))

    def after(self, after_id: int | None, not_by: str, limit: int = 500) -> list[dict[str, Any]]:
        """Lines of other processes with an id above ``after_id``, oldest first.

        With ``after_id`` None: the newest ``limit`` lines, for a console that just opened.
        """
        t = self.t
        stmt = select(t).where(t.c.service != not_by)
        if after_id is None:
            stmt = stmt.order_by(t.c.id.desc()).limit(limit)
        else:
            stmt = stmt.where(t.c.id > after_id).order_by(t.c.id).limit(limit)
        with self.db.connect() as conn:
            rows = [dict(r) for r in conn.execute(stmt).mappings().all()]
        return rows if after_id is not None else rows[::-1]


class Publisher:
    """The thread that keeps the leader's view and log lines in the database."""

    def __init__(
        self,
        db: Database,
        service: str,
        view: Callable[[], dict[str, Any]],
        leading: Callable[[], bool],
    ) -> None:
        self.state = State(db)
        self.log = SharedLog(db)
        self.service = service
        self.view = view
        self.leading = leading
        self.buffer = LogBuffer(service)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_body = ""
        self._last_write = 0.0
        self._next_trim = 0.0
        self._failing = False

    def start(self) -> Publisher:
        if self._thread is None:
            logging.getLogger().addHandler(self.buffer)
            self._thread = threading.Thread(target=self._loop, name="empsync-publisher", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop publishing the view; the lines logged so far stay buffered for ``flush``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def flush(self, write: bool) -> None:
        """Let go of logging; with ``write``, store the lines buffered since (a leader's last words)."""
        logging.getLogger().removeHandler(self.buffer)
        lines = self.buffer.take()
        if write:
            try:
                self.log.write(lines)
            except EmpsyncError:
                pass

    def _loop(self) -> None:
        while not self._stop.wait(PUBLISH_S):
            self.cycle()

    def cycle(self) -> None:
        lines = self.buffer.take()
        if not self.leading():
            return  # a standby's lines are its own business
        try:
            self.log.write(lines)
            self._publish_view()
            now = time.monotonic()
            if now >= self._next_trim:
                self._next_trim = now + TRIM_EVERY_S
                self.log.trim()
            self._failing = False
        except EmpsyncError as exc:
            if not self._failing:  # once per outage: the worker reports the outage itself
                self._failing = True
                log.debug("could not publish the leader's view: %s", exc.message)
        except Exception:  # noqa: BLE001 - publishing is a courtesy; it must never take the service down
            log.debug("publishing the leader's view failed", exc_info=True)

    def _publish_view(self) -> None:
        view = self.view()
        body = json.dumps(view, sort_keys=True, default=str)
        now = time.monotonic()
        if body == self._last_body and now - self._last_write < HEARTBEAT_S:
            return
        shown = body
        if len(body) > MAX_VIEW:  # a state value has room for a few kB; keep what a console needs most
            shown = json.dumps({k: view.get(k) for k in ESSENTIAL}, sort_keys=True, default=str)
        stamp = iso_precise(utcnow(), "milliseconds")
        live = f'{{"service": {json.dumps(self.service)}, "at": "{stamp}", "snapshot": {shown}}}'
        self.state.set({StateKey.LEADER_LIVE: live})
        self._last_body, self._last_write = body, now
