"""One sync run: fetch → map → diff → apply → record, emitting events (docs/architecture.md §3).

Reading overlaps writing: a reader thread fetches the next Firestore page
while this thread applies the current one, so a run costs little more than the
read itself. Each batch commits its rows, audit rows, rejects, run counters
and watermark in one transaction: a crash anywhere loses and duplicates
nothing, and the next run carries on from the last commit.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from .conditions import matches
from .config import Config
from .db import Database
from .dialects import make_lock
from .diff import Decision, Op, decide
from .errors import Cancelled, EmpsyncError, LockHeld, TargetError
from .events import BatchApplied, ChangeRecord, EventBus, SyncFailed, SyncFinished, SyncStarted
from .lock import SyncLock
from .mapping import RejectError, content_hash, map_document
from .results import Counts as Counts  # re-exported: callers know them from here
from .results import RunResult as RunResult
from .source import FirestoreSource, SourceDoc
from .state import State, StateKey, StateValue
from .store import MirrorStore, Planned, Rejected
from .times import iso, iso_precise, naive_utc, parse_iso, utcnow
from .turns import Turns
from .watermark import CorruptState, Watermark, margin, scope_of, stored_lag

log = logging.getLogger("empsync.sync")

# Individual "employee updated" lines per batch before they are summarised.
LOG_CHANGES_PER_BATCH = 20
# Individual "employee repaired" lines per run before they are summarised.
LOG_REPAIRS_PER_RUN = 20


class MassDeleteBlocked(EmpsyncError):
    """The mass-delete guard held back a run's deletions."""


@dataclass
class _Run:
    """The working state of one run."""

    run_id: int | None
    kind: str
    dry_run: bool
    incremental: bool
    now: datetime
    counts: Counts = field(default_factory=Counts)
    seen: set[str] = field(default_factory=set)
    first_read_time: datetime | None = None
    started: datetime | None = None
    would_change: list[dict[str, Any]] = field(default_factory=list)
    # The sync lock the run holds; each writing transaction re-checks it before committing.
    lock: SyncLock | None = None
    # Compare stored values, not only hashes, and put drifted rows right (force runs).
    verify: bool = False
    # When the last complete read of this scope began: a valid document older than
    # that with no row lost its row behind empsync's back. None: repairs are not told apart.
    full_read_at: datetime | None = None
    allow_mass_delete: bool = False
    # The largest commit lag known, and when the read that made the starting watermark saw the collection.
    lag: timedelta = timedelta(0)
    lag_measured: bool = False
    read_since: datetime | None = None
    repairs_logged: int = 0

    @property
    def row_id(self) -> int:
        """The run's row in the runs table: every run has one but a dry run, which writes nothing."""
        if self.run_id is None:
            raise RuntimeError(f"a dry {self.kind} run has no row to write to")
        return self.run_id


