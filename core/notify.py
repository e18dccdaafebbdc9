"""When to tell a person that syncing needs one, and the threads that tell (how: core/deliver.py).

Three parts, each on its own thread so that none can slow a sync:

- ``Notifier.observe`` is the service's event subscriber (worker thread): it
  only puts the few events that matter on a bounded inbox (full: dropped and
  counted).
- The evaluator thread feeds them, and the service's snapshot once a second,
  to ``Conditions`` (plain logic, no I/O), which says when to alert and when
  an alert has cleared ("recovered"); a token bucket caps how many notices go
  out per hour.
- One delivery thread per receiver, with a bounded queue, retries with capped
  backoff and a timeout per attempt: a receiver that is down or hangs delays
  only its own notices.

Every outcome is a log line (the console shows it in its Log), a
``NotificationSent`` event (``/metrics`` counts them) and the ``notify`` state
key (``empsync status``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .backoff import backoff_delay
from .config import Config, NotifyConfig
from .deliver import (
    CRITICAL,
    OK,
    TIMEOUT_S,
    WARNING,
    DeliveryError,
    Notice,
    Receiver,
    clip,
    context_of,
    probe_notice,
    receivers_for,
)
from .errors import ConfigError
from .events import BatchApplied, Event, NotificationSent, StatusChanged, SyncFailed, SyncFinished
from .logs import scrub
from .safe import terminal_safe
from .state import whoami
from .times import iso, utcnow

log = logging.getLogger("empsync.notify")

CHECK_S = 1.0  # how often conditions that depend on time (lag, a listener down) are looked at
INBOX_MAX = 1000  # events waiting for the evaluator
OUTBOX_MAX = 100  # notices waiting for one receiver
ATTEMPTS = 5  # per notice and receiver, then it is given up
RETRY_BASE_S, RETRY_CAP_S = 2.0, 60.0
RATE_BURST, RATE_EVERY_S = 10, 120.0  # at most 10 at once, then one per 2 minutes
RATE_PER_HOUR = int(3600 // RATE_EVERY_S)
REJECT_SAMPLES = 10  # rejected documents named in one notice
REJECT_SETTLE_S = 5.0  # new rejects are told once none has come for this long
GUARD_PREFIX = "mass-delete guard"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


# -- when to tell ---------------------------------------------------------------------


class Conditions:
    """Events and snapshots in, notices out. One thread drives it; ``now`` is monotonic seconds.

    An alert fires once when its condition starts and is not repeated while it
    holds; when it clears, one "recovered" notice names it.
    """

    def __init__(self, notify: NotifyConfig, *, identity: str = "", listen: bool = False) -> None:
        self.notify = notify
        self.identity = identity
        self.listen = listen
        self.active: dict[str, tuple[Notice, float]] = {}
        self.failures = 0
        self._since: dict[str, float] = {}  # when a condition that must last began
        self._was_leader = False
        self._other_leader: str | None = None
        self._guards_seen: set[str] = set()
        self._reject_ids: list[tuple[str, str]] = []
        self._reject_count = 0
        self._last_reject_notice: float | None = None
        self._last_reject_at = 0.0
        self._now = 0.0

    # -- events ---------------------------------------------------------------

    def observe(self, event: Event, now: float) -> list[Notice]:
        self._now = now
        if isinstance(event, SyncFailed):
            if event.error.startswith(GUARD_PREFIX):
                return self._fire("mass_delete_guard", CRITICAL, "Mass-delete guard tripped", event.error, event)
            self.failures += 1
            if self.failures >= self.notify.failures_before_alert:
                return self._fire(
                    "failing",
                    CRITICAL,
                    f"Sync failing: {self.failures} runs failed in a row",
                    f"Last error: {event.error}" + (f"\nHint: {event.hint}" if event.hint else ""),
                    event,
                )
            return []
        if isinstance(event, SyncFinished):
            result = event.result
            if result.status != "ok" or result.dry_run:
                return []
            self.failures = 0
            out = self._clear("failing", f"a {result.kind} run succeeded")
            if result.forced:  # a full read that passes the guard clears it (the engine forgets it)
                out += self._clear("mass_delete_guard", "a force run passed the guard")
            return out
        if isinstance(event, BatchApplied) and event.new_rejects:
            reasons = dict(event.rejects)
            self._reject_count += len(event.new_rejects)
            for doc_id in event.new_rejects:
                if len(self._reject_ids) < REJECT_SAMPLES:
                    self._reject_ids.append((doc_id, reasons.get(doc_id, "")))
            self._last_reject_at = now
            return []  # told once they stop coming (check), so a run's rejects make one notice
        if isinstance(event, StatusChanged):
            return self._leadership(event)
        return []

    def _leadership(self, event: StatusChanged) -> list[Notice]:
        if event.state == "stopped":
            self._was_leader = False  # stepping down on purpose is no loss
            return []
        snap = event.snapshot
        leader = bool(snap.get("is_leader"))
        out: list[Notice] = []
        if self._was_leader and not leader:
            out = self._fire(
                "leadership",
                WARNING,
                "Leadership lost",
                f"{self.identity or 'This service'} no longer holds the sync lock"
                + (f" ({event.detail})" if event.detail else "")
                + "; it syncs again once it regains it, or another service takes over.",
                event,
            )
        elif leader and not self._was_leader:
            previous, self._other_leader = self._other_leader, None
            if "leadership" in self.active:
                out = self._clear("leadership", "the sync lock is held again")
            elif previous:
                out.append(
                    Notice(
                        "takeover",
                        WARNING,
                        "Leadership taken over",
                        f"{self.identity or 'This service'} now syncs; {previous} led before and no longer holds the lock.",
                        event.at,
                        details={"previous_leader": previous},
                    )
                )
        if not leader:
            named = snap.get("leader")
            if isinstance(named, str) and named and named != self.identity:
                self._other_leader = named
            self._drop_quietly("listener", "lag")  # only a leader listens; leadership's own alert says enough
        self._was_leader = leader
        return out

    # -- the passing of time ----------------------------------------------------

    def check(self, snap: Mapping[str, Any], now: float) -> list[Notice]:
        self._now = now
        out: list[Notice] = []
        leader = bool(snap.get("is_leader"))
        wait = self.notify.lag_alert_seconds
        state, detail = snap.get("state"), snap.get("detail") or ""

        # Not leading and in error: the lock (hence the database) cannot be had.
        if self._lasted("unreachable", state == "error" and not leader, now) >= wait:
            out += self._fire_now("unreachable", CRITICAL, "Cannot sync: the database is out of reach", detail)
        elif "unreachable" not in self._since:
            out += self._clear("unreachable", "the service reached the database")

        if self.listen and leader:
            listen_state = snap.get("listen_state")
            down = listen_state not in (None, "listening", "stopped")
            if self._lasted("listener", down, now) >= wait:
                out += self._fire_now(
                    "listener",
                    CRITICAL,
                    f"Listener down for more than {_duration(wait)}",
                    f"The Firestore listener is {listen_state}: {snap.get('listen_detail') or '-'}. "
                    "Scheduled polls keep the table current meanwhile.",
                )
            elif not down:
                out += self._clear("listener", "the listener is listening again")
            lag_ms = snap.get("lag_ms")
            if not down and isinstance(lag_ms, int) and lag_ms > wait * 1000:
                out += self._fire_now(
                    "lag",
                    WARNING,
                    f"Listener behind: changes arrive {_duration(lag_ms / 1000)} late",
                    f"The last change applied was {lag_ms / 1000:.1f} s old (alert above {wait} s).",
                )
            elif not down:
                out += self._clear("lag", "changes arrive on time again")

        guard = snap.get("mass_delete_guard")
        if leader and isinstance(guard, dict):  # also trips in listen mode, where no run fails
            stamp = str(guard.get("at"))
            if stamp not in self._guards_seen:
                self._guards_seen.add(stamp)
                out += self._fire_now(
                    "mass_delete_guard",
                    CRITICAL,
                    "Mass-delete guard tripped",
                    f"A run would have deleted {guard.get('deleting')} of {guard.get('live_rows')} live rows; "
                    "it deleted none. If those documents are really gone, run "
                    "`empsync sync --force --allow-mass-delete`.",
                )
        out += self._rejects_due(now)
        return out

    def _lasted(self, key: str, holds: bool, now: float) -> float:
        """How long a condition has held without a break (0 when it does not)."""
        if not holds:
            self._since.pop(key, None)
            return -1.0
        return now - self._since.setdefault(key, now)

    def _rejects_due(self, now: float) -> list[Notice]:
        minutes = self.notify.reject_alert_minutes
        if not self._reject_count or minutes == 0:
            self._reject_ids, self._reject_count = [], 0
            return []
        if now - self._last_reject_at < REJECT_SETTLE_S:
            return []  # more may be on the way (a run's next batch)
        if self._last_reject_notice is not None and now - self._last_reject_notice < minutes * 60:
            return []  # gathered into the next one
        count, samples = self._reject_count, self._reject_ids
        self._reject_ids, self._reject_count, self._last_reject_notice = [], 0, now
        lines = [f"{doc_id}: {reason}" for doc_id, reason in samples]
        if count > len(samples):
            lines.append(f"... and {count - len(samples)} more (empsync rejects lists them all)")
        return [
            Notice(
                "rejects",
                WARNING,
                f"{count} new rejected document{'s' if count != 1 else ''}",
                "Not written; the previous good rows stay.\n" + "\n".join(lines),
                utcnow(),
                details={"count": count, "documents": [d for d, _ in samples]},
            )
        ]

    # -- alerts -----------------------------------------------------------------

    def _fire(self, key: str, severity: str, title: str, text: str, event: Event) -> list[Notice]:
        if key in self.active:
            return []
        notice = Notice(key, severity, title, clip(text), event.at)
        self.active[key] = (notice, self._now)
        return [notice]

    def _fire_now(self, key: str, severity: str, title: str, text: str) -> list[Notice]:
        return self._fire(key, severity, title, text, Event(utcnow()))

    def _clear(self, key: str, why: str) -> list[Notice]:
        entry = self.active.pop(key, None)
        if entry is None:
            return []
        alert, since = entry
        return [
            Notice(
                "recovered",
                OK,
                f"Recovered: {alert.title}",
                f"Cleared after {_duration(self._now - since)}: {why}.",
                utcnow(),
                condition=key,
            )
        ]

    def _drop_quietly(self, *keys: str) -> None:
        for key in keys:
            self.active.pop(key, None)
            self._since.pop(key, None)


class RateLimit:
    """A token bucket: ``burst`` notices at once, then one per ``every`` seconds."""

    def __init__(self, burst: int = RATE_BURST, every: float = RATE_EVERY_S) -> None:
        self.burst, self.every = burst, every
        self.tokens = float(burst)
        self.at: float | None = None

    def allow(self, now: float) -> bool:
        if self.at is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.at) / self.every)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


# -- the threads ------------------------------------------------------------------------


class _Outbox:
    """One receiver's queue and delivery thread."""

    def __init__(self, notifier: Notifier, receiver: Receiver) -> None:
        self.notifier, self.receiver = notifier, receiver
        self.queue: queue.Queue[Notice | None] = queue.Queue(maxsize=OUTBOX_MAX)  # None: look at stopping
        self.thread = threading.Thread(target=self._main, name="empsync-notify-send", daemon=True)

    def offer(self, notice: Notice) -> None:
        try:
            self.queue.put_nowait(notice)
        except queue.Full:
            self.notifier.outcome(self.receiver, notice, False, 0, f"dropped: {OUTBOX_MAX} notices already waiting")

    def _main(self) -> None:
        stop = self.notifier.stopping
        while not stop.is_set():
            try:
                notice = self.queue.get(timeout=CHECK_S)
            except queue.Empty:
                continue
            if notice is not None:
                self._deliver(notice, stop)

    def _deliver(self, notice: Notice, stop: threading.Event) -> None:
        detail, attempts = "", self.notifier.attempts
        for attempt in range(1, attempts + 1):
            try:
                answer = self.receiver.send(notice, self.notifier.context)
            except DeliveryError as exc:
                detail = exc.message
                if exc.permanent or attempt == attempts:
                    break
                delay = backoff_delay(attempt, self.notifier.retry_base_s, RETRY_CAP_S)
                if exc.retry_after is not None:
                    delay = min(RETRY_CAP_S, max(delay, exc.retry_after))
                log.debug("notification to %s failed (%s); retrying in %.0f s", self.receiver.name, detail, delay)
                if stop.wait(delay):
                    detail += "; the service stopped before another attempt"
                    break
            except Exception as exc:  # noqa: BLE001 - a bug in one receiver must not end its thread
                log.exception("notification to %s raised", self.receiver.name)
                detail = f"internal error: {type(exc).__name__}"
                break
            else:
                self.notifier.outcome(self.receiver, notice, True, attempt, answer)
                return
        self.notifier.outcome(self.receiver, notice, False, attempt, detail)


