"""Listen mode's worker side: subscribe, watch the stream, apply micro-batches.

Driven by the service's worker thread, one ``tick`` at a time. The state is
``listening`` only once the current subscription has delivered a snapshot;
from a lost stream until then it is ``reconnecting``, and after
``ATTEMPTS_BEFORE_FALLBACK`` failed subscriptions in a row ``polling-fallback``
(the service's scheduled polls run whenever the state is not ``listening``).
Correctness
never depends on the stream: the watermark moves only when a whole snapshot
is committed, a re-subscription starts from the committed watermark, an
overflowing hand-off becomes a catch-up run, a deletion the stream delivered
is kept until a batch commits it (whatever happens to the hand-off), a
whole-collection subscription's first snapshot deletes the rows of documents
that went while no stream was open, and the scheduled force run reconciles
everything every ``force_interval``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

from .backoff import backoff_delay
from .engine import SyncEngine, newest_per_id
from .errors import EmpsyncError
from .listen import Listener, LiveItem
from .state import StateKey
from .times import naive_utc, utcnow
from .watermark import Watermark, scope_of, stored_lag

log = logging.getLogger("empsync.listen")

LISTENING, RECONNECTING, FALLBACK, STOPPED = "listening", "reconnecting", "polling-fallback", "stopped"
# Failed (re)subscriptions before the status admits that polling has taken over.
ATTEMPTS_BEFORE_FALLBACK = 3
# Hand-off bound, in batches: past it the listener asks for a catch-up run instead.
PENDING_BATCHES = 20


def backoff(failures: int) -> float:
    return backoff_delay(failures, base=1.0, cap=30.0)


class LiveMirror:
    def __init__(
        self,
        engine: SyncEngine,
        catch_up: Callable[[], Any],
        on_state: Callable[[str, str], None],
    ) -> None:
        self.engine = engine
        self.catch_up = catch_up
        self.on_state = on_state
        self.batch_size = engine.config.target.batch_size
        self.listener = Listener(
            engine.source, max_pending=self.batch_size * PENDING_BATCHES, scope=engine.config.sync.listen_scope
        )
        self.state = STOPPED
        self.detail = ""
        self.reconnects = 0
        self.lag_ms: int | None = None
        self.last_applied_at: str | None = None
        self._run = None
        self.lags = LagSamples(engine)
        self._started = False
        self._failures = 0
        self._retry_at = 0.0

    @property
    def healthy(self) -> bool:
        return self.state == LISTENING

    def status(self) -> dict[str, Any]:
        if self.listener.watches_changes_only:
            cost = (
                "each (re)subscription reads only the documents changed since the watermark; "
                "deletions of documents unchanged since then are found by the force run"
            )
        elif self.listener.keeps_watermark:
            cost = "listen_scope = collection: each (re)subscription reads the whole collection"
        else:
            cost = "no updated_field: each (re)subscription reads the whole collection"
        return {
            "listen_state": self.state,
            "listen_detail": self.detail,
            "lag_ms": self.lag_ms,
            "listen_backlog": self.listener.backlog,
            "listen_reconnects": self.reconnects,
            "listen_last_applied_at": self.last_applied_at,
            "listen_cost": cost,
        }

    # -- driven by the worker ----------------------------------------------------

    def tick(self, wait: float) -> None:
        reason = self.listener.needs_restart()
        if reason is not None:
            if time.monotonic() < self._retry_at:
                time.sleep(max(0.0, min(wait, self._retry_at - time.monotonic())))
                return
            self._restart(reason)
            if not self.listener.subscribed:
                return
        elif self.state != LISTENING and self.listener.heard:
            self._failures = 0
            self._set(LISTENING, self._where())
        items = self.listener.take(self.batch_size, wait)
        if items:
            self._apply(items)
        elif retry := self.listener.removals(self.batch_size):
            # Deletions whose batch never committed (it failed, or the hand-off was dropped).
            self._apply([LiveItem(doc) for doc in retry])

    def stop(self, status: str = "ok", message: str = "") -> None:
        self.listener.close()
        self.lags.flush()
        if self._run is not None:
            self.engine.close_live(self._run, status, message, self.listener.take_reads())
            self._run = None
        self._set(STOPPED, "")

    # -- internals -------------------------------------------------------------

    def _where(self) -> str:
        return "changes since the watermark" if self.listener.watches_changes_only else "the whole collection"

    def _restart(self, reason: str) -> None:
        first = not self._started
        overflowed = self.listener.overflowed
        unheard = self.listener.subscribed and not self.listener.heard and not overflowed
        self.listener.close()
        if unheard:
            # This subscription never got going: a failed attempt, retried with backoff.
            self._failed(f"{reason} before the first snapshot")
            return
        if not first:
            routine = reason.startswith("refresh")  # a planned move to a newer watermark, not a fault
            if not routine:
                self.reconnects += 1
            if reason != "not subscribed":  # after a failed attempt the retry was announced already
                log.log(logging.DEBUG if routine else logging.WARNING, "Re-subscribing: %s", reason)
                if not routine:
                    self._set(RECONNECTING, reason)
        try:
            if self._run is None:
                self._run = self.engine.open_live()
            if overflowed:
                log.warning("Listener fell behind: catching up with a run before listening again")
                self.catch_up()
            values = self.engine.state.get_all()
            watermark = Watermark.loads(values.get(StateKey.WATERMARK), scope_of(self.engine.config))
            self.listener.max_lag = max(self.listener.max_lag, stored_lag(values, StateKey.COMMIT_LAG_MS))
            self.listener.subscribe(watermark)
        except EmpsyncError as exc:
            self._failed(exc.message)
            return
        self._started = True
        if first:
            log.info("Listening to %s", self._where())
        if self.state != LISTENING:
            # Confirmed by the first snapshot (see tick); until then, not yet listening.
            state = RECONNECTING if self._failures < ATTEMPTS_BEFORE_FALLBACK else FALLBACK
            self._set(state, f"subscribing to {self._where()}")

    def _apply(self, items: list[LiveItem]) -> None:
        markers = [i.snapshot_read_time for i in items if i.snapshot_read_time is not None]
        watermark = None
        if markers and self.listener.keeps_watermark:
            watermark = Watermark(max(markers) - self.listener.margin, read_at=max(markers))
        docs = newest_per_id([i.doc for i in items])
        try:
            self.engine.apply_live(self._run, docs, watermark, self.listener.take_reads(), lag=self.listener.max_lag)
            self.listener.removals_committed([d.id for d in docs if not d.exists])
            if any(i.completes_collection for i in items):
                self.engine.reconcile_live(self._run, self.listener.present())
        except EmpsyncError as exc:
            # Nothing of the batch committed and the watermark did not move: the
            # re-subscription delivers its changes again, and its deletions wait in
            # the listener until a batch commits them.
            log.error("Listen batch failed: %s", exc.message)
            self.listener.close()
            self._failed(exc.message)
            return
        now = utcnow()
        written = [naive_utc(d.update_time) for d in docs if d.exists and d.update_time is not None]
        if written:
            self.lag_ms = max(0, int((now - max(written)).total_seconds() * 1000))
            self.lags.add(self._run, now, [max(0, int((now - t).total_seconds() * 1000)) for t in written])
        self.last_applied_at = now.isoformat(timespec="milliseconds") + "Z"

    def _failed(self, why: str) -> None:
        self._failures += 1
        delay = backoff(self._failures)
        self._retry_at = time.monotonic() + delay
        state = RECONNECTING if self._failures < ATTEMPTS_BEFORE_FALLBACK else FALLBACK
        self._set(state, f"{why}; retrying in {delay:.0f} s")

    def _set(self, state: str, detail: str) -> None:
        if (state, detail) != (self.state, self.detail):
            self.state, self.detail = state, detail
            self.on_state(state, detail)


class LagSamples:
    """Write-to-row lag of each document applied, per hour and session, stored as that hour's percentiles.

    Samples stay in memory for the current hour only (at most ``MAX_SAMPLES``,
    a uniform reservoir beyond), and the hour's row is written at most once
    every ``FLUSH_S`` and when the hour or the session ends: a few writes an
    hour, never one per batch.
    """

    MAX_SAMPLES = 20_000
    FLUSH_S = 60.0

    def __init__(self, engine: SyncEngine) -> None:
        self.engine = engine
        self.hour = None
        self.run_id: int | None = None
        self.samples: list[int] = []
        self.seen = 0
        self._flushed = time.monotonic()
        self._random = random.Random()

    def add(self, run, now, lags: list[int]) -> None:
        hour = now.replace(minute=0, second=0, microsecond=0)
        if (hour, run.run_id) != (self.hour, self.run_id):
            self.flush()
            self.hour, self.run_id, self.samples, self.seen = hour, run.run_id, [], 0
        for lag in lags:
            self.seen += 1
            if len(self.samples) < self.MAX_SAMPLES:
                self.samples.append(lag)
            elif (slot := self._random.randrange(self.seen)) < self.MAX_SAMPLES:
                self.samples[slot] = lag
        if time.monotonic() - self._flushed >= self.FLUSH_S:
            self.flush()

    def flush(self) -> None:
        self._flushed = time.monotonic()
        if not self.samples or self.run_id is None:
            return
        try:
            self.engine.state.record_lag(self.hour, self.run_id, self.samples)
        except EmpsyncError as exc:  # figures, not data: the next flush tries again
            log.debug("could not store the listen lag: %s", exc.message)