class SyncEngine:
    def __init__(
        self,
        config: Config,
        db: Database | None = None,
        source: FirestoreSource | None = None,
        bus: EventBus | None = None,
        turns: Turns | None = None,
    ) -> None:
        self.config = config
        self.db = db or Database(config)
        # Between documents the run gives way to a console drawing a key's effect (core/turns.py).
        self.turns = turns or Turns()
        self.state = State(self.db)
        self.mirror = MirrorStore(self.db)
        self.bus = bus or EventBus()
        self._source = source
        # Set by a service that holds the sync lock for this engine's listen sessions.
        self.lock: SyncLock | None = None
        # Ends of runs the database failed to record (it failed with the run): run id ->
        # (status, counters, duration, message), written at the next run. A leader that
        # keeps the lock never marks its own rows interrupted, so without this a row
        # could say "running" for as long as that leader lives.
        self._unwritten_ends: dict[int, tuple[str, dict[str, int], int, str]] = {}

    @property
    def source(self) -> FirestoreSource:
        if self._source is None:  # built on first use: `empsync status` needs no client
            self._source = FirestoreSource(self.config, turns=self.turns)
        return self._source

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
        self.db.dispose()

    # -- scheduling questions ----------------------------------------------------

    def next_due(self, values: dict[str, str | None] | None = None) -> datetime | None:
        values = self.state.get_all() if values is None else values
        last = parse_iso(values.get(StateKey.LAST_SYNC_AT))
        if last is None:
            return None
        return last + timedelta(seconds=self.state.interval(values).seconds)

    def not_due_reason(self) -> str | None:
        """Why a scheduled run should not happen now, or None when it should."""
        values = self.state.get_all()
        if not self.config.sync.enabled:
            return "sync is disabled ([sync] enabled = false or FIRESTORE_REALTIME_ENABLED=false)"
        if values.get(StateKey.PAUSED) == "1":
            return "sync is paused (resume it from the console, the API, or empsync resume)"
        next_at = self.next_due(values)
        if next_at is None:
            return None
        interval = self.state.interval(values).seconds
        slack = timedelta(seconds=min(5.0, interval * 0.05))  # cron fires a hair early sometimes
        if utcnow() + slack < next_at:
            return f"not due until {iso(next_at)}"
        return None

    # -- a run -----------------------------------------------------------------

    def run(
        self,
        *,
        force: bool = False,
        dry_run: bool = False,
        when_due: bool = False,
        trigger: str = "cli",
        lock: SyncLock | None = None,
        stop: threading.Event | None = None,
        allow_mass_delete: bool = False,
        ids: Sequence[str] | None = None,
    ) -> RunResult:
        """One sync run. ``when_due``: skip unless enabled, unpaused and due.

        ``ids``: a run of kind ``ids``, exactly those documents (see ``_run_ids``).
        With ``lock`` the caller already holds the sync lock (a leading
        service); otherwise the run takes it and gives it back.
        """
        kind = "ids" if ids is not None else "force" if force else "normal"
        result = RunResult(status="ok", forced=force, dry_run=dry_run, kind=kind, trigger=trigger, started_at=utcnow())
        halt = stop or threading.Event()
        if ids is not None:
            wanted = list(dict.fromkeys(ids))  # distinct, in the order asked
            return self.locked(result, lambda held: self._run_ids(result, halt, held, wanted), lock)
        due = self.not_due_reason if when_due and not force and not dry_run else None
        return self.locked(result, lambda held: self._run(result, halt, held, allow_mass_delete), lock, due)

    def rollback(
        self,
        run_id: int,
        *,
        dry_run: bool = False,
        hold: bool = False,
        cascade: bool = False,
        trigger: str = "cli",
        lock: SyncLock | None = None,
    ) -> RunResult:
        """Put back what run ``run_id`` changed (see ``core.rollback``); a run of kind ``rollback``.

        A dry run only reads, so it needs no lock and works while a service leads.
        """
        from .rollback import Rollback

        result = RunResult(status="ok", dry_run=dry_run, kind="rollback", trigger=trigger, started_at=utcnow())

        def work(held: SyncLock | None) -> None:
            undo = Rollback(self)
            plan = undo.plan(run_id, cascade)
            result.rolled_back, result.would_change = plan.runs, plan.describe()
            for operation, n in plan.counts().items():
                name = {"insert": "inserted", "update": "updated", "delete": "deleted", "restore": "restored"}[
                    operation
                ]
                setattr(result.counts, name, n)
            if dry_run:
                result.reason = (
                    f"would put back {len(plan.changed)} rows of run(s) {', '.join(f'#{r}' for r in plan.runs)}"
                )
                return
            result.counts = Counts()
            undo.apply(result, plan, hold=hold, lock=held)

        return self.locked(result, work, lock, need_lock=not dry_run)

    def locked(
        self,
        result: RunResult,
        work: Callable[[SyncLock | None], None],
        lock: SyncLock | None = None,
        not_due: Callable[[], str | None] | None = None,
        need_lock: bool = True,
    ) -> RunResult:
        """Do ``work`` holding the sync lock, and turn what goes wrong into ``result``: any kind of run."""
        started = time.monotonic()
        own_lock: SyncLock | None = None
        try:
            self.db.ensure_schema()
            self._write_unwritten_ends()
            # A dry run answers "what would change now?": it is never "not due".
            if not_due is not None and (reason := not_due()):
                result.status, result.reason = "skipped", reason
                return result
            if need_lock and lock is None:
                own_lock = make_lock(self.db.engine, self.config.target.table)
                if not own_lock.acquire():
                    leader = self.state.get(StateKey.LEADER) or "another process"
                    raise LockHeld(
                        f"skipped: the sync lock is held by {leader}", "a service is running; it syncs on its own"
                    )
                self.state.close_interrupted_runs()
            elif need_lock and lock is not None and not lock.still_held():
                raise LockHeld(
                    "skipped: the sync lock was lost (its database connection ended)",
                    "the service syncs again once it holds the lock",
                )
            work(lock or own_lock)
        except LockHeld as exc:
            result.status, result.reason, result.hint, result.exit_code = (
                "skipped",
                exc.message,
                exc.hint,
                exc.exit_code,
            )
        except Cancelled as exc:
            # Asked to stop (shutdown): whole batches are kept, nothing failed.
            log.info("Employee sync stopped before it ended; the next run carries on from the last batch")
            result.status, result.reason, result.hint, result.exit_code = "failed", exc.message, exc.hint, exc.exit_code
            return result
        except EmpsyncError as exc:
            result.status, result.reason, result.hint, result.exit_code = "failed", exc.message, exc.hint, exc.exit_code
            result.retry = not isinstance(exc, MassDeleteBlocked)
        except Exception as exc:  # noqa: BLE001 - a bug must fail the run, not the thread hosting it
            log.exception("unexpected error in the sync run")
            result.status, result.reason, result.exit_code = "failed", f"internal error: {type(exc).__name__}: {exc}", 1
        finally:
            if own_lock is not None:
                own_lock.release()
            if not result.duration_ms:
                result.duration_ms = int((time.monotonic() - started) * 1000)
        if result.status == "failed" and not result.dry_run:
            self._record_failure(result)
        return result

    def _starting_point(self, values: dict[str, str | None], forced: bool) -> Watermark | None:
        """The stored watermark for this scope; a force run reads everything and needs none."""
        try:
            return Watermark.loads(values.get(StateKey.WATERMARK), scope_of(self.config))
        except CorruptState as exc:
            if not forced:
                raise
            log.warning("%s; this force run writes a new one", exc.message)
            return None

    def _full_read_at(self, values: dict[str, str | None]) -> datetime | None:
        """When the last complete read of this scope began (None if never, or for another scope)."""
        try:
            raw = json.loads(values.get(StateKey.FULL_READ) or "null")
            if isinstance(raw, dict) and raw.get("scope") == scope_of(self.config):
                return parse_iso(raw.get("at"))
        except (ValueError, TypeError):
            pass  # unreadable: repairs are not told apart until the next complete read
        return None

    def _run(
        self, result: RunResult, stop: threading.Event, lock: SyncLock | None = None, allow_mass_delete: bool = False
    ) -> None:
        values = self.state.get_all()
        watermark = self._starting_point(values, result.forced)
        incremental = not result.forced and bool(self.source.updated_path) and watermark is not None
        result.incremental = incremental
        run = _Run(
            run_id=None if result.dry_run else self.state.start_run(result.kind, result.trigger),
            kind=result.kind,
            dry_run=result.dry_run,
            incremental=incremental,
            now=result.started_at or utcnow(),
            lock=lock,
            verify=result.forced,
            full_read_at=self._full_read_at(values),
            allow_mass_delete=allow_mass_delete,
            lag=stored_lag(values, StateKey.COMMIT_LAG_MS),
            read_since=watermark.read_at if incremental and watermark else None,
        )
        result.run_id = run.run_id
        reads_before = self.source.meter.reads
        self.bus.emit(SyncStarted(utcnow(), run.run_id, run.kind, result.trigger, run.dry_run))
        log.info(
            "Starting employee sync (%s%s%s)",
            run.kind,
            ", incremental since " + iso(watermark.ts) if incremental and watermark else ", full read",
            ", dry run" if run.dry_run else "",
        )
        blocked: MassDeleteBlocked | None = None
        try:
            pages = self.source.changed_pages(watermark) if incremental else self.source.all_pages()
            for batch in _batches(_prefetch(pages, stop), self.config.target.batch_size):
                if stop.is_set():
                    raise Cancelled("stopped before the run ended", "the next run carries on from the last batch")
                run.counts.firestore_reads = self.source.meter.reads - reads_before
                self._apply(batch, run)
            log.info(
                "Retrieved minimal data for %d employees (%d Firestore reads)",
                run.counts.fetched,
                self.source.meter.reads - reads_before,
            )
            if not incremental:
                try:
                    self._reconcile(run, watermark)
                except MassDeleteBlocked as exc:
                    blocked = exc  # the run's writes stand; it ends failed below, with its counts
        except Exception as exc:
            run.counts.firestore_reads = self.source.meter.reads - reads_before
            result.counts = run.counts
            if run.run_id is not None:
                status = "interrupted" if isinstance(exc, Cancelled) else "failed"
                message = exc.message if isinstance(exc, EmpsyncError) else f"{type(exc).__name__}: {exc}"
                self._safe_finish(run.run_id, status, run.counts, result, message)
            raise
        run.counts.firestore_reads = self.source.meter.reads - reads_before
        result.counts = run.counts
        result.would_change = run.would_change
        if run.dry_run:
            return
        self._finish(run, result, blocked)
        if blocked is not None:
            raise blocked
        self.bus.emit(SyncFinished(utcnow(), result.report()))

    def _run_ids(self, result: RunResult, stop: threading.Event, lock: SyncLock | None, ids: list[str]) -> None:
        """Exactly these documents: one billed read each, through the same batch path as any run.

        A document that does not exist is gone (``delete_mode``). The
        watermark and the last-sync times stay as they are: the schedule
        does not count this run. Values are compared, not only hashes, so the
        rows asked for are also healed of drift.
        """
        values = self.state.get_all()
        run = _Run(
            run_id=None if result.dry_run else self.state.start_run("ids", result.trigger),
            kind="ids",
            dry_run=result.dry_run,
            incremental=False,
            now=result.started_at or utcnow(),
            lock=lock,
            verify=True,
            full_read_at=self._full_read_at(values),
            lag=stored_lag(values, StateKey.COMMIT_LAG_MS),
        )
        result.run_id = run.run_id
        reads_before = self.source.meter.reads
        self.bus.emit(SyncStarted(utcnow(), run.run_id, run.kind, result.trigger, run.dry_run))
        log.info("Starting employee sync (%d selected employee%s)", len(ids), "" if len(ids) == 1 else "s")
        try:
            size = self.config.target.batch_size
            for start in range(0, len(ids), size):
                if stop.is_set():
                    raise Cancelled("stopped before the run ended", "the rest of the ids were not read")
                docs = self.source.get(ids[start : start + size])
                run.counts.firestore_reads = self.source.meter.reads - reads_before
                self._apply(docs, run)
        except Exception as exc:
            run.counts.firestore_reads = self.source.meter.reads - reads_before
            result.counts = run.counts
            if run.run_id is not None:
                message = exc.message if isinstance(exc, EmpsyncError) else f"{type(exc).__name__}: {exc}"
                self._safe_finish(
                    run.run_id, "interrupted" if isinstance(exc, Cancelled) else "failed", run.counts, result, message
                )
            raise
        run.counts.firestore_reads = self.source.meter.reads - reads_before
        result.counts, result.would_change = run.counts, run.would_change
        if run.dry_run:
            return
        self._finish(run, result, None, schedule=False)
        self.bus.emit(SyncFinished(utcnow(), result.report()))

    def _finish(self, run: _Run, result: RunResult, blocked: MassDeleteBlocked | None, schedule: bool = True) -> None:
        """Record a run that read to the end: its row, the last-sync times (``schedule``), the log line."""
        with self.db.connect() as conn:
            sizes = self.state.row_counts(conn)
        run.counts.naive_reads = sizes["rows"] + sizes["unmirrored_rejects"]
        duration_ms = int((utcnow() - run.now).total_seconds() * 1000)
        status = "failed" if blocked else "ok"
        try:
            self.state.finish_run(
                run.row_id, status, run.counts.as_dict(), duration_ms, blocked.message if blocked else ""
            )
        except EmpsyncError as exc:  # the run is reported failed: its row must say so too
            self._end_run(run.row_id, "failed", run.counts.as_dict(), duration_ms, exc.message)
            raise
        if schedule:
            # A blocked run still counts as the attempt: the schedule must not start another full read at once.
            stamp: dict[StateKey, StateValue] = {StateKey.LAST_SYNC_AT: iso(run.now), StateKey.LAST_STATUS: status}
            stamp[StateKey.LAST_ERROR] = blocked.message[:500] if blocked else None
            if result.forced:
                stamp[StateKey.LAST_FORCE_SYNC_AT] = iso(run.now)
            self.state.set(stamp)
        self.state.prune_changes(self.config.sync.audit_retention_days)
        result.duration_ms = duration_ms
        if blocked:
            return
        c = run.counts
        log.info(
            "Employee sync completed: %d fetched, %d inserted, %d updated, %d deleted, %d unchanged, %d repaired, "
            "%d rejected; %d Firestore reads (a full read: %d) in %d ms",
            c.fetched, c.inserted, c.updated, c.deleted, c.unchanged, c.repaired, c.rejected, c.firestore_reads,
            c.naive_reads, duration_ms,
        )  # fmt: skip

    # -- a batch ---------------------------------------------------------------

    def _apply(self, docs: list[SourceDoc], run: _Run, watermark: Watermark | None = None) -> None:
        """One batch in one transaction. Documents with ``exists`` False are gone (listen mode)."""
        docs = newest_per_id(docs)
        fields = self.config.fields
        conditions = self.config.source.where
        valid: list[tuple[SourceDoc, dict[str, Any], str]] = []
        rejected: list[Rejected] = []
        gone: list[str] = []
        left: set[str] = set()  # documents that exist but do not meet [[source.where]]: gone for the mirror
        give = self.turns.give
        for doc in docs:
            give()
            if not doc.exists:
                gone.append(doc.id)
                continue
            if conditions and not matches(conditions, doc.data):
                gone.append(doc.id)
                left.add(doc.id)
                continue
            run.seen.add(doc.id)
            if doc.read_time is not None and (run.first_read_time is None or doc.read_time < run.first_read_time):
                run.first_read_time = doc.read_time
            try:
                row = map_document(fields, doc.data)
            except RejectError as exc:
                rejected.append(Rejected(doc.id, exc.reject, doc.update_time))
                continue
            valid.append((doc, row, content_hash(row)))

        opener = self.db.connect if run.dry_run else self.db.begin
        with opener() as conn:
            if held := self.mirror.held_among(conn, [doc.id for doc in docs]):
                # Kept out of every sync by a rollback (--hold) until released: not read, not removed.
                valid = [v for v in valid if v[0].id not in held]
                rejected = [r for r in rejected if r.doc_id not in held]
                gone = [i for i in gone if i not in held]
                run.seen.update(held)
            run.counts.fetched += len(docs) - len(gone) - len(held)
            run.counts.rejected += len(rejected)
            stored = self.mirror.load(conn, [doc.id for doc, _, _ in valid] + gone)
            # Asked per batch, not remembered per run: another run (a poll while a listener
            # reconnects, a force run) may have recorded or cleared a reject meanwhile.
            previously_rejected = self.mirror.rejected_among(conn, [doc.id for doc in docs])
            plans = []
            for doc, row, digest in valid:
                give()
                have = stored.get(doc.id)
                decision = self._decide(run, have, doc, row, digest, previously_rejected)
                found_deleted_at = have.deleted_at if have is not None else None
                plans.append(Planned(doc.id, decision, row, digest, doc.update_time, found_deleted_at))
            # Rows the database cannot take (too large for one statement, say) are rejects, not a failed batch.
            plans, unstorable = self.mirror.refuse_unstorable(conn, plans)
            rejected += unstorable
            run.counts.rejected += len(unstorable)
            for plan in plans:
                _count(plan.decision, run.counts)
            if run.dry_run:
                run.would_change.extend(_would_change(plans, rejected))
                return
            audit = self.mirror.write(conn, plans, run.run_id, run.now)
            if rejected:
                self.mirror.record_rejects(conn, rejected, run.run_id, run.now)
            cleared = [p.doc_id for p in plans if p.doc_id in previously_rejected]
            cleared += [i for i in gone if i in previously_rejected]
            if cleared:
                self.mirror.clear_rejects(conn, cleared)
            # hard mode removes a soft-deleted row too (marked by hand, or by an earlier soft mode)
            mode = self.config.target.delete_mode
            removable = [i for i in gone if i in stored and (mode == "hard" or not stored[i].deleted)]
            if removable and mode != "keep":
                audit += self.mirror.remove(conn, removable, mode, run.run_id, run.now)
                run.counts.deleted += len(removable)
            new_rejects = {r.doc_id for r in rejected} - previously_rejected
            if run.incremental:
                self._measure_lag(run, valid, plans)
            if watermark is None and run.incremental and docs:
                watermark = self._cursor_after(docs[-1], run)
            checkpoint: dict[StateKey, StateValue] = {}
            if watermark is not None:
                checkpoint[StateKey.WATERMARK] = watermark.dumps(scope_of(self.config))
            if run.lag_measured:
                checkpoint[StateKey.COMMIT_LAG_MS] = int(run.lag.total_seconds() * 1000)
                run.lag_measured = False
            if checkpoint:
                self.state.put(conn, checkpoint)
            self.state.record_progress(conn, run.row_id, run.counts.as_dict())
            _check_lock(run)
        if removable and mode != "keep":  # listen mode: removals arrive with the stream, logged as a force run's
            for doc_id in removable[:LOG_CHANGES_PER_BATCH]:
                why = "no longer meets [[source.where]]; " if doc_id in left else ""
                log.info("Employee deleted: %s (%s%s)", doc_id, why, "soft delete" if mode == "soft" else "row removed")
        self._announce(run, plans, rejected, audit, new_rejects)

    def _decide(
        self,
        run: _Run,
        stored: Any,
        doc: SourceDoc,
        row: dict[str, Any],
        digest: str,
        previously_rejected: set[str],
    ) -> Decision:
        decision = decide(stored, row, digest, naive_utc(doc.update_time), verify=run.verify)
        if run.full_read_at is None:
            # No complete read of this scope to compare with (a new table or mapping):
            # a difference is the new scope arriving, not drift.
            return replace(decision, repaired=False) if decision.repaired else decision
        if (
            decision.op is Op.INSERT
            and doc.id not in previously_rejected
            and (updated := naive_utc(doc.update_time)) is not None
            and updated < run.full_read_at
        ):
            # This version was there when the last complete read began, so that read wrote its row.
            return replace(decision, repaired=True)
        return decision

    def _measure_lag(self, run: _Run, valid: list[tuple[SourceDoc, dict[str, Any], str]], plans: list[Planned]) -> None:
        """A new version whose timestamp is older than the previous read was committed after it: a lag.

        The previous read returned every document changed after its resume
        point that had committed by then; one that turns up only now, with a
        timestamp before that read, took that long from timestamp to commit.
        """
        if run.read_since is None:
            return
        for (doc, _, _), plan in zip(valid, plans, strict=True):
            if not plan.decision.writes:
                continue
            stamp = self.source.updated_value(doc)
            if stamp is not None and stamp < run.read_since and run.read_since - stamp > run.lag:
                run.lag, run.lag_measured = run.read_since - stamp, True
                log.info(
                    "Measured a commit lag of %d ms (%s): resume points now keep %d ms",
                    (run.read_since - stamp).total_seconds() * 1000,
                    doc.id,
                    margin(self.config, run.lag).total_seconds() * 1000,
                )

    def _cursor_after(self, last: SourceDoc, run: _Run) -> Watermark | None:
        """Where the next incremental read starts, given the last document applied.

        A write that commits after our read can carry an updated_at below the
        read time (see ``watermark``), and would sort before the cursor. When
        the last document is within the margin of the read time, resume a
        margin earlier instead: re-reading a few unchanged documents costs
        reads, missing one would cost a row.
        """
        ts = self.source.updated_value(last)
        if ts is None:
            return None
        keep = margin(self.config, run.lag)
        if last.read_time is not None and ts > last.read_time - keep:
            return Watermark(last.read_time - keep, read_at=last.read_time)
        return Watermark(ts, last.id, read_at=last.read_time)

    def _announce(
        self,
        run: _Run,
        plans: list[Planned],
        rejected: list[Rejected],
        audit: list[dict[str, Any]],
        new_rejects: set[str],
    ) -> None:
        name_column = self.config.name_column
        names = {p.doc_id: p.row.get(name_column) for p in plans} if name_column else {}
        changes = tuple(
            ChangeRecord(
                a["changed_at"],
                a["document_id"],
                a["operation"],
                a["field"],
                a["old_value"],
                a["new_value"],
                names.get(a["document_id"]),
            )
            for a in audit
        )
        written = [p for p in plans if p.decision.op in (Op.UPDATE, Op.RESTORE) and not p.decision.repaired]
        for plan in written[:LOG_CHANGES_PER_BATCH]:
            log.info("Employee updated: %s (%s)", plan.doc_id, ", ".join(plan.decision.columns) or "hash only")
        if len(written) > LOG_CHANGES_PER_BATCH:
            log.info("... and %d more employees updated in this batch", len(written) - LOG_CHANGES_PER_BATCH)
        for plan in (p for p in plans if p.decision.repaired):
            run.repairs_logged += 1
            if run.repairs_logged <= LOG_REPAIRS_PER_RUN:
                log.warning("Employee repaired: %s (%s)", plan.doc_id, _repair_words(plan.decision))
            elif run.repairs_logged == LOG_REPAIRS_PER_RUN + 1:
                log.warning("... more employees repaired: the run's total is in its counts, each one in the audit")
        for r in rejected:
            if r.doc_id in new_rejects:
                log.warning("Employee rejected: %s: %s", r.doc_id, r.reject)
        self.bus.emit(
            BatchApplied(
                utcnow(),
                run.run_id,
                run.counts.as_dict(),
                changes,
                tuple((r.doc_id, str(r.reject)) for r in rejected),
                tuple(sorted(new_rejects)),
            )
        )

    # -- after a full read -----------------------------------------------------

    def _reconcile(self, run: _Run, watermark: Watermark | None) -> None:
        """Rows whose documents are gone follow delete_mode; the watermark moves to the read's start.

        Raises ``MassDeleteBlocked`` (after the rest is recorded) when the
        deletions would take more of the live rows than ``max_delete_fraction``.
        """
        mode = self.config.target.delete_mode
        with self.db.connect() as conn:
            gone, leftovers, live = self._absent_rows(conn, run.seen)
            stale_rejects = sorted(self.state.reject_ids(conn) - run.seen)
        blocked = None
        if not run.seen and (gone or leftovers or stale_rejects):
            log.warning(
                "Firestore returned no documents but the table holds %d rows and %d rejects: keeping them "
                "(check [source] project and collection)", len(gone), len(stale_rejects),
            )  # fmt: skip
            gone, leftovers, stale_rejects = [], [], []
        elif gone and mode != "keep" and not run.allow_mass_delete:
            blocked = self.mass_delete_check(len(gone), live, run.run_id, record=not run.dry_run)
            if blocked is not None:
                gone, leftovers, stale_rejects = [], [], []
        gone += leftovers
        if run.dry_run:
            if blocked is not None:
                run.would_change.append({"document_id": None, "operation": "blocked", "reason": blocked.message})
            elif mode != "keep":
                run.would_change.extend({"document_id": i, "operation": "delete"} for i in gone)
                run.counts.deleted += len(gone)
            return
        if mode != "keep":
            self._remove(run, gone)
        with self.db.begin() as conn:
            if stale_rejects:
                self.mirror.clear_rejects(conn, stale_rejects)
            checkpoint: dict[StateKey, StateValue] = {}
            if run.first_read_time is not None:
                # Every change after the read began has a later timestamp: resume there.
                start = run.first_read_time
                checkpoint[StateKey.FULL_READ] = json.dumps({"at": iso_precise(start), "scope": scope_of(self.config)})
                resume = start - margin(self.config, run.lag)
                if self.source.updated_path and (watermark is None or watermark.ts < resume):
                    checkpoint[StateKey.WATERMARK] = Watermark(resume, read_at=start).dumps(scope_of(self.config))
            if checkpoint:
                self.state.put(conn, checkpoint)
            if blocked is None:
                self.state.forget_in(conn, StateKey.MASS_DELETE_GUARD)
            _check_lock(run)
        if blocked is not None:
            raise blocked

    def mass_delete_check(
        self, deleting: int, live: int, run_id: int | None, record: bool = True
    ) -> MassDeleteBlocked | None:
        """The guard's answer to deleting ``deleting`` of ``live`` rows: None, or why not.

        Firestore looking nearly empty is more often a wrong project,
        collection, credential or rule than real deletions, so a run that
        would delete more than ``max_delete_fraction`` of the live rows
        deletes none of them until an operator says so. ``record`` keeps the
        trip in the state, where status and the console show it.
        """
        limit = self.config.target.max_delete_fraction
        if limit >= 1.0 or deleting <= limit * live:
            return None
        share = deleting / live if live else 1.0
        message = (
            f"mass-delete guard: the run would delete {deleting:,} of {live:,} live rows ({share:.0%}), more than "
            f"[target] max_delete_fraction = {limit:g}; it deleted none"
        )
        hint = (
            "if those documents really are gone, run `empsync sync --force --allow-mass-delete` (or POST "
            '/api/realtime-sync/trigger {"force": true, "allow_mass_delete": true}); otherwise check [source] '
            "project, database, collection and credentials"
        )
        if record:
            log.error("%s", message)
            tripped = {
                "run_id": run_id,
                "deleting": deleting,
                "live_rows": live,
                "fraction": limit,
                "at": iso(utcnow()),
            }
            try:
                self.state.set({StateKey.MASS_DELETE_GUARD: json.dumps(tripped)})
            except EmpsyncError:
                pass  # the run still ends failed with the message
        return MassDeleteBlocked(message, hint)

    def _remove(self, run: _Run, ids: list[str]) -> None:
        """Soft- or hard-delete rows in batch-sized transactions, announced like any batch."""
        mode = self.config.target.delete_mode
        size = self.config.target.batch_size
        for start in range(0, len(ids), size):
            chunk = ids[start : start + size]
            with self.db.begin() as conn:
                audit = self.mirror.remove(conn, chunk, mode, run.run_id, run.now)
                run.counts.deleted += len(chunk)
                self.state.record_progress(conn, run.row_id, run.counts.as_dict())
                _check_lock(run)
            for doc_id in chunk[:LOG_CHANGES_PER_BATCH]:
                log.info("Employee deleted: %s (%s)", doc_id, "soft delete" if mode == "soft" else "row removed")
            self.bus.emit(
                BatchApplied(
                    utcnow(),
                    run.run_id,
                    run.counts.as_dict(),
                    tuple(ChangeRecord(a["changed_at"], a["document_id"], "delete") for a in audit),
                )
            )

    # -- listen mode: micro-batches through the same path ----------------------

    def open_live(self, trigger: str = "listen") -> _Run:
        """A listen session: one run row whose counters grow with each micro-batch."""
        self.db.ensure_schema()
        self._write_unwritten_ends()
        run = _Run(
            run_id=self.state.start_run("listen", trigger),
            kind="listen",
            dry_run=False,
            incremental=False,
            now=utcnow(),
            lock=self.lock,
            lag=stored_lag(self.state.get_all(), StateKey.COMMIT_LAG_MS),
        )
        run.started = run.now
        return run

    def apply_live(
        self,
        run: _Run,
        docs: list[SourceDoc],
        watermark: Watermark | None,
        stream_reads: int = 0,
        lag: timedelta | None = None,
    ) -> None:
        """Apply a micro-batch; raises ``EmpsyncError`` and commits nothing on failure.

        ``stream_reads``: what the listener was billed since the last batch. The
        session counts those and its own gets, not the meter's total, which
        also holds the reads of the runs made meanwhile (catch-up, fallback polls).
        ``lag``: the largest commit lag the listener has measured, kept with the watermark.
        """
        run.counts.firestore_reads += stream_reads
        gone = [d.id for d in docs if not d.exists]
        if gone:
            # A document that left a filtered listen query may still exist: ask.
            before = self.source.meter.reads
            current = {d.id: d for d in self.source.get(gone)}
            run.counts.firestore_reads += self.source.meter.reads - before
            docs = [current.get(d.id, d) if not d.exists else d for d in docs]
        if lag is not None and lag > run.lag:
            run.lag, run.lag_measured = lag, True
        run.now = utcnow()
        self._apply(docs, run, watermark)

    def _absent_rows(self, conn: Connection, present: set[str]) -> tuple[list[str], list[str], int]:
        """Rows whose documents a complete read did not find: (live ones, leftovers, live rows in all).

        Leftovers are soft-deleted rows that ``hard`` mode removes too: marked
        deleted by hand, or by an earlier ``soft`` mode. They are no live rows,
        so the mass-delete guard does not weigh them. A held row stays until
        it is released.
        """
        hard = self.config.target.delete_mode == "hard"
        live = 0
        gone: list[str] = []
        leftovers: list[str] = []
        for doc_id, deleted in self.mirror.row_ids(conn):
            live += not deleted
            if doc_id not in present and (hard or not deleted):
                (leftovers if deleted else gone).append(doc_id)
        if (gone or leftovers) and (held := self.mirror.held_among(conn, gone + leftovers)):
            gone = [i for i in gone if i not in held]
            leftovers = [i for i in leftovers if i not in held]
        return gone, leftovers, live

    def reconcile_live(self, run: _Run, present: set[str]) -> int:
        """After a first snapshot of the whole collection: rows whose documents it lacks are gone.

        ``present`` holds every document the subscription has delivered, so a
        row is deleted only if its document was already gone when the stream
        began (deleted while no stream was open). The mass-delete guard and
        the empty-read rule apply as after a force run's read. Returns the
        rows deleted.
        """
        if self.config.target.delete_mode == "keep":
            return 0
        with self.db.connect() as conn:
            gone, leftovers, live = self._absent_rows(conn, present)
        if not (gone or leftovers):
            return 0
        if not present:
            log.warning("The stream lists no documents but the table holds %d rows: keeping them", len(gone))
            return 0
        if gone and self.mass_delete_check(len(gone), live, run.run_id) is not None:
            return 0
        gone += leftovers
        run.now = utcnow()
        log.info("Deleting %d employees whose documents went while no stream was open", len(gone))
        self._remove(run, gone)
        return len(gone)

    def close_live(self, run: _Run, status: str = "ok", message: str = "", stream_reads: int = 0) -> None:
        run.counts.firestore_reads += stream_reads  # e.g. an empty snapshot after the last batch
        duration = int((utcnow() - (run.started or run.now)).total_seconds() * 1000)  # open_live sets started
        self._end_run(run.row_id, status, run.counts.as_dict(), duration, message)

    # -- failure bookkeeping ---------------------------------------------------

    def _safe_finish(self, run_id: int, status: str, counts: Counts, result: RunResult, message: str) -> None:
        duration = int((utcnow() - (result.started_at or utcnow())).total_seconds() * 1000)
        self._end_run(run_id, status, counts.as_dict(), duration, message)

    def _end_run(self, run_id: int, status: str, counts: dict[str, int], duration_ms: int, message: str) -> bool:
        """Record how a run ended; if the database fails (often what failed the run), keep it for the next run."""
        try:
            self.state.finish_run(run_id, status, counts, duration_ms, message)
        except EmpsyncError as exc:
            if run_id not in self._unwritten_ends:
                log.warning("Could not record the end of run %d (%s); the next run records it", run_id, exc.message)
            self._unwritten_ends[run_id] = (status, counts, duration_ms, message)
            return False
        self._unwritten_ends.pop(run_id, None)
        return True

    def _write_unwritten_ends(self) -> None:
        """The ends of earlier runs the database could not take then (see ``_end_run``)."""
        for run_id, end in list(self._unwritten_ends.items()):  # the listen thread may add one meanwhile
            if self._end_run(run_id, *end):
                log.info("Recorded the end of run %d (%s), which the database could not take then", run_id, end[0])

    def _record_failure(self, result: RunResult) -> None:
        log.error("Employee %s failed: %s", "rollback" if result.kind == "rollback" else "sync", result.reason)
        if result.kind != "rollback":  # the last sync's status says how syncing goes, not how a rollback went
            try:
                self.state.set({StateKey.LAST_STATUS: "failed", StateKey.LAST_ERROR: result.reason[:500]})
            except EmpsyncError:
                pass
        self.bus.emit(SyncFailed(utcnow(), result.run_id, result.kind, result.reason, result.hint))


