"""The sync service: one worker thread driven by ``schedule``, hosted by every face.

The worker owns the engine, the leadership lock and a timetable (a normal
run every ``interval``, a force run every ``force_interval``, due times kept
in UTC: core/timetable.py). Faces call the small API below from any thread; each
call only queues a command and returns at once. Runs happen on the worker
thread, so two never overlap, and a tick missed while a run was busy runs
once, not once per missed interval.
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from . import requests as req
from .backoff import backoff_delay
from .config import Config, check_interval
from .contracts import CurrentRun, LeaderView, LiveView, RunRow, Snapshot, Stats, Status, TicketJson
from .dialects import make_lock
from .engine import RunResult, SyncEngine
from .errors import EmpsyncError
from .events import BatchApplied, Event, EventBus, StatusChanged, SyncFailed, SyncFinished, SyncStarted
from .exchange import Inbox, Outbox
from .face import RollbackOptions, Ticket
from .live import LiveMirror
from .lock import SyncLock
from .notify import Notifier
from .presence import Publisher, SharedLog, live_leader
from .requests import Request, Requests
from .state import StateKey, StateValue, whoami
from .status import build_stats, build_status
from .times import iso, parse_iso, utcnow
from .timetable import JobKind, Timetable
from .turns import Turns

log = logging.getLogger("empsync.service")


@dataclass(frozen=True)
class Timings:
    """How often the worker looks at things, in seconds: these defaults ship; tests pass shorter ones."""

    tick_s: float = 0.2  # the worker's idle wait: commands are seen within this
    settings_refresh_s: float = 1.0  # interval and pause set from another process are seen within this
    status_refresh_s: float = 5.0
    rollups_refresh_s: float = 60.0
    # A finished run is news for the hourly figures: read them again soon, but not at every run.
    rollups_after_run_s: float = 10.0
    lead_retry_s: float = 2.0  # how often a standby tries for the lock
    lead_check_s: float = 5.0  # how often a leader re-checks it still holds the lock
    backoff_base_s: float = 5.0  # after a failed run
    backoff_cap_s: float = 300.0
    lead_backoff_base_s: float = 2.0  # after the database could not be reached for the lock
    lead_backoff_cap_s: float = 60.0
    requests_s: float = 1.0  # how often a leader looks for requests, and an asker at the ones it sent


# Requests that run once each, in the order asked (normal and force requests coalesce instead).
ONE_OFF_KINDS = ("ids", "rollback")
RUN_KINDS = ("normal", "force", *ONE_OFF_KINDS)  # the request kinds this version runs


@dataclass
class Live:
    """This service's own view of itself, changed under the snapshot lock; ``view()`` is its JSON."""

    service: str  # host:pid
    attached: bool
    interval: int
    interval_source: str
    state: str = "starting"
    detail: str = ""
    is_leader: bool = False
    leader: str | None = None
    paused: bool = False
    current_run: CurrentRun | None = None
    last_result: dict[str, Any] | None = None
    failures: int = 0
    retry_at: str | None = None
    pending: list[TicketJson] = field(default_factory=list)  # replaced, never changed in place
    next_sync_at: str | None = None
    next_force_sync_at: str | None = None

    def view(self) -> LiveView:
        return {
            "state": self.state,
            "detail": self.detail,
            "is_leader": self.is_leader,
            "service": self.service,
            "current_run": self.current_run,
            "last_result": self.last_result,
            "failures": self.failures,
            "retry_at": self.retry_at,
            "pending": self.pending,
            "attached": self.attached,
            "interval": self.interval,
            "interval_source": self.interval_source,
            "paused": self.paused,
            "leader": self.leader,
            "next_sync_at": self.next_sync_at,
            "next_force_sync_at": self.next_force_sync_at,
        }