class Notifier:
    """The service's notifications: start, stop, and ``observe`` as an event subscriber."""

    def __init__(
        self,
        config: Config,
        *,
        identity: str = "",
        snapshot: Callable[[], Mapping[str, Any]] = dict,
        record: Callable[[dict[str, Any]], None] | None = None,
        emit: Callable[[Event], None] | None = None,
        receivers: list[Receiver] | None = None,
        clock: Callable[[], float] = time.monotonic,
        attempts: int = ATTEMPTS,
        retry_base_s: float = RETRY_BASE_S,
    ) -> None:
        self.notify = config.notify
        self.context = context_of(config, identity)
        self.conditions = Conditions(config.notify, identity=identity, listen=config.sync.mode == "listen")
        self.rate = RateLimit()
        self.snapshot, self.record, self.emit, self.clock = snapshot, record, emit, clock
        self.attempts, self.retry_base_s = attempts, retry_base_s
        self.stopping = threading.Event()
        self.inbox: queue.Queue[Event | None] = queue.Queue(maxsize=INBOX_MAX)  # None: look at stopping
        self.outboxes = [_Outbox(self, r) for r in (receivers if receivers is not None else receivers_for(self.notify))]
        self._thread = threading.Thread(target=self._main, name="empsync-notify", daemon=True)
        self._lock = threading.Lock()
        self._held_back = 0  # notices the rate limit stopped, told in the next one
        self.counts = {"sent": 0, "failed": 0, "dropped": 0}
        self._status: dict[str, Any] = {"receivers": [o.receiver.name for o in self.outboxes], "counts": self.counts}

    @property
    def receivers(self) -> list[Receiver]:
        return [o.receiver for o in self.outboxes]

    def start(self) -> Notifier:
        for outbox in self.outboxes:
            outbox.thread.start()
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self.stopping.set()
        waiting: list[queue.Queue[Any]] = [self.inbox, *(o.queue for o in self.outboxes)]
        for box in waiting:
            with contextlib.suppress(queue.Full):  # a full queue is a thread that is not waiting on it
                box.put_nowait(None)  # wake it now, not at its next timeout
        deadline = time.monotonic() + timeout
        for thread in [self._thread, *(o.thread for o in self.outboxes)]:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))

    def observe(self, event: Event) -> None:
        """The bus subscriber, on the worker thread: hand on the events that matter, nothing more."""
        if isinstance(event, (SyncFailed, SyncFinished, StatusChanged)) or (
            isinstance(event, BatchApplied) and event.new_rejects
        ):
            try:
                self.inbox.put_nowait(event)
            except queue.Full:
                with self._lock:
                    self.counts["dropped"] += 1

    # -- the evaluator thread ---------------------------------------------------------

    def _main(self) -> None:
        next_check = 0.0
        while not self.stopping.is_set():
            try:
                event = self.inbox.get(timeout=CHECK_S)
            except queue.Empty:
                event = None
            try:
                now = self.clock()
                if event is not None:
                    self.dispatch(self.conditions.observe(event, now))
                if now >= next_check:
                    next_check = now + CHECK_S
                    self.dispatch(self.conditions.check(self.snapshot(), now))
            except Exception:  # noqa: BLE001 - a bug here must not end notifications for good
                log.exception("notification conditions failed; carrying on")

    def dispatch(self, notices: list[Notice]) -> None:
        for notice in notices:
            if not self.rate.allow(self.clock()):
                self._held_back += 1
                self.outcome(None, notice, False, 0, f"held back by the rate limit ({RATE_PER_HOUR} an hour at most)")
                continue
            if self._held_back:
                notice = Notice(
                    notice.kind,
                    notice.severity,
                    notice.title,
                    notice.text + f"\n({self._held_back} earlier notices were held back by the rate limit.)",
                    notice.at,
                    notice.condition,
                    notice.details,
                )
                self._held_back = 0
            for outbox in self.outboxes:
                outbox.offer(notice)

    # -- outcomes (delivery threads) -----------------------------------------------------

    def outcome(self, receiver: Receiver | None, notice: Notice, ok: bool, attempts: int, detail: str) -> None:
        """Log, count, record and announce what became of a notice (``receiver`` None: all of them)."""
        name = receiver.name if receiver is not None else "every receiver"
        detail = scrub(detail)  # a receiver's answer may quote a webhook URL: it goes to the state table too
        entry = {
            "at": iso(utcnow()),
            "kind": notice.kind,
            "title": notice.title,
            "receiver": name,
            "ok": ok,
            "attempts": attempts,
            "detail": detail,
        }
        if ok:
            log.info("Notified %s: %s (%s)", name, notice.title, detail)
        elif attempts == 0:
            log.warning("Notification to %s dropped: %s (%s)", name, notice.title, detail)
        else:
            log.warning("Notification to %s failed after %d attempt(s): %s (%s)", name, attempts, notice.title, detail)
        with self._lock:
            self.counts["sent" if ok else ("dropped" if attempts == 0 else "failed")] += 1
            self._status["last"] = entry
            if not ok:
                self._status["last_failure"] = entry
            status = json.loads(json.dumps(self._status))
            if self.record is not None:
                try:
                    self.record(status)
                except Exception as exc:  # noqa: BLE001 - the database may be what is failing
                    log.debug("could not record the notification outcome: %s", exc)
        if self.emit is not None:
            self.emit(NotificationSent(utcnow(), notice.kind, notice.title, name, ok, attempts, detail))


