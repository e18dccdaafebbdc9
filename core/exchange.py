"""The service's two ends of the requests between processes (the table is core/requests.py).

``Outbox``: the runs a process that does not lead asks of the leader, each
followed until it ends, every step told as a ``RequestUpdate`` event.
``Inbox``: what the leader took from other processes, and which of its runs
answers which request. Both run on the service's worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import requests as req
from .engine import RunResult
from .errors import EmpsyncError
from .events import EventBus, RequestUpdate
from .requests import Request, Requests
from .times import utcnow

log = logging.getLogger("empsync.service")

# The service's own list of what waits: (ticket number, request row, status, leader).
Note = Callable[[int, int, str, str | None], None]


@dataclass
class _Asked:
    ticket: int
    kind: str
    trigger: str
    status: str = req.QUEUED


class Outbox:
    def __init__(self, requests: Requests, identity: str, bus: EventBus, note: Note) -> None:
        self.requests, self.identity, self.bus, self.note = requests, identity, bus, note
        self._asked: dict[int, _Asked] = {}  # by request row

    def __bool__(self) -> bool:
        return bool(self._asked)

    def send(self, ticket: int, kind: str, trigger: str, payload: dict[str, Any], leader: str | None) -> bool:
        """Queue the run for the leader; False (and a failed ``RequestUpdate``) when it cannot be."""
        try:
            row = self.requests.queue(kind, trigger, self.identity, payload)
        except EmpsyncError as exc:
            log.error("Could not send the %s run request to the leader: %s", kind, exc.message)
            reason = f"could not queue it: {exc.message}"
            self.bus.emit(RequestUpdate(utcnow(), None, ticket, kind, trigger, req.FAILED, reason=reason))
            return False
        self._asked[row] = _Asked(ticket, kind, trigger)
        self.note(ticket, row, req.QUEUED, None)
        log.info("Asked the leader %s for a %s run (request #%d)", leader or "(none yet)", kind, row)
        self.bus.emit(RequestUpdate(utcnow(), row, ticket, kind, trigger, req.QUEUED))
        return True

    def follow(self) -> None:
        """Look at each request sent; tell what moved on. One expired unclaimed is withdrawn here too."""
        try:
            rows = self.requests.get_many(self._asked)
        except EmpsyncError:
            return  # the database is away: the next look sees where they are
        now = utcnow()
        for row_id, asked in list(self._asked.items()):
            row = rows.get(row_id)
            if row is None:  # deleted by hand
                row = Request(row_id, asked.kind, asked.trigger, self.identity, now, req.EXPIRED)
            elif row.status == req.QUEUED and (now - row.requested_at).total_seconds() > req.TTL_S:
                try:
                    if self.requests.cancel(row_id):
                        row = Request(row_id, row.kind, row.trigger, row.requested_by, row.requested_at, req.EXPIRED)
                except EmpsyncError:
                    pass
            if row.status != asked.status:
                asked.status = row.status
                self.note(asked.ticket, row.id, row.status, row.claimed_by)
                if row.claimed_by != self.identity:  # else this process took it itself: its run events tell
                    self._report(asked.ticket, row)
            if row.is_final:
                del self._asked[row_id]

    def _report(self, ticket: int, row: Request) -> None:
        what = f"request #{row.id} ({row.kind} run)"
        reason = ""
        if row.status == req.CLAIMED:
            log.info("The leader %s took %s", row.claimed_by, what)
        elif row.status == req.RUNNING:
            log.info("The leader %s runs %s as run #%s", row.claimed_by, what, row.run_id)
        elif row.status in (req.DONE, req.FAILED):
            reason = (row.result or {}).get("reason") or ""
            status = (row.result or {}).get("status") or row.status
            level = logging.INFO if row.status == req.DONE else logging.WARNING
            log.log(
                level, "The leader %s ended %s: %s%s", row.claimed_by, what, status, f" ({reason})" if reason else ""
            )
        elif row.status == req.EXPIRED:
            reason = f"no leader took it within {req.TTL_S:.0f} s"
            log.warning("%s expired: %s", what.capitalize(), reason)
        report = None
        if row.result is not None:
            report = RunResult.from_json(row.result, trigger=row.trigger, exit_code=row.exit_code or 0).report()
        self.bus.emit(
            RequestUpdate(
                utcnow(), row.id, ticket, row.kind, row.trigger, row.status, row.claimed_by, row.run_id, report, reason
            )
        )


class Inbox:
    """Requests this leader took: kept by kind where runs coalesce (normal, force), else by ticket."""

    def __init__(self, requests: Requests, identity: str) -> None:
        self.requests, self.identity = requests, identity
        self._by_kind: dict[str, list[int]] = {}
        self._by_ticket: dict[int, int] = {}
        self._serving: list[int] = []  # the requests the run under way answers

    def take(self) -> list[Request]:
        try:
            return self.requests.claim(self.identity)
        except EmpsyncError as exc:
            log.debug("could not look for requests: %s", exc.message)
            return []

    def hold(self, request: Request, ticket: int, coalesces: bool) -> None:
        if coalesces:
            self._by_kind.setdefault(request.kind, []).append(request.id)
        else:
            self._by_ticket[ticket] = request.id
        log.info(
            "Took request #%d from %s (%s): a %s run", request.id, request.requested_by, request.trigger, request.kind
        )

    def held(self) -> list[int]:
        return [i for ids in self._by_kind.values() for i in ids] + list(self._by_ticket.values())

    def holds_ticket(self, ticket: int) -> bool:
        return ticket in self._by_ticket

    def begin(self, kinds: tuple[str, ...] = (), ticket: int | None = None) -> None:
        """The run about to start answers the requests held for ``kinds`` (coalesced) or for ``ticket``."""
        self._serving = [i for kind in kinds for i in self._by_kind.pop(kind, [])]
        if ticket is not None and ticket in self._by_ticket:
            self._serving.append(self._by_ticket.pop(ticket))

    def started(self, run_id: int | None) -> None:
        if self._serving:
            try:
                self.requests.started(self._serving, self.identity, run_id)
            except EmpsyncError:
                pass  # its result is recorded when it ends

    def end(self, result: RunResult) -> None:
        serving, self._serving = self._serving, []
        self.answer(serving, result)

    def answer(self, ids: list[int], result: RunResult) -> None:
        if not ids:
            return
        try:
            self.requests.finish(ids, self.identity, result.to_json(), result.exit_code)
        except EmpsyncError as exc:
            log.warning("could not record the result of request(s) %s: %s", ", ".join(map(str, ids)), exc.message)

    def release(self) -> None:
        """Hand what was taken but not run back to the queue: this process no longer leads."""
        ids = self.held()
        self._by_kind.clear()
        self._by_ticket.clear()
        if ids:
            try:
                self.requests.release(ids, self.identity)
                log.info("Handed request(s) %s back to the queue for the next leader", ", ".join(map(str, ids)))
            except EmpsyncError:
                pass  # the next leader puts them back itself
