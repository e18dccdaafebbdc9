"""Listen mode's Firestore side: an ``on_snapshot`` stream into a bounded hand-off.

The client calls back on its own thread; the callback only converts changes
to ``SourceDoc`` and appends them, so the gRPC consumer never waits on the
database. The service's worker takes micro-batches from here and applies
them through the engine. The Python client can stop silently, so the worker
also asks ``needs_restart`` on every tick (the watchdog).

Cost: with ``updated_field`` the listener watches only documents changed
since the committed watermark, so a (re)subscription costs the documents
changed since then, not the collection. A document outside that window is
outside the watched set, so its deletion is not reported: the force run
finds it. ``listen_scope = "collection"`` watches the whole collection
instead, every deletion arriving at once, for a whole read of the collection
per (re)subscription; that is also the only way without ``updated_field``.

Liveness: the client would reopen a broken stream on its own, at once and
without end (see ``firestore_compat.no_reopen``); streams here end instead, and the watchdog
re-subscribes with backoff. A stream can also hang on a dead link, so the
listener watches its gRPC channel: one that has been in TRANSIENT_FAILURE for
``LINK_GRACE_S`` counts as a lost stream. A stream that delivers no snapshot
and no resume-token move for ``SILENCE_S`` counts as dead too (the emulator
sends no heartbeats, so on a quiet collection this re-subscribes once a
``SILENCE_S``; with ``updated_field`` that costs the documents of the last
applied snapshot, at least one read). Where a re-subscription reads the whole
collection, the silence bound is ``SILENCE_WHOLE_S``: the channel check
covers outages.

Resume points: a change can reach the stream well after the time in its
``updated_field``: on the emulator under load, a server timestamp is taken
seconds before the write commits and shows up in a snapshot. So the listener
measures that delivery lag (snapshot read time minus the oldest
``updated_field`` in a snapshot after the first) and keeps ``margin``, twice
the largest lag seen (see ``watermark.margin``; the stored lag of earlier
sessions and polls counts too).
The watermark moves to a snapshot's read time minus the margin, and a
subscription starts the margin before the stored watermark, which covers the
polled runs' resume points too. Re-reading the documents of that window costs
a few reads; skipping one would cost a row until the force run.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .firestore_compat import grpc_channel, no_reopen, quiet_stream_endings, unordered
from .source import FirestoreSource, SourceDoc, to_doc
from .watermark import Watermark, margin

if TYPE_CHECKING:
    import grpc
    from google.cloud.firestore_v1.base_document import DocumentSnapshot
    from google.cloud.firestore_v1.query import Query
    from google.cloud.firestore_v1.watch import DocumentChange

log = logging.getLogger("empsync.listen")

# A stream with no snapshot and no heartbeat for this long is treated as dead.
SILENCE_S = 60.0
# The same where a re-subscription costs the whole collection.
SILENCE_WHOLE_S = 900.0
# A channel that cannot reach the server for this long means the stream is lost.
LINK_GRACE_S = 2.0
# Re-subscribe from a newer watermark this often (or once this many changes came after the
# initial snapshot), so the watched result set stays small: the emulator sends every watched
# document again on every write (1,000 messages a write at 1,000 documents).
REFRESH_S = 600.0
REFRESH_DOCS = 5_000
# Deliveries of deletions held for a retry at most (ids; beyond it the force run finds the rest).
MAX_REMOVALS = 100_000


@dataclass(frozen=True)
class LiveItem:
    doc: SourceDoc
    # Set on the last change of a snapshot: once it is applied, everything up
    # to this read time is in the database, so the watermark may move there.
    snapshot_read_time: datetime | None = None
    # Set on the last change of the first snapshot of the whole collection: once it
    # is applied, rows of documents it did not list can go (see ``present``).
    completes_collection: bool = False


class Listener:
    def __init__(self, source: FirestoreSource, max_pending: int, scope: str = "changes") -> None:
        self.source = source
        self.max_pending = max_pending
        self.scope = scope
        self._cond = threading.Condition()
        self._pending: list[LiveItem] = []
        self._watch = None
        self._subscribed_at = 0.0
        self._last_signal = 0.0
        self._last_token: bytes | None = None
        self._delivered = 0
        self._first = True
        self._generation = 0
        self._channel = None
        self._link_down_since: float | None = None
        self.overflowed = False
        # Snapshots delivered by the current subscription: 0 until it is confirmed.
        self.heard = 0
        # The largest delivery lag seen (see the module docstring); the caller seeds it with the stored one.
        self.max_lag = timedelta(0)
        self._unbilled = 0  # reads metered but not yet counted in the session's run row
        # Deletions the stream delivered and no batch has committed yet, in order. They outlive
        # a failed batch, a re-subscription and an overflow, which all drop the hand-off: a new
        # subscription lists only documents that exist, so nothing would deliver them again.
        self._removed: dict[str, None] = {}
        # Every document the current subscription delivered, for a whole-collection stream.
        self._present: set[str] = set()

    @property
    def keeps_watermark(self) -> bool:
        """Whether snapshots move the watermark (and their delivery lag can be measured)."""
        return bool(self.source.updated_path)

    @property
    def watches_changes_only(self) -> bool:
        return self.keeps_watermark and self.scope == "changes"

    @property
    def watches_collection(self) -> bool:
        """Whether a subscription's first snapshot lists every document of the collection."""
        return not self.watches_changes_only

    @property
    def margin(self) -> timedelta:
        """How far before a snapshot's read time every change is known to be in."""
        return margin(self.source.config, self.max_lag)

    # -- subscription (worker thread) ------------------------------------------

    def subscribe(self, since: Watermark | None) -> None:
        self.close()
        query = self.query(since)
        with self._cond:
            self._pending.clear()
            self._present = set()
            self.overflowed = False
            self._generation += 1
        self._first = True
        self._delivered = 0
        self.heard = 0
        self._watch_channel()
        now = time.monotonic()
        self._subscribed_at = self._last_signal = now
        self._last_token = None
        quiet_stream_endings(lambda exc: log.debug("Firestore stream ended: %s", exc))
        with self.source.translate(), no_reopen():
            self._watch = unordered(query).on_snapshot(functools.partial(self._on_snapshot, self._generation))

    def query(self, since: Watermark | None) -> Query:
        """What the stream watches: the mapped fields of the documents changed since ``since``.

        No ``order_by``: the client sorts each snapshot's additions with the
        query's comparator, which fails on an ``order_by("__name__")`` or a
        nested field path and kills the stream's thread. A stream needs no
        order, and the filter alone keeps it to the changed documents.
        """
        # Conditions: a whole-collection stream carries them (what does not meet them is never
        # billed; a document that stops meeting them leaves the query, reported REMOVED, and the
        # engine asks for it and tests it). A stream of changes does not: a document changed to
        # not meet them would never enter it, so it watches every change and the engine tests each,
        # as incremental polls do.
        if not (self.watches_changes_only and since is not None):
            return self.source.filtered_query()
        from google.cloud.firestore_v1.base_query import FieldFilter

        floor = since.ts - self.margin
        return self.source.base_query().where(filter=FieldFilter(self.source.updated_path, ">=", floor))

    def close(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            try:
                watch.unsubscribe()
            except Exception:  # noqa: BLE001 - closing a broken stream may raise; it is closed either way
                pass

    @property
    def subscribed(self) -> bool:
        return self._watch is not None

    def _watch_channel(self) -> None:
        """Follow the client's gRPC channel state (once; the channel lives as long as the client)."""
        if self._channel is not None:
            return
        try:
            channel = grpc_channel(self.source.client)
            channel.subscribe(self._on_channel, try_to_connect=False)
        except Exception:  # noqa: BLE001 - no channel to watch: silence remains the bound
            log.debug("cannot watch the Firestore channel's state; relying on the silence bound")
            return
        self._channel = channel

    def _on_channel(self, state: grpc.ChannelConnectivity) -> None:  # on a gRPC thread
        import grpc

        if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN):
            if self._link_down_since is None:
                self._link_down_since = time.monotonic()
        elif state == grpc.ChannelConnectivity.READY:
            self._link_down_since = None

    def needs_restart(self) -> str | None:
        """Why the stream should be re-subscribed now, or None while it is healthy."""
        watch = self._watch
        if watch is None:
            return "not subscribed"
        if self.overflowed:
            return "the hand-off queue filled up"
        if not watch.is_active:
            return "the stream stopped"
        now = time.monotonic()
        down_since = self._link_down_since
        if down_since is not None and now - down_since > LINK_GRACE_S:
            return "lost the connection to Firestore"
        token = getattr(watch, "resume_token", None)
        if token != self._last_token:  # heartbeats move the resume token without a callback
            self._last_token, self._last_signal = token, now
        silence = SILENCE_S if self.watches_changes_only else SILENCE_WHOLE_S
        if now - self._last_signal > silence:
            return f"no snapshot or heartbeat for {silence:.0f} s"
        if self.watches_changes_only and (now - self._subscribed_at > REFRESH_S or self._delivered > REFRESH_DOCS):
            return "refresh from a newer watermark"
        return None

    # -- the client's callback thread ------------------------------------------

    def _on_snapshot(
        self, generation: int, _docs: list[DocumentSnapshot[Any]], changes: list[DocumentChange], read_time: datetime
    ) -> None:
        if generation != self._generation:
            return  # a closed subscription's last callback, still running on its thread
        items = []
        for change in changes:
            doc = to_doc(change.document)
            if change.type.name == "REMOVED":
                doc = SourceDoc(doc.id, {}, doc.update_time, read_time, exists=False)
            else:
                doc = SourceDoc(doc.id, doc.data, doc.update_time, read_time)
            items.append(LiveItem(doc))
        initial, self._first = self._first, False
        if not initial and items and read_time is not None and self.keeps_watermark:
            stamps = [self.source.updated_value(i.doc) for i in items if i.doc.exists]
            oldest = min((t for t in stamps if t is not None), default=None)
            if oldest is not None and read_time - oldest > self.max_lag:
                self.max_lag = read_time - oldest
        # Billed: each document delivered; an empty initial snapshot costs one read.
        billed = len(items) if items or not initial else 1
        self.source.meter.add(billed)
        self.heard += 1
        self._last_signal = time.monotonic()
        if items:
            items[-1] = LiveItem(items[-1].doc, read_time, initial and self.watches_collection)
        with self._cond:
            self._unbilled += billed
            if generation != self._generation:
                return
            for item in items:
                if item.doc.exists:
                    self._removed.pop(item.doc.id, None)  # a newer version supersedes a pending deletion
                    self._present.add(item.doc.id)
                elif len(self._removed) < MAX_REMOVALS:
                    self._removed[item.doc.id] = None
            if self.overflowed:
                return  # the catch-up run reads these
            # Bounded, but for a subscription's initial snapshot: the client holds
            # that in memory in full anyway, and refusing it would only repeat it.
            if not initial and len(self._pending) + len(items) > self.max_pending:
                self.overflowed = True
                self._pending.clear()
                self._cond.notify_all()
                return
            if not items:
                return
            if not initial:  # the set grows by these; a refresh cannot shrink the initial ones away
                self._delivered += len(items)
            self._pending.extend(items)
            self._cond.notify_all()

    # -- the worker's side -----------------------------------------------------

    def take(self, max_items: int, wait: float) -> list[LiveItem]:
        """Up to ``max_items`` pending changes, waiting at most ``wait`` for the first."""
        with self._cond:
            if not self._pending and wait > 0:
                self._cond.wait(wait)
            batch, self._pending = self._pending[:max_items], self._pending[max_items:]
            return batch

    def removals(self, max_items: int) -> list[SourceDoc]:
        """Delivered deletions not yet committed, as gone documents (to apply when the hand-off is empty)."""
        with self._cond:
            ids = list(self._removed)[:max_items]
        return [SourceDoc(i, {}, None, exists=False) for i in ids]

    def removals_committed(self, ids: list[str]) -> None:
        with self._cond:
            for doc_id in ids:
                self._removed.pop(doc_id, None)

    def present(self) -> set[str]:
        """Every document the current subscription has delivered (for a whole-collection stream)."""
        with self._cond:
            return set(self._present)

    def take_reads(self) -> int:
        """The reads the stream was billed since the last call (for the session's run row)."""
        with self._cond:
            reads, self._unbilled = self._unbilled, 0
            return reads

    @property
    def backlog(self) -> int:
        with self._cond:
            return len(self._pending)