def _check_lock(run: _Run) -> None:
    """Inside a writing transaction, before it commits: a run whose lock is gone must not write.

    The lock lives on its own connection; when that connection ends (killed,
    server restarted) another process can take the lock at once, while this
    run's data connection works on. Checking before each commit keeps two
    processes from writing at the same time, and the rollback leaves the
    batch to whoever leads now.
    """
    if run.lock is not None and not run.lock.still_held():
        raise TargetError(
            "lost the sync lock (its database connection ended): the batch is rolled back",
            "the service syncs again once it holds the lock; the next run carries on from the last commit",
        )


def newest_per_id(docs: list[SourceDoc]) -> list[SourceDoc]:
    """One version per document: the newest, by update time and then by position.

    A document updated while a run reads can be read twice (at its old and
    its new place in an incremental read, or by a stream the client resumed);
    both versions in one batch would be compared with the same stored row.
    A listener's stream is in commit order, so there too the last one wins.
    """
    newest: dict[str, SourceDoc] = {}
    for doc in docs:
        held = newest.get(doc.id)
        if held is None or held.update_time is None or doc.update_time is None or doc.update_time >= held.update_time:
            newest.pop(doc.id, None)  # keep the order of the newest versions
            newest[doc.id] = doc
    return list(newest.values()) if len(newest) < len(docs) else docs


