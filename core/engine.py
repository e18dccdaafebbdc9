"""One sync run: fetch → map → diff → apply → record, emitting events (DESIGN §5).

Reading overlaps writing: a reader thread fetches the next Firestore page
while this thread applies the current one, so a run costs little more than the
read itself. Each batch commits its rows, audit rows, rejects, run counters
and watermark in one transaction: a crash anywhere loses and duplicates
nothing, and the next run carries on from the last commit.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from . import state as keys
from .config import Config
from .db import Database
from .diff import Op, decide
from .errors import Cancelled, EmpsyncError, LockHeld, TargetError
from .events import BatchApplied, ChangeRecord, EventBus, SyncFailed, SyncFinished, SyncStarted
from .lock import SyncLock, make_lock
from .mapping import RejectError, content_hash, map_document
from .source import FirestoreSource, SourceDoc, Watermark
from .state import State, iso, parse_iso, utcnow
from .store import MirrorStore, Planned, Rejected, naive_utc

log = logging.getLogger("empsync.sync")

# How far before a read's time a resume point is put when changes were that
# recent: Firestore's commit order guarantees the rest; the margin covers the
# emulator's millisecond server timestamps with room to spare.
WATERMARK_MARGIN = timedelta(milliseconds=100)

# Individual "employee updated" lines per batch before they are summarised.
LOG_CHANGES_PER_BATCH = 20


@dataclass
class Counts:
    fetched: int = 0
    inserted: int = 0
    updated: int = 0  # restored rows count here too
    restored: int = 0
    deleted: int = 0
    unchanged: int = 0
    stale: int = 0
    rejected: int = 0
    firestore_reads: int = 0
    naive_reads: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)

    @property
    def written(self) -> int:
        return self.inserted + self.updated + self.deleted


@dataclass
class RunResult:
    status: str  # ok | skipped | failed
    reason: str = ""
    hint: str = ""
    forced: bool = False
    dry_run: bool = False
    kind: str = "normal"
    trigger: str = "cli"
    counts: Counts = field(default_factory=Counts)
    duration_ms: int = 0
    run_id: int | None = None
    started_at: datetime | None = None
    would_change: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "reason": self.reason or None,
            "forced": self.forced,
            "dry_run": self.dry_run,
            **self.counts.as_dict(),
            "duration_ms": self.duration_ms,
            "run_id": self.run_id,
            "kind": self.kind,
            "started_at": iso(self.started_at),
        }
        if self.dry_run:
            out["changes"] = self.would_change
        return out


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
    reject_ids: set[str] = field(default_factory=set)
    first_read_time: datetime | None = None
    started: datetime | None = None
    would_change: list[dict[str, Any]] = field(default_factory=list)
    # The sync lock the run holds; each writing transaction re-checks it before committing.
    lock: SyncLock | None = None


class SyncEngine:
    def __init__(
        self,
        config: Config,
        db: Database | None = None,
        source: FirestoreSource | None = None,
        bus: EventBus | None = None,
    ) -> None:
        self.config = config
        self.db = db or Database(config)
        self.state = State(self.db)
        self.mirror = MirrorStore(self.db)
        self.bus = bus or EventBus()
        self._source = source
        # Set by a service that holds the sync lock for this engine's listen sessions.
        self.lock: SyncLock | None = None

    @property
    def source(self) -> FirestoreSource:
        if self._source is None:  # built on first use: `empsync status` needs no client
            self._source = FirestoreSource(self.config)
        return self._source

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
        self.db.dispose()

    # -- scheduling questions ----------------------------------------------------

    def next_due(self, values: dict[str, str | None] | None = None) -> datetime | None:
        values = self.state.get_all() if values is None else values
        last = parse_iso(values.get(keys.LAST_SYNC_AT))
        if last is None:
            return None
        return last + timedelta(seconds=self.state.interval(values).seconds)

    def not_due_reason(self) -> str | None:
        """Why a scheduled run should not happen now, or None when it should."""
        values = self.state.get_all()
        if not self.config.sync.enabled:
            return "sync is disabled ([sync] enabled = false or FIRESTORE_REALTIME_ENABLED=false)"
        if values.get(keys.PAUSED) == "1":
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
    ) -> RunResult:
        """One sync run. ``when_due``: skip unless enabled, unpaused and due.

        With ``lock`` the caller already holds the sync lock (a leading
        service); otherwise the run takes it and gives it back.
        """
        started = time.monotonic()
        kind = "force" if force else "normal"
        result = RunResult(status="ok", forced=force, dry_run=dry_run, kind=kind, trigger=trigger, started_at=utcnow())
        own_lock: SyncLock | None = None
        try:
            self.db.ensure_schema()
            # A dry run answers "what would change now?": it is never "not due".
            if when_due and not force and not dry_run and (reason := self.not_due_reason()):
                result.status, result.reason = "skipped", reason
                return result
            if lock is None:
                own_lock = make_lock(self.db.engine, self.config.target.table)
                if not own_lock.acquire():
                    leader = self.state.get(keys.LEADER) or "another process"
                    raise LockHeld(
                        f"skipped: the sync lock is held by {leader}", "a service is running; it syncs on its own"
                    )
                self.state.close_interrupted_runs()
            elif not lock.still_held():
                raise LockHeld(
                    "skipped: the sync lock was lost (its database connection ended)",
                    "the service syncs again once it holds the lock",
                )
            self._run(result, stop or threading.Event(), lock or own_lock)
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
        except Exception as exc:  # noqa: BLE001 - a bug must fail the run, not the thread hosting it
            log.exception("unexpected error in the sync run")
            result.status, result.reason, result.exit_code = "failed", f"internal error: {type(exc).__name__}: {exc}", 1
        finally:
            if own_lock is not None:
                own_lock.release()
            result.duration_ms = int((time.monotonic() - started) * 1000)
        if result.status == "failed" and not dry_run:
            self._record_failure(result)
        return result

    def _run(self, result: RunResult, stop: threading.Event, lock: SyncLock | None = None) -> None:
        values = self.state.get_all()
        watermark = Watermark.loads(values.get(keys.WATERMARK))
        incremental = not result.forced and bool(self.source.updated_path) and watermark is not None
        run = _Run(
            run_id=None if result.dry_run else self.state.start_run(result.kind, result.trigger),
            kind=result.kind,
            dry_run=result.dry_run,
            incremental=incremental,
            now=result.started_at or utcnow(),
            lock=lock,
        )
        result.run_id = run.run_id
        reads_before = self.source.meter.reads
        with self.db.connect() as conn:
            run.reject_ids = self.state.reject_ids(conn)
        self.bus.emit(SyncStarted(utcnow(), run.run_id, run.kind, result.trigger, run.dry_run))
        log.info(
            "Starting employee sync (%s%s%s)",
            run.kind,
            ", incremental since " + iso(watermark.ts) if incremental and watermark else ", full read",
            ", dry run" if run.dry_run else "",
        )
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
                self._reconcile(run, values)
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
        with self.db.connect() as conn:
            sizes = self.state.row_counts(conn)
        run.counts.naive_reads = sizes["rows"] + sizes["unmirrored_rejects"]
        duration_ms = int((utcnow() - run.now).total_seconds() * 1000)
        self.state.finish_run(run.run_id, "ok", run.counts.as_dict(), duration_ms)
        stamp = {keys.LAST_SYNC_AT: iso(run.now), keys.LAST_STATUS: "ok", keys.LAST_ERROR: None}
        if result.forced:
            stamp[keys.LAST_FORCE_SYNC_AT] = iso(run.now)
        self.state.set(**stamp)
        self.state.prune_changes(self.config.sync.audit_retention_days)
        c = run.counts
        log.info(
            "Employee sync completed: %d fetched, %d inserted, %d updated, %d deleted, %d unchanged, %d rejected; "
            "%d Firestore reads (a full read: %d) in %d ms",
            c.fetched, c.inserted, c.updated, c.deleted, c.unchanged, c.rejected, c.firestore_reads, c.naive_reads, duration_ms,
        )  # fmt: skip
        result.duration_ms = duration_ms
        self.bus.emit(SyncFinished(utcnow(), result))

    # -- a batch ---------------------------------------------------------------

    def _apply(self, docs: list[SourceDoc], run: _Run, watermark: Watermark | None = None) -> None:
        """One batch in one transaction. Documents with ``exists`` False are gone (listen mode)."""
        fields = self.config.fields
        valid: list[tuple[SourceDoc, dict[str, Any], str]] = []
        rejected: list[Rejected] = []
        gone: list[str] = []
        for doc in docs:
            if not doc.exists:
                gone.append(doc.id)
                continue
            run.seen.add(doc.id)
            if run.first_read_time is None and doc.read_time is not None:
                run.first_read_time = doc.read_time
            try:
                row = map_document(fields, doc.data)
            except RejectError as exc:
                rejected.append(Rejected(doc.id, exc.reject, doc.update_time))
                continue
            valid.append((doc, row, content_hash(row)))
        run.counts.fetched += len(docs) - len(gone)
        run.counts.rejected += len(rejected)

        opener = self.db.connect if run.dry_run else self.db.begin
        with opener() as conn:
            stored = self.mirror.load(conn, [doc.id for doc, _, _ in valid] + gone)
            plans = [
                Planned(
                    doc.id,
                    decide(stored.get(doc.id), row, digest, naive_utc(doc.update_time)),
                    row,
                    digest,
                    doc.update_time,
                )
                for doc, row, digest in valid
            ]
            # Rows the database cannot take (too large for one statement, say) are rejects, not a failed batch.
            plans, unstorable = self.mirror.refuse_unstorable(conn, plans)
            rejected += unstorable
            run.counts.rejected += len(unstorable)
            for plan in plans:
                self._count(plan.decision.op, run.counts)
            if run.dry_run:
                run.would_change.extend(_would_change(plans, rejected))
                return
            audit = self.mirror.write(conn, plans, run.run_id, run.now)
            if rejected:
                self.mirror.record_rejects(conn, rejected, run.run_id, run.now)
            cleared = [p.doc_id for p in plans if p.doc_id in run.reject_ids]
            cleared += [i for i in gone if i in run.reject_ids]
            if cleared:
                self.mirror.clear_rejects(conn, cleared)
                run.reject_ids.difference_update(cleared)
            removable = [i for i in gone if i in stored and not stored[i].deleted]
            if removable and self.config.target.delete_mode != "keep":
                audit += self.mirror.remove(conn, removable, self.config.target.delete_mode, run.run_id, run.now)
                run.counts.deleted += len(removable)
            new_rejects = {r.doc_id for r in rejected} - run.reject_ids
            run.reject_ids.update(new_rejects)
            if watermark is None and run.incremental and docs:
                watermark = self._cursor_after(docs[-1])
            if watermark is not None:
                self.state.put(conn, {keys.WATERMARK: watermark.dumps()})
            self.state.record_progress(conn, run.run_id, run.counts.as_dict())
            _check_lock(run)
        mode = self.config.target.delete_mode
        if removable and mode != "keep":  # listen mode: removals arrive with the stream, logged as a force run's
            for doc_id in removable[:LOG_CHANGES_PER_BATCH]:
                log.info("Employee deleted: %s (%s)", doc_id, "soft delete" if mode == "soft" else "row removed")
        self._announce(run, plans, rejected, audit, new_rejects)

    def _cursor_after(self, last: SourceDoc) -> Watermark | None:
        """Where the next incremental read starts, given the last document applied.

        A write that commits after our read can carry an updated_at a hair
        below the read time (the emulator keeps milliseconds), and could sort
        before the cursor. When the last document is that close to the read
        time, resume a margin earlier instead: re-reading a few unchanged
        documents costs reads, missing one would cost a row.
        """
        ts = self.source.updated_value(last)
        if ts is None:
            return None
        if last.read_time is not None and ts > last.read_time - WATERMARK_MARGIN:
            return Watermark(last.read_time - WATERMARK_MARGIN)
        return Watermark(ts, last.id)

    @staticmethod
    def _count(op: Op, counts: Counts) -> None:
        if op is Op.INSERT:
            counts.inserted += 1
        elif op in (Op.UPDATE, Op.RESTORE):
            counts.updated += 1
            counts.restored += op is Op.RESTORE
        elif op is Op.STALE:
            counts.stale += 1
            counts.unchanged += 1
        else:
            counts.unchanged += 1

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
        written = [p for p in plans if p.decision.op in (Op.UPDATE, Op.RESTORE)]
        for plan in written[:LOG_CHANGES_PER_BATCH]:
            log.info("Employee updated: %s (%s)", plan.doc_id, ", ".join(plan.decision.columns) or "hash only")
        if len(written) > LOG_CHANGES_PER_BATCH:
            log.info("... and %d more employees updated in this batch", len(written) - LOG_CHANGES_PER_BATCH)
        for r in rejected:
            if r.doc_id in new_rejects:
                log.warning("Employee rejected: %s: %s", r.doc_id, r.reject)
        self.bus.emit(
            BatchApplied(
                utcnow(), run.run_id, run.counts.as_dict(), changes, tuple((r.doc_id, str(r.reject)) for r in rejected)
            )
        )

    # -- after a full read -----------------------------------------------------

    def _reconcile(self, run: _Run, values: dict[str, str | None]) -> None:
        """Rows whose documents are gone follow delete_mode; the watermark moves to the read's start."""
        mode = self.config.target.delete_mode
        with self.db.connect() as conn:
            gone = [doc_id for doc_id in self.mirror.live_ids(conn) if doc_id not in run.seen]
        stale_rejects = sorted(run.reject_ids - run.seen)
        if gone and not run.seen:
            log.warning(
                "Firestore returned no documents but the table holds %d rows: not deleting them "
                "(check [source] project and collection)", len(gone),
            )  # fmt: skip
            gone = []
        if run.dry_run:
            if mode != "keep":
                run.would_change.extend({"document_id": i, "operation": "delete"} for i in gone)
                run.counts.deleted += len(gone)
            return
        size = self.config.target.batch_size
        if mode != "keep":
            for start in range(0, len(gone), size):
                chunk = gone[start : start + size]
                with self.db.begin() as conn:
                    audit = self.mirror.remove(conn, chunk, mode, run.run_id, run.now)
                    run.counts.deleted += len(chunk)
                    self.state.record_progress(conn, run.run_id, run.counts.as_dict())
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
        with self.db.begin() as conn:
            if stale_rejects:
                self.mirror.clear_rejects(conn, stale_rejects)
            if self.source.updated_path and run.first_read_time is not None:
                # Every change after the read began has a later timestamp: resume there.
                current = Watermark.loads(values.get(keys.WATERMARK))
                resume = run.first_read_time - WATERMARK_MARGIN
                if current is None or current.ts < resume:
                    self.state.put(conn, {keys.WATERMARK: Watermark(resume).dumps()})
            _check_lock(run)

    # -- listen mode: micro-batches through the same path ----------------------

    def open_live(self, trigger: str = "listen") -> _Run:
        """A listen session: one run row whose counters grow with each micro-batch."""
        self.db.ensure_schema()
        run = _Run(
            run_id=self.state.start_run("listen", trigger),
            kind="listen",
            dry_run=False,
            incremental=False,
            now=utcnow(),
            lock=self.lock,
        )
        with self.db.connect() as conn:
            run.reject_ids = self.state.reject_ids(conn)
        run.started = run.now
        return run

    def apply_live(self, run: _Run, docs: list[SourceDoc], watermark: Watermark | None, stream_reads: int = 0) -> None:
        """Apply a micro-batch; raises ``EmpsyncError`` and commits nothing on failure.

        ``stream_reads``: what the listener was billed since the last batch. The
        session counts those and its own gets, not the meter's total, which
        also holds the reads of the runs made meanwhile (catch-up, fallback polls).
        """
        run.counts.firestore_reads += stream_reads
        gone = [d.id for d in docs if not d.exists]
        if gone:
            # A document that left a filtered listen query may still exist: ask.
            before = self.source.meter.reads
            current = {d.id: d for d in self.source.get(gone)}
            run.counts.firestore_reads += self.source.meter.reads - before
            docs = [current.get(d.id, d) if not d.exists else d for d in docs]
        run.now = utcnow()
        self._apply(docs, run, watermark)

    def close_live(self, run: _Run, status: str = "ok", message: str = "", stream_reads: int = 0) -> None:
        run.counts.firestore_reads += stream_reads  # e.g. an empty snapshot after the last batch
        try:
            duration = int((utcnow() - run.started).total_seconds() * 1000)
            self.state.finish_run(run.run_id, status, run.counts.as_dict(), duration, message)
        except EmpsyncError:
            pass  # the next leader marks it interrupted

    # -- failure bookkeeping ---------------------------------------------------

    def _safe_finish(self, run_id: int, status: str, counts: Counts, result: RunResult, message: str) -> None:
        try:
            duration = int((utcnow() - (result.started_at or utcnow())).total_seconds() * 1000)
            self.state.finish_run(run_id, status, counts.as_dict(), duration, message)
        except EmpsyncError:
            pass  # the database is what failed; the next run marks this one interrupted

    def _record_failure(self, result: RunResult) -> None:
        log.error("Employee sync failed: %s", result.reason)
        try:
            self.state.set(**{keys.LAST_STATUS: "failed", keys.LAST_ERROR: result.reason[:500]})
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


def _would_change(plans: Iterable[Planned], rejected: Iterable[Rejected]) -> Iterator[dict[str, Any]]:
    from .mapping import display

    for plan in plans:
        if plan.decision.writes:
            yield {
                "document_id": plan.doc_id,
                "operation": str(plan.decision.op),
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


_DONE = object()


def _prefetch(pages: Iterator[list[SourceDoc]], stop: threading.Event, depth: int = 2) -> Iterator[list[SourceDoc]]:
    """Read pages on a helper thread, at most ``depth`` ahead of the consumer."""
    handoff: queue.Queue = queue.Queue(depth)
    halt = threading.Event()

    def put(item: object) -> bool:
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
            put(_DONE)
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
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        halt.set()