class SyncService:
    """The worker and its face API. ``attach``: never take the lock, only watch and steer the leader."""

    def __init__(
        self,
        config: Config,
        *,
        engine: SyncEngine | None = None,
        bus: EventBus | None = None,
        attach: bool = False,
        timings: Timings = Timings(),
        turns: Turns | None = None,
    ) -> None:
        self.config = config
        self.timings = timings
        self.bus = bus or EventBus()
        self.engine = engine or SyncEngine(config, bus=self.bus, turns=turns)
        self.engine.bus = self.bus
        self.identity = whoami()
        self.attach = attach
        self.requests = Requests(self.engine.db)
        # What other consoles read: the leader's log lines (this process's own, once it leads).
        self.shared_log = SharedLog(self.engine.db)
        self._publisher = None if attach else Publisher(self.engine.db, self.identity, self._published, self._leads)
        self._commands: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock: SyncLock | None = None
        self._timetable = Timetable(self._tick)
        self._ids = itertools.count(1)
        self._snapshot_lock = threading.Lock()
        self._live = Live(self.identity, attach, config.sync.interval, config.interval_source)
        self._leader_view: LeaderView | None = None  # the leader's published view, while this one does not lead
        self._db_status: Status | None = None  # None until the database is first read
        self._db_error: str | None = None  # why the last read of it failed
        self._rollups_due = self._rollups_read_at = 0.0
        self._stats: Stats | None = None
        self._interval = config.sync.interval
        self._interval_source = config.interval_source
        self._paused = False
        self._failures = 0
        self._retry_at: float | None = None
        self._retry_force = False
        self._pending: dict[str, Ticket] = {}
        self._pending_jobs: list[Ticket] = []  # ids runs and rollbacks: each request in its turn
        self._outbox = Outbox(self.requests, self.identity, self.bus, self._note_request)  # asked of the leader
        self._inbox = Inbox(self.requests, self.identity)  # taken from other processes, while leading
        self._next_requests = 0.0
        self._live_mirror: LiveMirror | None = None
        self.bus.subscribe(self._on_event)
        self.notifier: Notifier | None = None
        if config.notify.receivers and not attach:  # an attached console (a browser tab) tells nobody: its leader does
            self.notifier = Notifier(
                config, identity=self.identity, snapshot=self.snapshot, record=self._record_notify, emit=self.bus.emit
            )
            self.bus.subscribe(self.notifier.observe)

    # -- the face-facing API (any thread, returns at once) ----------------------

    def start(self) -> SyncService:
        if self._thread is None:
            if self._publisher is not None:
                self._publisher.start()
            if self.notifier is not None:
                self.notifier.start()
            self._thread = threading.Thread(target=self._main, name="empsync-worker", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 9.0) -> bool:
        """Ask the worker to finish or abandon the current batch and release the lock."""
        self._stop.set()
        self._commands.put(("wake", None))
        if self._thread is not None:
            self._thread.join(timeout)
        if self.notifier is not None:
            self.notifier.stop()
        return self._thread is None or not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def force_sync(self, trigger: str = "api", allow_mass_delete: bool = False) -> Ticket:
        return self._queue_run("force", trigger, allow_mass_delete)

    def sync_now(self, trigger: str = "api") -> Ticket:
        return self._queue_run("normal", trigger)

    def sync_ids(self, ids: tuple[str, ...], trigger: str = "api") -> Ticket:
        """A run of exactly these (validated) documents; each request runs, in the order asked."""
        return self._queue_run("ids", trigger, ids=ids)

    def rollback(self, run: int, *, hold: bool = False, cascade: bool = False, trigger: str = "api") -> Ticket:
        """Roll run ``run`` back on the worker, which holds the lock (see ``core.rollback``)."""
        return self._queue_run("rollback", trigger, rollback=RollbackOptions(run, hold, cascade))

    def set_interval(self, seconds: int) -> int:
        """Validate now (a clear refusal outside 10..86,400), store on the worker."""
        check_interval(seconds)
        self._commands.put(("interval", seconds))
        with self._snapshot_lock:
            self._live.interval = seconds
            self._live.interval_source = "database"
        return seconds

    def pause(self) -> None:
        self._commands.put(("paused", True))

    def resume(self) -> None:
        self._commands.put(("paused", False))

    def plan_rollback(self, run: int, cascade: bool = False) -> RunResult:
        """What rolling back run ``run`` would change: a dry run, which only reads (any thread)."""
        return self.engine.rollback(run, dry_run=True, cascade=cascade, trigger="api")

    def run_changes(self, run: int, limit: int = 1000) -> list[dict[str, Any]]:
        """One run's field-level changes, oldest first (reads the database: any thread)."""
        return self.engine.state.changes_of_run(run, limit)

    def recent_changes(self, limit: int = 50, needle: str = "") -> list[dict[str, Any]]:
        """The newest field-level changes, newest first; ``needle``: those whose id or name holds it (any thread)."""
        return self.engine.state.recent_changes(limit=limit, needle=needle)

    def rejects(self) -> list[dict[str, Any]]:
        """The open rejects, newest first (reads the database: any thread)."""
        return self.engine.state.rejects()

    def changes_by_others(self, after: int, limit: int = 500) -> list[dict[str, Any]]:
        """Audit rows above id ``after`` written by other processes' runs, oldest first: the leader's, to a standby."""
        return self.engine.state.changes_after(after, limit=limit, not_by=self.identity)

    def log_by_others(self, after: int | None, limit: int = 500) -> list[dict[str, Any]]:
        """Log lines other processes shared above id ``after`` (None: their newest ``limit``), oldest first."""
        return self.shared_log.after(after, not_by=self.identity, limit=limit)

    def runs(self, limit: int = 50) -> list[RunRow]:
        """The run history, newest first, as JSON-ready rows (reads the database: any thread)."""
        from .render import jsonable

        with self.engine.db.connect() as conn:
            return [cast(RunRow, jsonable(r)) for r in self.engine.state.recent_runs(conn, limit=limit)]

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        return self.bus.subscribe(callback)

    def snapshot(self) -> Snapshot:
        """The status: the database's view, overlaid with this service's live view.

        While another process leads, ``leader_view`` holds what it last published
        (``service``, ``at``, ``fresh``, ``snapshot``): what a console shows.
        """
        listen = self._live_mirror.status() if self._live_mirror is not None else {}
        with self._snapshot_lock:
            status: dict[str, Any] = dict(self._db_status or {})
            if self._db_error is not None:
                status["last_error"] = self._db_error
            merged = {**status, **self._live.view(), **listen, "leader_view": self._leader_view}
        # The status's keys are missing until the database has been read once (the Snapshot docstring).
        return cast(Snapshot, merged)

    def stats(self) -> Stats:
        """The stats as last read (every minute for the hourly and daily figures); empty until the first read."""
        with self._snapshot_lock:
            return cast(Stats, dict(self._stats or {}))

    def _queue_run(
        self,
        kind: str,
        trigger: str,
        allow_mass_delete: bool = False,
        ids: tuple[str, ...] = (),
        rollback: RollbackOptions | None = None,
    ) -> Ticket:
        forwarded = self.attach or not self.is_leader  # the leader runs it: this process asks it to
        ticket = Ticket(next(self._ids), kind, trigger, utcnow(), allow_mass_delete, ids, rollback, forwarded)
        self._commands.put(("run", ticket))
        with self._snapshot_lock:
            self._live.pending = [*self._live.pending, ticket.to_json()]
        return ticket

    # -- the worker thread -----------------------------------------------------

    def _main(self) -> None:
        if self.attach:
            log.info("Attached console %s: watching and steering the leader; this process never syncs", self.identity)
            self._set_state("attached", "looking for the leader")
        else:
            log.info("Starting empsync service %s (mode %s)", self.identity, self.config.sync.mode)
        next_lead_try = next_settings = next_status = 0.0
        next_lead_check = time.monotonic() + self.timings.lead_check_s
        lead_failures = 0
        try:
            while not self._stop.is_set():
                try:
                    now = time.monotonic()
                    if now >= next_settings:
                        next_settings = now + self.timings.settings_refresh_s
                        self._refresh_settings()
                    if now >= next_status:
                        first, next_status = next_status == 0.0, now + self.timings.status_refresh_s
                        self._refresh_status(count_documents=not first)  # leading never waits on a count
                    self._exchange_requests()
                    if self.attach:
                        pass  # never leads
                    elif not self.is_leader and now >= next_lead_try:
                        try:
                            self._try_lead()
                            lead_failures = 0
                            next_lead_try = now + self.timings.lead_retry_s
                        except EmpsyncError as exc:
                            lead_failures += 1
                            next_lead_try = now + backoff_delay(
                                lead_failures, self.timings.lead_backoff_base_s, self.timings.lead_backoff_cap_s
                            )
                            self._set_state("error", f"{exc.message} (retrying)")
                    elif self.is_leader and now >= next_lead_check:
                        next_lead_check = now + self.timings.lead_check_s
                        self._check_lead()
                    if self.is_leader:
                        self._run_due_work()
                    if self.is_leader and self.listening_mode and not self._paused:
                        # The listener's hand-off is the wait here, so a change is applied
                        # the moment it arrives; commands are still seen every tick.
                        self._mirror().tick(wait=self.timings.tick_s)
                        self._drain_commands()
                    else:
                        if self._paused and self._live_mirror is not None and self._live_mirror.state != "stopped":
                            # Paused means no sync of its own: a listener would undo a rollback, say.
                            self._live_mirror.stop("ok", "paused")
                            self._set_state(self._idle_state())
                        self._drain_commands(timeout=self.timings.tick_s)
                except Exception:  # noqa: BLE001 - a bug in one step must never kill the worker
                    log.exception("unexpected error on the sync worker; carrying on")
                    self._stop.wait(1.0)
        finally:
            led = self.is_leader
            if self._publisher is not None:
                self._publisher.stop()  # before the leader key goes: a last view must not outlive it
            self._step_down("stopped")
            self._set_state("stopped", "")
            if self._publisher is not None:
                self._publisher.flush(write=led)
            self.engine.close()
            log.info("empsync service stopped")

    @property
    def listening_mode(self) -> bool:
        return self.config.sync.mode == "listen"

    def _mirror(self) -> LiveMirror:
        if self._live_mirror is None:
            self._live_mirror = LiveMirror(self.engine, self._catch_up, self._on_listen_state)
        return self._live_mirror

    def _catch_up(self) -> None:
        # Without updated_field only a full read can tell what the listener missed.
        kind = "normal" if self.config.source.updated_field else "force"
        self._run(kind, "catch-up", scheduled=False)

    def _on_listen_state(self, state: str, detail: str) -> None:
        if not self._stop.is_set() and self._live.state not in ("syncing", "stopped"):
            self._set_state(self._idle_state(), detail)

    @property
    def is_leader(self) -> bool:
        return self._lock is not None and self._live.is_leader

    def _drain_commands(self, timeout: float = 0.0, runs: bool = True) -> None:
        """Handle queued commands; with ``runs`` False (inside a run) only the quick ones."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                wait = max(0.0, deadline - time.monotonic())
                name, arg = self._commands.get(timeout=wait) if wait else self._commands.get_nowait()
            except queue.Empty:
                return
            if name == "run":
                self._forward(arg) if arg.forwarded else self._add_pending(arg)
            elif name == "interval":
                self._store({StateKey.INTERVAL: arg})
                self._apply_interval(arg, "database")
                log.info("Interval set to %d s", arg)
            elif name == "paused":
                self._store({StateKey.PAUSED: "1" if arg else "0"})
                self._paused = arg
                with self._snapshot_lock:
                    self._live.paused = arg
                self._update_next_times()
                log.info("Scheduled runs %s", "paused" if arg else "resumed")
                self._set_state(self._idle_state())
            if runs and (self._pending or self._pending_jobs) and self.is_leader and self._commands.empty():
                self._run_pending_requests()
            if self._stop.is_set():
                return

    def _record_notify(self, outcome: dict[str, Any]) -> None:
        self.engine.state.set({StateKey.NOTIFY: json.dumps(outcome)})

    def _add_pending(self, ticket: Ticket) -> None:
        if ticket.kind in ONE_OFF_KINDS:
            self._pending_jobs.append(ticket)
            return
        current = self._pending.get(ticket.kind)
        if current is not None and ticket.allow_mass_delete and not current.allow_mass_delete:
            # The newer request says more: it replaces the one waiting.
            self._drop_pending_ticket(current)
            current = None
        self._pending[ticket.kind] = current or ticket  # one pending run of each kind
        if current is not None:
            self._drop_pending_ticket(ticket)

    def _store(self, values: Mapping[StateKey, StateValue]) -> None:
        try:
            self.engine.state.set(values)
        except EmpsyncError as exc:
            log.error("could not store %s: %s", ", ".join(values), exc.message)

    # -- requests between processes (core/requests.py, core/exchange.py) -------------

    def _exchange_requests(self) -> None:
        """At most every ``timings.requests_s``: a leader takes the queued requests; an asker follows its own."""
        now = time.monotonic()
        if now < self._next_requests:
            return
        self._next_requests = now + self.timings.requests_s
        if self.is_leader:
            for request in self._inbox.take():
                self._accept(request)
        if self._outbox:
            self._outbox.follow()

    def _forward(self, ticket: Ticket) -> None:
        """A face's run request, while another process leads: queue it for the leader."""
        sent = self._outbox.send(ticket.request_id, ticket.kind, ticket.trigger, _payload(ticket), self._live.leader)
        if not sent:
            self._drop_pending_ticket(ticket)

    def _note_request(self, ticket: int, row: int, status: str, leader: str | None) -> None:
        """The pending list follows a request sent to the leader, until it ends."""
        with self._snapshot_lock:
            pending = self._live.pending
            if status in req.FINAL:
                self._live.pending = [p for p in pending if p["request_id"] != ticket]
            else:
                self._live.pending = [
                    {**p, "request": row, "status": status, "leader": leader} if p["request_id"] == ticket else p
                    for p in pending
                ]

    def _accept(self, request: Request) -> None:
        """A request taken from another process becomes a ticket, as a face of this one would queue."""
        try:
            ticket = _ticket_of(request, next(self._ids))
        except (KeyError, TypeError, ValueError):
            reason = f"this leader does not run requests of kind {request.kind!r} with {request.payload!r}"
            self._inbox.answer([request.id], _result_of_nothing(request, reason[:500]))
            return
        self._inbox.hold(request, ticket.request_id, coalesces=ticket.kind not in ONE_OFF_KINDS)
        with self._snapshot_lock:
            self._live.pending = [*self._live.pending, {**ticket.to_json(), "request": request.id}]
        self._add_pending(ticket)

    def _release_requests(self) -> None:
        # A one-off job that came from another process goes back with its request: it must not also run here.
        self._pending_jobs = [t for t in self._pending_jobs if not self._inbox.holds_ticket(t.request_id)]
        self._inbox.release()

    def _published(self) -> dict[str, Any]:
        """What the publisher writes for other processes: this process's live view."""
        listen = self._live_mirror.status() if self._live_mirror is not None else {}
        with self._snapshot_lock:
            return {**self._live.view(), **listen}

    def _leads(self) -> bool:
        return self.is_leader and not self._stop.is_set()

    # -- leadership ------------------------------------------------------------

    def _try_lead(self) -> None:
        self.engine.db.ensure_schema()
        if self._lock is None:
            self._lock = make_lock(self.engine.db.engine, self.config.target.table)
            self.engine.lock = self._lock  # listen sessions re-check it before each commit, as runs do
        try:
            got = self._lock.acquire()
        except Exception as exc:  # noqa: BLE001 - driver errors while the server is away
            raise EmpsyncError(f"cannot reach the database for the sync lock ({type(exc).__name__})") from None
        if not got:
            leader = self.engine.state.get(StateKey.LEADER) or "another process"
            with self._snapshot_lock:
                self._live.is_leader = False
                self._live.leader = leader
            self._set_state("standby", f"{leader} leads")
            return
        try:
            self.engine.state.set({StateKey.LEADER: self.identity})
            closed = self.engine.state.close_interrupted_runs()
            requeued, cut_off = self.requests.recover(self._inbox.held(), _interrupted)
        except EmpsyncError:
            self._lock.release()  # lead only with the bookkeeping done; the next try starts over
            raise
        with self._snapshot_lock:
            self._live.is_leader = True
            self._live.leader = self.identity
            self._leader_view = None
        if closed:
            log.warning("Marked %d run(s) left by a stopped process as interrupted", closed)
        if requeued or cut_off:
            log.warning(
                "Took over the requests of the previous leader: %d back in the queue, %d failed (cut off mid-run)",
                requeued,
                cut_off,
            )
        log.info("Leading: this service syncs (%s)", self._lock.name)
        self._reschedule()
        self._set_state(self._idle_state())

    def _check_lead(self) -> None:
        if self._lock is not None and not self._lock.still_held():
            log.error("Lost the sync lock (database connection lost): syncing stops until it is regained")
            with self._snapshot_lock:
                self._live.is_leader = False
            self._release_requests()
            if self._live_mirror is not None:
                self._live_mirror.stop("interrupted", "lost the sync lock")
            self._set_state("standby", "lost the lock; trying to regain it")

    def _step_down(self, why: str) -> None:
        if self._live_mirror is not None:
            self._live_mirror.stop("ok" if why == "stopped" else "interrupted", why)
        if self._lock is None:
            return
        if self._live.is_leader:
            self._release_requests()
            try:
                if self.engine.state.get(StateKey.LEADER) == self.identity:
                    self.engine.state.forget(StateKey.LEADER, StateKey.LEADER_LIVE)
            except EmpsyncError:
                pass
        try:
            self._lock.release()
        except Exception:  # noqa: BLE001 - the server drops the lock with the connection anyway
            pass
        with self._snapshot_lock:
            self._live.is_leader = False
        log.info("Released the sync lock (%s)", why)

    # -- schedule --------------------------------------------------------------

    def _reschedule(self) -> None:
        """(Re)plan the two jobs, aligned with the runs that already happened."""
        values = self._state_values()
        if values is None:  # the database is away: keep the current plan, if there is one
            if self._timetable:
                return
            values = {}
        interval, force_interval = self._interval, self.config.sync.force_interval
        self._timetable.plan("normal", interval, _next(values.get(StateKey.LAST_SYNC_AT), interval))
        self._timetable.plan("force", force_interval, _next(values.get(StateKey.LAST_FORCE_SYNC_AT), force_interval))
        self._update_next_times()

    def _apply_interval(self, seconds: int, source: str) -> None:
        changed = seconds != self._interval
        self._interval, self._interval_source = seconds, source
        with self._snapshot_lock:
            self._live.interval, self._live.interval_source = seconds, source
        if changed and self.is_leader:
            self._reschedule()

    def _refresh_settings(self) -> None:
        """Interval and pause stored by another process (``empsync interval N``)."""
        values = self._state_values()
        if values is None:
            return
        setting = self.engine.state.interval(values)
        if (setting.seconds, setting.source) != (self._interval, self._interval_source):
            if setting.seconds != self._interval:
                log.info("Interval is now %d s (from %s)", setting.seconds, setting.source)
            self._apply_interval(setting.seconds, setting.source)
        paused = values.get(StateKey.PAUSED) == "1"
        if paused != self._paused:
            self._paused = paused
            with self._snapshot_lock:
                self._live.paused = paused
            self._update_next_times()
            log.info("Scheduled runs %s", "paused" if paused else "resumed")
        if not self.is_leader:
            leader = values.get(StateKey.LEADER)
            live = live_leader(values)
            view: LeaderView | None = None
            if live is not None:
                view = {"service": live.service, "at": iso(live.at), "fresh": live.fresh(), "snapshot": live.snapshot}
            with self._snapshot_lock:
                self._live.leader = leader
                self._leader_view = view
            if self.attach:
                self._set_state("attached", f"leader {leader}" if view and view["fresh"] else "no live leader")
        elif self._live.state in ("idle", "paused", "disabled"):
            self._set_state(self._idle_state())

    def _state_values(self) -> dict[str, str | None] | None:
        try:
            return self.engine.state.get_all()
        except EmpsyncError:
            return None

    def _run_due_work(self) -> None:
        if self._pending or self._pending_jobs:  # queued while standby, or during a run
            self._run_pending_requests()
            return
        if self._retry_at is not None and time.monotonic() >= self._retry_at:
            self._retry_at = None
            self._run("force" if self._retry_force else "normal", "retry", scheduled=True)
            return
        self._timetable.run_pending()
        self._update_next_times()

    def _tick(self, kind: JobKind) -> None:
        if self._retry_at is not None:
            return  # backing off after a failure: the retry timer owns the next attempt
        if kind == "normal" and self.listening_mode and self._live_mirror is not None and self._live_mirror.healthy:
            return  # the listener keeps the table current; polls take over only when it is down
        if kind == "normal" and self._timetable.is_due("force"):
            return  # the force run due now covers this one
        self._run(kind, "schedule", scheduled=True)

    def _run_pending_requests(self) -> None:
        for kind in ("force", "normal"):
            ticket = self._pending.pop(kind, None)
            if ticket is not None:
                self._drop_pending_ticket(ticket)
                self._inbox.begin(("force", "normal") if kind == "force" else (kind,))  # force covers normal
                self._run(kind, ticket.trigger, scheduled=False, ticket=ticket)
                if kind == "force":
                    self._pending.pop("normal", None)  # a force run covers a normal one
                    with self._snapshot_lock:
                        self._live.pending = [p for p in self._live.pending if p["kind"] != "normal"]
        while self._pending_jobs and not self._stop.is_set():
            ticket = self._pending_jobs.pop(0)
            self._drop_pending_ticket(ticket)
            self._inbox.begin(ticket=ticket.request_id)
            self._run(ticket.kind, ticket.trigger, scheduled=False, ticket=ticket)

    def _drop_pending_ticket(self, ticket: Ticket) -> None:
        with self._snapshot_lock:
            self._live.pending = [p for p in self._live.pending if p["request_id"] != ticket.request_id]

    def _run(self, kind: str, trigger: str, *, scheduled: bool, ticket: Ticket | None = None) -> RunResult | None:
        """One run on the worker; it answers the requests of other processes the inbox has begun."""
        if scheduled and (reason := self._schedule_block()):
            log.debug("scheduled %s run skipped: %s", kind, reason)
            return None
        force = kind == "force"
        try:
            if kind == "rollback" and ticket is not None and ticket.rollback is not None:
                options = ticket.rollback
                result = self.engine.rollback(
                    options.run, hold=options.hold, cascade=options.cascade, trigger=trigger, lock=self._lock
                )
            else:
                result = self.engine.run(
                    force=force,
                    when_due=scheduled and not force,
                    trigger=trigger,
                    lock=self._lock,
                    stop=self._stop,
                    allow_mass_delete=bool(ticket and ticket.allow_mass_delete),
                    ids=ticket.ids if ticket is not None and kind == "ids" else None,
                )
        except Exception as exc:  # noqa: BLE001 - a job's bug is a failed run, never a dead worker
            log.exception("the %s run raised instead of failing cleanly", kind)
            result = self._record_crash(kind, trigger, exc)
        self._inbox.end(result)
        with self._snapshot_lock:
            self._live.current_run = None
            self._live.last_result = {**result.to_json(), "request_id": ticket.request_id if ticket else None}
        if result.status == "failed" and (not result.retry or kind in ONE_OFF_KINDS):
            # Retrying would fail the same way (the mass-delete guard), or is for whoever asked for
            # these documents (an ids run): the schedule goes on, the state says why.
            self._failures, self._retry_at = 0, None
            with self._snapshot_lock:
                self._live.failures, self._live.retry_at = 0, None
            if not self._stop.is_set():
                self._set_state("error", result.reason)
        elif result.status == "failed":
            self._failures += 1
            delay = backoff_delay(self._failures, self.timings.backoff_base_s, self.timings.backoff_cap_s)
            self._retry_at, self._retry_force = time.monotonic() + delay, force
            with self._snapshot_lock:
                self._live.failures = self._failures
                self._live.retry_at = iso(utcnow() + timedelta(seconds=delay))
            if not self._stop.is_set():
                self._set_state("error", f"{result.reason}; retrying in {delay:.0f} s")
                log.warning("Retrying in %.0f s (attempt %d)", delay, self._failures + 1)
        elif result.status == "ok":
            if kind == "rollback" and ticket is not None and ticket.rollback and not ticket.rollback.hold:
                self._paused = True  # stored by the rollback itself; not waiting for the next settings refresh
                with self._snapshot_lock:
                    self._live.paused = True
            self._failures, self._retry_at = 0, None
            with self._snapshot_lock:
                self._live.failures, self._live.retry_at = 0, None
            self._set_state(self._idle_state())
        self._reschedule()
        self._refresh_status()
        return result

    def _record_crash(self, kind: str, trigger: str, exc: Exception) -> RunResult:
        reason = f"internal error: {type(exc).__name__}: {exc}"
        result = RunResult(
            status="failed", reason=reason, forced=kind == "force", kind=kind, trigger=trigger, exit_code=1
        )
        try:
            result.run_id = self.engine.state.start_run(kind, trigger)
            self.engine.state.finish_run(result.run_id, "failed", {}, 0, reason)
            self.engine.state.set({StateKey.LAST_STATUS: "failed", StateKey.LAST_ERROR: reason[:500]})
        except EmpsyncError:
            pass
        self.bus.emit(SyncFailed(utcnow(), result.run_id, kind, reason))
        return result

    def _schedule_block(self) -> str | None:
        if not self.config.sync.enabled:
            return "disabled"
        if self._paused:
            return "paused"
        return None

    def _idle_state(self) -> str:
        if not self.is_leader:
            return "attached" if self.attach else "standby"
        if self.listening_mode and self._live_mirror is not None and self._live_mirror.state != "stopped":
            return self._live_mirror.state
        return self._schedule_block() or "idle"

    def _update_next_times(self) -> None:
        blocked = self._schedule_block() is not None
        next_normal = self._timetable.due("normal")
        if self._retry_at is not None:  # backing off: the retry is the next attempt
            next_normal = utcnow() + timedelta(seconds=max(0.0, self._retry_at - time.monotonic()))
        with self._snapshot_lock:
            self._live.next_sync_at = None if blocked else iso(next_normal)
            self._live.next_force_sync_at = None if blocked else iso(self._timetable.due("force"))

    # -- status ----------------------------------------------------------------

    def _refresh_status(self, count_documents: bool = True) -> None:
        # The rollups read a month of runs: once a minute is fresh enough for hourly figures.
        rollups = time.monotonic() >= self._rollups_due
        try:
            status = build_status(self.engine, count_documents=count_documents)
            stats = build_stats(self.engine, rollups=rollups)
        except EmpsyncError as exc:
            with self._snapshot_lock:
                self._db_error = exc.message
            return
        if rollups:
            self._rollups_read_at = time.monotonic()
            self._rollups_due = self._rollups_read_at + self.timings.rollups_refresh_s
        with self._snapshot_lock:
            if not rollups and self._stats is not None:
                stats["hourly"], stats["daily"] = self._stats["hourly"], self._stats["daily"]
            self._db_status, self._db_error, self._stats = status, None, stats

    def _set_state(self, state: str, detail: str = "") -> None:
        with self._snapshot_lock:
            if (self._live.state, self._live.detail) == (state, detail):
                return
            self._live.state, self._live.detail = state, detail
        self.bus.emit(StatusChanged(utcnow(), state, detail, self.snapshot()))

    def _on_event(self, event: Event) -> None:
        """The service's own view of a run in progress (called on the worker thread)."""
        if isinstance(event, SyncStarted):
            self._inbox.started(event.run_id)
            with self._snapshot_lock:
                self._live.current_run = {
                    "run_id": event.run_id,
                    "kind": event.kind,
                    "trigger": event.trigger,
                    "started_at": iso(event.at),
                    "counts": {},
                }
            self._set_state("syncing", f"{event.kind} run" + (f" #{event.run_id}" if event.run_id else ""))
        elif isinstance(event, BatchApplied):
            with self._snapshot_lock:
                if self._live.current_run is not None:
                    self._live.current_run = {**self._live.current_run, "counts": dict(event.counts)}
            # Quick commands (interval, pause) are handled between batches, even in a long run,
            # and requests from other processes are taken (they run after this one).
            self._drain_commands(runs=False)
            self._exchange_requests()
        elif isinstance(event, (SyncFinished, SyncFailed)):
            self._rollups_due = min(self._rollups_due, self._rollups_read_at + self.timings.rollups_after_run_s)
            with self._snapshot_lock:
                self._live.current_run = None
                if isinstance(event, SyncFinished) and not event.result.dry_run and self._db_status is not None:
                    # What the database now says, without waiting for the next status refresh.
                    stamp = iso(event.result.started_at)
                    self._db_status["last_sync_at"] = stamp
                    self._db_status["last_status"] = "ok"
                    if event.result.forced:
                        self._db_status["last_force_sync_at"] = stamp