def _count(decision: Decision, counts: Counts) -> None:
    op = decision.op
    if decision.repaired:
        counts.repaired += 1
    elif op is Op.INSERT:
        counts.inserted += 1
    elif op in (Op.UPDATE, Op.RESTORE):
        counts.updated += 1
        counts.restored += op is Op.RESTORE
    elif op is Op.STALE:
        counts.stale += 1
        counts.unchanged += 1
    else:
        counts.unchanged += 1


def _repair_words(decision: Decision) -> str:
    if decision.op is Op.INSERT:
        return "its row was missing"
    what = ", ".join(decision.columns)
    if decision.op is Op.RESTORE:
        return "it was marked deleted" + (f"; {what}" if what else "")
    return what


def _would_change(plans: Iterable[Planned], rejected: Iterable[Rejected]) -> Iterator[dict[str, Any]]:
    from .mapping import display

    for plan in plans:
        if plan.decision.writes:
            yield {
                "document_id": plan.doc_id,
                "operation": "repair" if plan.decision.repaired else str(plan.decision.op),
                "fields": {c.column: {"old": display(c.old), "new": display(c.new)} for c in plan.decision.changes},
            }
    for r in rejected:
        yield {"document_id": r.doc_id, "operation": "reject", "field": r.reject.field, "reason": str(r.reject)}


