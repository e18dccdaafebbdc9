"""``empsync sync --force`` (or ``--wait``, ``--no-wait``) while a service leads: ask it for the run.

The sync lock is held by someone. The command queues a request
(core/requests.py) and follows its row: a live leader (its heartbeat is fresh,
core/presence.py) takes it within a second or two, runs it with trigger
``cli`` and records the result, which the command prints exactly as its own
run would have been printed, with the same exit code. When no live leader
takes it within ``CLAIM_WAIT_S`` (the lock is held by a one-shot run, or by a
service that is wedged or too old to take requests), the request is withdrawn
and the command exits 3 saying so; when nothing says a service holds the lock
at all (a one-shot run does), it is not even asked. While a live leader is seen, the wait goes
on: it may be finishing a long run before it looks.

Ctrl-C withdraws a request no leader has taken yet; one already taken stays
with its leader, which runs it and records the result (``empsync status``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import requests as req
from .engine import RunResult, SyncEngine
from .errors import EmpsyncError, LockHeld
from .presence import LIVE_S, live_leader
from .requests import Request, Requests
from .state import StateKey, whoami

CLAIM_WAIT_S = 5.0
POLL_S = 0.25


class NoLiveLeader(LockHeld):
    """The lock is held, but no live leader took the request: exit 3, as a locked run."""


class LeaderGone(EmpsyncError):
    """The leader that took the request stopped answering before it recorded a result."""


class StoppedWaiting(EmpsyncError):
    """Ctrl-C while waiting."""

    exit_code = 130


@dataclass(frozen=True)
class Answer:
    request_id: int
    kind: str
    leader: str | None
    result: RunResult | None  # None: only queued (``--no-wait``)
    raw: dict[str, Any] | None = None  # the result as the leader recorded it, for ``--json``

    def queued_json(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "status": req.QUEUED, "kind": self.kind, "leader": self.leader}


def a_service_may_answer(engine: SyncEngine) -> bool:
    """Whether the lock's holder may be a service that takes requests.

    A service names itself in the leader key as soon as it leads, and its
    heartbeat follows within a second; a one-shot ``empsync sync`` does
    neither, so asking it would only cost ``CLAIM_WAIT_S`` of waiting.
    """
    values = engine.state.get_all()
    return bool(values.get(StateKey.LEADER)) or live_leader(values) is not None


def ask_leader(
    engine: SyncEngine,
    kind: str,
    payload: dict[str, Any] | None = None,
    *,
    wait: bool = True,
    progress: Callable[[str], None] = lambda line: None,
    stop: threading.Event | None = None,
) -> Answer:
    """Queue a ``kind`` run for the leader and follow it.

    Raises ``NoLiveLeader`` or ``LeaderGone``, and ``StoppedWaiting`` once
    ``stop`` is set (a signal) or on Ctrl-C.
    """
    requests = Requests(engine.db)
    row = requests.queue(kind, "cli", whoami(), payload)
    stop = stop or threading.Event()
    try:
        request = _follow(engine, requests, row, wait, progress, stop)
    except (KeyboardInterrupt, StoppedWaiting):
        current = requests.get(row)
        if current is not None and current.status == req.QUEUED and requests.cancel(row):
            raise StoppedWaiting(f"withdrew request #{row}: no leader had taken it") from None
        leader = current.claimed_by if current is not None else None
        raise StoppedWaiting(
            f"stopped waiting; request #{row} stays with the leader {leader}, which runs it",
            "`empsync status` shows how its run ended",
        ) from None
    if not request.is_final:  # --no-wait, and a live leader will take it
        live = live_leader(engine.state.get_all())
        return Answer(row, kind, live.service if live else None, None)
    if request.status == req.EXPIRED or request.result is None:
        raise NoLiveLeader(f"request #{row} was withdrawn before a leader ran it", "run the command again")
    result = RunResult.from_json(request.result, trigger=request.trigger, exit_code=request.exit_code or 0)
    return Answer(row, kind, request.claimed_by, result, request.result)


def _follow(
    engine: SyncEngine,
    requests: Requests,
    row: int,
    wait: bool,
    progress: Callable[[str], None],
    stop: threading.Event,
) -> Request:
    """Poll the row until it ends (or, without ``wait``, until a live leader is seen)."""
    start = time.monotonic()
    claim_deadline = start + CLAIM_WAIT_S
    claimer_seen = start
    said: set[str] = set()
    while True:
        request = requests.get(row)
        if request is None:
            raise NoLiveLeader(f"request #{row} vanished from empsync_requests", "run the command again")
        if request.is_final:
            return request
        live = live_leader(engine.state.get_all())
        now = time.monotonic()
        alive = live is not None and live.fresh()
        if request.status == req.QUEUED:
            if alive:
                if not wait:
                    return request
                claim_deadline = max(claim_deadline, now + CLAIM_WAIT_S)
                if now - start > 2 and "busy" not in said:
                    said.add("busy")
                    progress(f"request #{row}: the leader {live.service} is busy ({_doing(live.snapshot)}); waiting")
            elif now >= claim_deadline:
                if requests.cancel(row):
                    raise NoLiveLeader(*_no_leader(engine, row))
                continue  # taken at the last moment
        else:
            claim_deadline = now + CLAIM_WAIT_S  # should it come back to the queue (its leader stopping)
            if alive and live.service == request.claimed_by:
                claimer_seen = now
                if request.status not in said:
                    said.add(request.status)
                    verb = f"runs it as run #{request.run_id}" if request.status == req.RUNNING else "took it"
                    progress(f"request #{row}: the leader {request.claimed_by} {verb}")
            elif now - claimer_seen > LIVE_S:
                if request.status == req.CLAIMED and requests.abandon(row, request.claimed_by or ""):
                    raise NoLiveLeader(
                        f"the leader {request.claimed_by} stopped before it ran request #{row}, and no other took it",
                        "run the command again once a service leads, or without one it runs here",
                    )
                if request.status == req.RUNNING:
                    raise LeaderGone(
                        f"the leader {request.claimed_by} stopped answering during run #{request.run_id} "
                        f"(request #{row})",
                        "the next leader marks the run interrupted; run the command again",
                    )
        if stop.wait(POLL_S):
            raise StoppedWaiting("stopped waiting")


def _doing(snapshot: dict[str, Any]) -> str:
    run = snapshot.get("current_run") or {}
    if run:
        return f"{run.get('kind', '')} run #{run.get('run_id')} since {run.get('started_at')}"
    return str(snapshot.get("state") or "busy")


def _no_leader(engine: SyncEngine, row: int) -> tuple[str, str]:
    values = engine.state.get_all()
    live = live_leader(values)
    holder = values.get(StateKey.LEADER)
    if live is not None:
        why = f"the leader {live.service} last answered at {live.at.isoformat(timespec='seconds')}Z"
    elif holder:
        why = f"{holder} holds the sync lock but takes no requests (an empsync older than this one?)"
    else:
        why = "the process that holds the sync lock takes no requests"
    return (
        f"no live leader took request #{row} within {CLAIM_WAIT_S:.0f} s: {why}; withdrew it",
        "run it again when the lock is free, or see `empsync status`",
    )