def send_test(
    notify: NotifyConfig, context: dict[str, Any], timeout: float = TIMEOUT_S
) -> list[tuple[Receiver, bool, str]]:
    """``empsync notify --test``: one attempt per receiver, each result as it came."""
    notice = probe_notice()
    results = []
    for receiver in receivers_for(notify, timeout):
        try:
            results.append((receiver, True, receiver.send(notice, context)))
        except DeliveryError as exc:
            results.append((receiver, False, exc.message))
    return results


def run_notify_command(config: Config, *, test: bool, as_json: bool) -> int:
    """``empsync notify [--test]``: list the receivers, or send each a test message; 1 if any failed."""

    receivers = receivers_for(config.notify)
    if not receivers:
        raise ConfigError("notify", "no receivers", "set [notify] webhook_urls, or smtp_url with email_to")
    if not test:
        names = [r.name for r in receivers]
        print(json.dumps({"receivers": names}, indent=2) if as_json else "\n".join(names))
        return 0
    results = send_test(config.notify, context_of(config, whoami()))
    if as_json:
        print(json.dumps([{"receiver": r.name, "ok": ok, "detail": detail} for r, ok, detail in results], indent=2))
    else:
        for receiver, ok, detail in results:
            print(terminal_safe(f"{'ok    ' if ok else 'FAILED'} {receiver.name}: {detail}"))
    return 0 if all(ok for _, ok, _ in results) else 1