def _batches(pages: Iterable[list[SourceDoc]], size: int) -> Iterator[list[SourceDoc]]:
    pending: list[SourceDoc] = []
    for page in pages:
        pending.extend(page)
        while len(pending) >= size:
            yield pending[:size]
            pending = pending[size:]
    if pending:
        yield pending


def _prefetch(pages: Iterator[list[SourceDoc]], stop: threading.Event, depth: int = 2) -> Iterator[list[SourceDoc]]:
    """Read pages on a helper thread, at most ``depth`` ahead of the consumer."""
    handoff: queue.Queue[list[SourceDoc] | BaseException | None] = queue.Queue(depth)  # None: the last page was read
    halt = threading.Event()

    def put(item: list[SourceDoc] | BaseException | None) -> bool:
        while not halt.is_set():
            try:
                handoff.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for page in pages:
                if stop.is_set():
                    put(Cancelled("stopped before the run ended", "the next run carries on from the last batch"))
                    return
                if not put(page):
                    return
            put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            put(exc)

    reader = threading.Thread(target=produce, name="empsync-reader", daemon=True)
    reader.start()
    try:
        while True:
            try:
                item = handoff.get(timeout=0.5)
            except queue.Empty:
                # A reader stuck in a retrying Firestore call must not hold up a shutdown.
                if stop.is_set() or (not reader.is_alive() and handoff.empty()):
                    raise Cancelled(
                        "stopped before the run ended", "the next run carries on from the last batch"
                    ) from None
                continue
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        halt.set()
