"""Listen mode's Firestore side: an ``on_snapshot`` stream into a bounded hand-off.

The client calls back on its own thread; the callback only converts changes
to ``SourceDoc`` and appends them, so the gRPC consumer never waits on the
database. The service's worker takes micro-batches from here and applies
them through the engine. The Python client can stop silently, so the worker
also asks ``needs_restart`` on every tick (the watchdog).

Cost: with ``updated_field`` the listener watches only documents changed
since the committed watermark, so a (re)subscription costs the documents
changed since then, not the collection. Without it, every (re)subscription
reads the whole collection once.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from .source import FirestoreSource, SourceDoc, Watermark, to_doc

log = logging.getLogger("empsync.listen")

# A stream with no snapshot and no heartbeat for this long is treated as dead.
SILENCE_S = 60.0
# Re-subscribe from a newer watermark this often, so the watched result set stays small.
REFRESH_S = 600.0
REFRESH_DOCS = 5_000


@dataclass(frozen=True)
class LiveItem:
    doc: SourceDoc
    # Set on the last change of a snapshot: once it is applied, everything up
    # to this read time is in the database, so the watermark may move there.
    snapshot_read_time: datetime | None = None


class Listener:
    def __init__(self, source: FirestoreSource, max_pending: int) -> None:
        self.source = source
        self.max_pending = max_pending
        self._cond = threading.Condition()
        self._pending: list[LiveItem] = []
        self._watch = None
        self._subscribed_at = 0.0
        self._last_signal = 0.0
        self._last_token: bytes | None = None
        self._delivered = 0
        self._first = True
        self.overflowed = False
        self.snapshots = 0

    @property
    def watches_changes_only(self) -> bool:
        return bool(self.source.updated_path)

    # -- subscription (worker thread) ------------------------------------------

    def subscribe(self, since: Watermark | None) -> None:
        self.close()
        if self.watches_changes_only and since is not None:
            query = self.source.changed_query(Watermark(since.ts))
        else:
            query = self.source.base_query()
        with self._cond:
            self._pending.clear()
            self.overflowed = False
        self._first = True
        self._delivered = 0
        now = time.monotonic()
        self._subscribed_at = self._last_signal = now
        self._last_token = None
        with self.source.translate():
            self._watch = query.on_snapshot(self._on_snapshot)

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
        token = getattr(watch, "resume_token", None)
        if token != self._last_token:  # heartbeats move the resume token without a callback
            self._last_token, self._last_signal = token, now
        if now - self._last_signal > SILENCE_S:
            return f"no snapshot or heartbeat for {SILENCE_S:.0f} s"
        if self.watches_changes_only and (now - self._subscribed_at > REFRESH_S or self._delivered > REFRESH_DOCS):
            return "refresh from a newer watermark"
        return None

    # -- the client's callback thread ------------------------------------------

    def _on_snapshot(self, _docs, changes, read_time) -> None:
        items = []
        for change in changes:
            doc = to_doc(change.document)
            if change.type.name == "REMOVED":
                doc = SourceDoc(doc.id, {}, doc.update_time, read_time, exists=False)
            else:
                doc = SourceDoc(doc.id, doc.data, doc.update_time, read_time)
            items.append(LiveItem(doc))
        # Billed: each document delivered; an empty initial snapshot costs one read.
        self.source.meter.add(len(items) if items or not self._first else 1)
        self._first = False
        self.snapshots += 1
        self._last_signal = time.monotonic()
        marker = LiveItem(items[-1].doc, read_time) if items else None
        if marker is not None:
            items[-1] = marker
        with self._cond:
            if self.overflowed:
                return  # the catch-up run will read these
            # Always accept into an empty queue (a large initial snapshot is
            # already in the client's memory); beyond that, stay bounded.
            if self._pending and len(self._pending) + len(items) > self.max_pending:
                self.overflowed = True
                self._pending.clear()
                self._cond.notify_all()
                return
            if not items:
                return
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

    @property
    def backlog(self) -> int:
        with self._cond:
            return len(self._pending)
