"""Runs asked of the leading service by other processes, through the target database.

A process that does not lead (a standby or attached console, ``empsync sync
--force`` typed while a service runs, a standby's HTTP API) queues a row in
``empsync_requests``. The leader claims it with an UPDATE guarded by
``status = 'queued'``, so two leaders can never both take it, runs it as it
runs its own faces' requests and records the result; the asking side follows
the row. A row's life::

    queued ─▶ claimed ─▶ running ─▶ done | failed
       └─▶ expired (no leader took it in time, or the asker gave up)

Every write after the claim is guarded by ``claimed_by`` too: a leader that
lost the lock and was replaced can no longer touch a row its successor owns.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update

from .db import Database
from .errors import TargetError
from .times import utcnow

log = logging.getLogger(__name__)

QUEUED, CLAIMED, RUNNING, DONE, FAILED, EXPIRED = "queued", "claimed", "running", "done", "failed", "expired"
FINAL = (DONE, FAILED, EXPIRED)

# A request no leader took within this long is expired: it must not fire hours later,
# when some process happens to start leading.
TTL_S = 300.0
# Finished rows are kept this long, for whoever looks into what was asked of the leader.
KEEP_DAYS = 7
CLAIM_BATCH = 20


@dataclass(frozen=True)
class Request:
    id: int
    kind: str
    trigger: str
    requested_by: str
    requested_at: datetime
    status: str
    payload: dict[str, Any] = field(default_factory=dict)
    claimed_by: str | None = None
    claimed_at: datetime | None = None
    run_id: int | None = None
    exit_code: int | None = None
    result: dict[str, Any] | None = None
    finished_at: datetime | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL


def _json(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:  # a hand-edited row: treat as empty
        return None


def _request(row: Any) -> Request:
    payload = _json(row.payload)
    result = _json(row.result)
    return Request(
        id=int(row.id),
        kind=row.kind,
        trigger=row.trigger,
        requested_by=row.requested_by,
        requested_at=row.requested_at,
        status=row.status,
        payload=payload if isinstance(payload, dict) else {},
        claimed_by=row.claimed_by,
        claimed_at=row.claimed_at,
        run_id=row.run_id,
        exit_code=row.exit_code,
        result=result if isinstance(result, dict) else None,
        finished_at=row.finished_at,
    )


class Requests:
    """Reads and writes of ``empsync_requests``; each call is one short transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.t = db.tables.requests

    # -- the asking side ---------------------------------------------------------

    def queue(self, kind: str, trigger: str, requested_by: str, payload: dict[str, Any] | None = None) -> int:
        self.db.ensure_schema()
        with self.db.begin() as conn:
            result = conn.execute(
                self.t.insert().values(
                    kind=kind,
                    trigger=trigger[:32],
                    requested_by=requested_by[:255],
                    requested_at=utcnow(),
                    status=QUEUED,
                    payload=json.dumps(payload or {}),
                )
            )
            key = result.inserted_primary_key
            assert key is not None  # an insert of one row reports its key
            return int(key[0])

    def get(self, request_id: int) -> Request | None:
        return self.get_many([request_id]).get(request_id)

    def get_many(self, ids: Iterable[int]) -> dict[int, Request]:
        ids = list(ids)
        if not ids:
            return {}
        with self.db.connect() as conn:
            rows = conn.execute(select(self.t).where(self.t.c.id.in_(ids))).all()
        return {int(r.id): _request(r) for r in rows}

    def cancel(self, request_id: int) -> bool:
        """Expire a request no leader has taken yet; False when one already has."""
        with self.db.begin() as conn:
            done = conn.execute(
                update(self.t)
                .where(self.t.c.id == request_id, self.t.c.status == QUEUED)
                .values(status=EXPIRED, finished_at=utcnow())
            )
            return done.rowcount == 1

    def abandon(self, request_id: int, claimer: str) -> bool:
        """Expire a request whose claimer is gone before it ran it (no successor took it back)."""
        with self.db.begin() as conn:
            done = conn.execute(
                update(self.t)
                .where(self.t.c.id == request_id, self.t.c.status == CLAIMED, self.t.c.claimed_by == claimer)
                .values(status=EXPIRED, finished_at=utcnow())
            )
            return done.rowcount == 1

    # -- the leader's side -------------------------------------------------------

    def claim(self, claimer: str, now: datetime | None = None) -> list[Request]:
        """Take the queued requests, oldest first; each is taken by exactly one claimer.

        Requests older than ``TTL_S`` are expired instead: whoever asked has long
        stopped waiting, and a run now would surprise them. With nothing queued
        (a leader looks every second) this is one indexed read and no write.
        """
        now = now or utcnow()
        t = self.t
        with self.db.connect() as conn:
            queued = conn.execute(
                select(t.c.id, t.c.requested_at).where(t.c.status == QUEUED).order_by(t.c.id).limit(CLAIM_BATCH)
            ).all()
        if not queued:
            return []
        oldest = now - timedelta(seconds=TTL_S)
        stale = [r.id for r in queued if r.requested_at < oldest]
        if stale:
            with self.db.begin() as conn:
                conn.execute(
                    update(t).where(t.c.id.in_(stale), t.c.status == QUEUED).values(status=EXPIRED, finished_at=now)
                )
        taken = []
        for request_id in (r.id for r in queued if r.requested_at >= oldest):
            try:
                with self.db.begin() as conn:
                    won = conn.execute(
                        update(t)
                        .where(t.c.id == request_id, t.c.status == QUEUED)
                        .values(status=CLAIMED, claimed_by=claimer[:255], claimed_at=now)
                    ).rowcount
            except TargetError as exc:
                # One row's claim failed (MariaDB picks it as a deadlock victim when another leader
                # claims at once): it stays queued for the next look. Raising here would lose the
                # rows already won, claimed by this process with nobody to run them.
                log.debug("could not claim request #%d this time: %s", request_id, exc.message)
                continue
            if won == 1:
                taken.append(request_id)
        return sorted(self.get_many(taken).values(), key=lambda r: r.id)

    def started(self, ids: Iterable[int], claimer: str, run_id: int | None) -> None:
        self._update(ids, claimer, (CLAIMED,), status=RUNNING, run_id=run_id)

    def finish(self, ids: Iterable[int], claimer: str, result: dict[str, Any], exit_code: int) -> None:
        status = FAILED if result.get("status") == "failed" else DONE
        self._update(
            ids,
            claimer,
            (CLAIMED, RUNNING),
            status=status,
            run_id=result.get("run_id"),
            exit_code=exit_code,
            result=json.dumps(result, default=str),
            finished_at=utcnow(),
        )

    def release(self, ids: Iterable[int], claimer: str) -> None:
        """Hand claimed requests that never started back to the queue (this process stops leading)."""
        self._update(ids, claimer, (CLAIMED,), status=QUEUED, claimed_by=None, claimed_at=None)

    def recover(self, keep: Iterable[int], interrupted: Callable[[Request], dict[str, Any]]) -> tuple[int, int]:
        """On taking the lead: what earlier leaders left open. Returns (requeued, failed).

        Nothing runs at that moment, so a request still marked running was cut
        off: it ends failed with ``interrupted(request)`` as its result (its run
        row is marked interrupted by ``State.close_interrupted_runs``). Claimed
        ones never started and go back to the queue, except ``keep``: those this
        process claimed itself and still holds. Old finished rows are pruned.
        """
        t = self.t
        now = utcnow()
        keep = list(keep)
        with self.db.begin() as conn:
            requeue = update(t).where(t.c.status == CLAIMED)
            if keep:
                requeue = requeue.where(t.c.id.not_in(keep))
            requeued = conn.execute(requeue.values(status=QUEUED, claimed_by=None, claimed_at=None)).rowcount
            cut_off = [_request(r) for r in conn.execute(select(t).where(t.c.status == RUNNING)).all()]
            for request in cut_off:
                conn.execute(
                    update(t)
                    .where(t.c.id == request.id, t.c.status == RUNNING)
                    .values(status=FAILED, exit_code=1, result=json.dumps(interrupted(request)), finished_at=now)
                )
            conn.execute(delete(t).where(t.c.status.in_(FINAL), t.c.finished_at < now - timedelta(days=KEEP_DAYS)))
        return requeued or 0, len(cut_off)

    def _update(self, ids: Iterable[int], claimer: str, states: tuple[str, ...], **values: Any) -> None:
        ids = list(ids)
        if not ids:
            return
        t = self.t
        with self.db.begin() as conn:
            conn.execute(
                update(t).where(t.c.id.in_(ids), t.c.claimed_by == claimer, t.c.status.in_(states)).values(**values)
            )