def _ticket_of(request: Request, number: int) -> Ticket:
    """The ticket a request taken from another process becomes; raises on what this version cannot run."""
    if request.kind not in RUN_KINDS:
        raise ValueError(request.kind)
    payload = request.payload
    ids: tuple[str, ...] = ()
    rollback: RollbackOptions | None = None
    if request.kind == "ids":
        ids = tuple(str(i) for i in payload["ids"])
    elif request.kind == "rollback":
        rollback = RollbackOptions(int(payload["run"]), payload["hold"] is True, payload["cascade"] is True)
    allow = payload.get("allow_mass_delete") is True
    return Ticket(number, request.kind, request.trigger, request.requested_at, allow, ids, rollback)


def _result_of_nothing(request: Request, reason: str) -> RunResult:
    """The failed result of a request that ran no run (its kind unknown here, its leader gone)."""
    forced = request.kind == "force"
    return RunResult(
        status="failed", reason=reason, forced=forced, kind=request.kind, trigger=request.trigger, exit_code=1
    )


def _interrupted(request: Request) -> dict[str, Any]:
    reason = f"interrupted: the leader {request.claimed_by} stopped before the run ended"
    return _result_of_nothing(request, reason).to_json()


def _payload(ticket: Ticket) -> dict[str, Any]:
    """A ticket's arguments, as a request row carries them to the leader."""
    payload: dict[str, Any] = {"allow_mass_delete": True} if ticket.allow_mass_delete else {}
    if ticket.ids:
        payload["ids"] = list(ticket.ids)
    if ticket.rollback:
        payload.update(run=ticket.rollback.run, hold=ticket.rollback.hold, cascade=ticket.rollback.cascade)
    return payload


def _next(last_iso: str | None, every: int) -> datetime:
    """When a job is next due, in naive UTC: now when it never ran or is overdue."""
    now = utcnow()
    last = parse_iso(last_iso)
    if last is None:
        return now
    return max(now, last + timedelta(seconds=every))
