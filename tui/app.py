"""The operator console: the sync service on its worker thread, watched and steered from the keyboard.

Data flows one way. The service's worker thread (and any thread that logs)
reaches the App only through ``post_message`` (see ``bridge.py``); message
handlers only buffer, and a timer flushes the buffers into the panes a few
times a second, so a flood of changes costs a few table updates, not one per
change. The App calls the service's small face API (each call only queues a
command), reads ``snapshot()``/``stats()`` (copies under a lock) and does any
database read in thread workers.

While another process leads, the console shows that process: the Status pane
its published view (``panes.status.shown``), Recent changes and the Log what
it writes to the database, tailed once a second by a thread worker that is
re-armed with a timer when it ends, so two reads never overlap; f and s go to
it as requests, and their progress comes back as ``RequestUpdate`` events.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

from textual import events, on, work
from textual.app import App, ComposeResult
from textual.containers import Horizontal
from textual.widgets import Header

from core.errors import EmpsyncError
from core.events import BatchApplied, RequestUpdate, RunReport, StatusChanged, SyncFailed, SyncFinished, SyncStarted
from core.face import SyncFace
from core.safe import terminal_safe
from core.times import utcnow
from core.turns import Turns

from . import heap
from . import messages as msg
from .actions import ConsoleCommands, bindings
from .bridge import Bridge, ConsoleLogHandler
from .footer import Footer
from .panes.changes import MAX_CHANGES, ChangesPane, records_of
from .panes.log import MAX_LINES, LogView, log_text
from .panes.stats import StatsPane
from .panes.status import StatusPane, shown, whose
from .screens.dialog import FieldDialog
from .screens.filter import FilterScreen
from .screens.help import HelpScreen
from .screens.ids import IdsScreen
from .screens.interval import IntervalScreen
from .screens.rejects import RejectsScreen
from .screens.runs import RunsScreen

log = logging.getLogger("empsync.console")

FLUSH_S = 0.2  # buffers reach the panes at 5 Hz
TICK_S = 1.0  # the status pane's clock (countdowns, "2 min ago")
STOP_TIMEOUT_S = 9.0
TABLE_BUDGET = 4  # after a table update that took t, wait 4·t before the next: the table never hogs the loop
NARROW_BELOW = 100  # columns
HELP_SCREEN = "help"  # the one HelpScreen, installed on first use
ROUTINE = ("starting", "syncing", "idle")  # idle after these is not news in the Log
REMOTE_S = 1.0  # how often the leader's changes and log lines are read while another process leads
REMOTE_LOG_LINES = 500  # the leader's lines read at most per look (the first: its newest, for context)
# What a person does: each claims the sync's threads' turn until its frame is drawn (core/turns.py).
# Not mouse moves: they come by the dozen and ask for nothing urgent.
INPUT = (events.Key, events.Paste, events.MouseDown, events.MouseUp, events.MouseScrollDown, events.MouseScrollUp)


class EmpsyncApp(App[int]):
    """The console. ``service`` is a ``core.service.SyncService`` (or anything with its face API).

    ``start_service=False`` leaves the service alone (it is already running, or
    a fixed stand-in for rendering tests); ``clock`` gives naive-UTC "now" for
    relative times and countdowns; ``turns``, those the service's sync gives
    way to: the console claims one for each key, so that a run in progress
    does not hold its frame back.
    """

    CSS_PATH = "app.tcss"
    TITLE = "empsync"
    COMMANDS = App.COMMANDS | {ConsoleCommands}
    BINDINGS = bindings()
    # Rarer, shorter full garbage collections (``heap``): off only for a benchmark's baseline.
    QUIET_HEAP = True
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (NARROW_BELOW, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]

    def __init__(
        self,
        service: SyncFace,
        config: Any = None,
        *,
        start_service: bool = True,
        clock: Callable[[], datetime] = utcnow,
        log_handler: ConsoleLogHandler | None = None,
        api: Any = None,
        turns: Turns | None = None,
    ) -> None:
        super().__init__()
        self.service = service
        self.turns = turns
        self._turn_ends_with_a_frame = False
        self.config = config
        self.start_service = start_service
        self.clock = clock
        self.api = api
        self.bridge = Bridge(self)
        self._log_handler = log_handler
        self._own_log_handler: ConsoleLogHandler | None = None
        self._saved_level: int | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._pending_log: list[msg.LogLine] = []
        self._pending_changes: list[Any] = []
        self._changes_due = 0.0
        self._dirty = True
        self.paused = False
        self.quitting = False
        self._history_loaded = False
        self._rejects_screen: RejectsScreen | None = None
        self._tty_fd: int | None = None
        self._signals: list[int] = []
        self._old_sighup: Any = None
        self._hung_up = False
        self._last_state = "starting"
        self._worker_lost = False
        self._change_cursor: int | None = None  # the newest audit row shown (read side of other processes)
        self._log_cursor: int | None = None  # the newest line of empsync_log shown
        self._caught_up = False  # leading, and the last look after taking over is done
        self._standby_leader: str | None = None  # the leader this console last stood beside
        self._heap_before: tuple[int, ...] | None = None  # the collector's thresholds before ``heap``
        self._heap_frozen_after_a_run = False
        self.toasts: deque[str] = deque(maxlen=50)  # what notify() said, newest last
        self.status_pane = StatusPane(id="status", classes="pane")
        self.stats_pane = StatsPane(id="stats", classes="pane")
        self.changes_pane = ChangesPane(id="changes", classes="pane")
        self.log_pane = LogView(id="log", classes="pane")

    # -- layout ---------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="≡")
        with Horizontal(id="top"):
            yield self.status_pane
            yield self.stats_pane
        yield self.changes_pane
        yield self.log_pane
        yield Footer()

    def on_mount(self) -> None:
        self._unsubscribe = self.service.subscribe(self.bridge.on_event)
        self._attach_logs()
        self.set_interval(FLUSH_S, self._flush_buffers, name="flush")
        self.set_interval(TICK_S, self._tick, name="tick")
        self._watch_terminal()
        self._layout(self.size.width)
        self._refresh_panes()
        self.changes_pane.table.focus()
        if self.start_service:
            self.service.start()
        else:
            self._history_loaded = True
            self._load_changes("")
        if self.QUIET_HEAP:
            self._heap_before = heap.quieten()

    def _freeze_after_the_first_run(self) -> None:
        """The clients a run loads live as long as the console too: frozen once, after the first run."""
        if self._heap_before is not None and not self._heap_frozen_after_a_run:
            self._heap_frozen_after_a_run = True
            heap.freeze_survivors()

    def on_unmount(self) -> None:
        if self._heap_before is not None:
            heap.restore(self._heap_before)
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._detach_logs()
        try:
            loop = asyncio.get_running_loop()
            for sig in self._signals:
                loop.remove_signal_handler(sig)
            if self._old_sighup is not None and not self._hung_up:
                signal.signal(signal.SIGHUP, self._old_sighup)
        except (RuntimeError, ValueError):
            pass

    def post_message(self, message: Any) -> bool:
        # The terminal driver's thread posts what the person does: the sync gives way from now on.
        if self.turns is not None and isinstance(message, INPUT) and not message.is_forwarded:
            self.turns.claim()  # (a forwarded key is one that comes back, unused, from the focused widget)
        return super().post_message(message)

    async def on_event(self, event: events.Event) -> None:
        fresh = isinstance(event, INPUT) and not event.is_forwarded  # handling marks it forwarded
        await super().on_event(event)
        if fresh and self.turns is not None:
            # Its bindings have run (a screen pushed or popped): the turn ends with the next frame.
            self._turn_ends_with_a_frame = True

    def _display(self, screen: Any, renderable: Any) -> None:
        # Textual's one way to the terminal for a frame (tests/test_console_turns.py checks it is still there).
        super()._display(screen, renderable)
        if self._turn_ends_with_a_frame and renderable is not None and self.turns is not None:
            self._turn_ends_with_a_frame = False
            self.turns.release()

    def on_key(self, event: events.Key) -> None:
        """A key typed right after i or / was sent to the main screen before the dialog opened."""
        screen = self.screen
        if isinstance(screen, FieldDialog) and event.is_printable and event.character:
            event.stop()
            screen.type_ahead(event.character)

    def on_resize(self, event: events.Resize) -> None:
        self._layout(event.size.width)

    def _layout(self, width: int) -> None:
        narrow = width < NARROW_BELOW
        self.changes_pane.set_compact(narrow)
        try:
            footer = self.screen.query_one(Footer)
        except Exception:  # noqa: BLE001 - not composed yet, or a screen without a footer
            return
        if footer.show_command_palette == narrow:  # the footer only reads it when it recomposes
            footer.show_command_palette = not narrow
            footer.refresh(recompose=True)

    # -- logs -----------------------------------------------------------------------

    def _attach_logs(self) -> None:
        if self._log_handler is None:
            # Hosted by a test or another program: add our handler beside theirs.
            self._own_log_handler = self._log_handler = ConsoleLogHandler()
            logging.getLogger().addHandler(self._own_log_handler)
            logger = logging.getLogger("empsync")
            if logger.getEffectiveLevel() > logging.INFO:
                self._saved_level = logger.level
                logger.setLevel(logging.INFO)
        self._log_handler.attach(self.bridge)

    def _detach_logs(self) -> None:
        if self._log_handler is not None:
            self._log_handler.attach(None)
        if self._own_log_handler is not None:
            logging.getLogger().removeHandler(self._own_log_handler)
            if self._saved_level is not None:
                logging.getLogger("empsync").setLevel(self._saved_level)

    def console_log(self, level: str, text: str, at: datetime | None = None) -> None:
        """A line from the console itself, straight into the Log buffer."""
        self._pending_log.append(msg.LogLine(at or self.clock(), level, "empsync.console", text))

    # -- messages from other threads (handlers only buffer) ---------------------------

    @on(msg.LogLine)
    def _on_log_line(self, message: msg.LogLine) -> None:
        self.bridge.handled()
        self._pending_log.append(message)
        if len(self._pending_log) > 2 * MAX_LINES:
            del self._pending_log[:-MAX_LINES]

    @on(msg.CoreEvent)
    def _on_core_event(self, message: msg.CoreEvent) -> None:
        """What the service said, by the event's type; each one shown marks the panes for the next flush."""
        self.bridge.handled()
        match message.event:
            case BatchApplied(changes=changes):
                self._pending_changes.extend(changes)
                if len(self._pending_changes) > 2 * MAX_CHANGES:
                    del self._pending_changes[:-MAX_CHANGES]
            case SyncStarted():
                pass  # the Status pane shows the run from the snapshot
            case SyncFinished(result=result):
                self._freeze_after_the_first_run()
                self._finished(result)
            case SyncFailed() as failed:
                self._freeze_after_the_first_run()
                self._failed(failed)
            case StatusChanged() as status:
                self._status_changed(status)
            case RequestUpdate() as update:
                self._request_update(update)
            case _:
                return  # not shown here (a notification's outcome, say)
        self._dirty = True

    def _finished(self, result: RunReport) -> None:
        if result.trigger == "console":
            if result.kind == "rollback":
                self.toast(result.reason, title="Rolled back")
                return
            self.toast(_done_text(result))

    def _request_update(self, event: RequestUpdate) -> None:
        """A run this console asked of the leading process: its start and its end, as toasts."""
        if event.trigger != "console":
            return  # asked by this process's API: its caller follows it
        what = WHAT.get(event.kind, "Sync")
        by = f"the leader {event.leader}" if event.leader else "the leader"
        result = event.result
        if event.request_id is None:
            self.toast(f"{what} not sent: {event.reason}", severity="error")
        elif event.status in ("queued", "claimed"):
            pass  # said when the key was pressed; the Status pane shows the leader busy, if it is
        elif event.status == "running":
            self.toast(f"{what} started on {by}: run #{event.run_id}")
        elif event.status == "expired" or result is None:
            self.toast(f"{what} request #{event.request_id} dropped: {event.reason}", severity="warning")
        elif result.status == "ok" and result.kind == "rollback":
            self.toast(result.reason, title=f"Rolled back by {by}")
        elif result.status == "ok":
            self.toast(_done_text(result, by))
        elif result.status == "skipped":
            self.toast(f"{what} skipped by {by}: {result.reason}", severity="warning")
        else:
            self.toast(
                (result.reason or "no reason given") + (f"\n{result.hint}" if result.hint else ""),
                severity="error",
                title=f"{what} failed on {by}",
            )

    def _failed(self, event: SyncFailed) -> None:
        if event.hint:
            self.console_log("INFO", f"Hint: {event.hint}", event.at)
        self.toast(event.error + (f"\n{event.hint}" if event.hint else ""), severity="error", title="Sync failed")

    def _status_changed(self, event: StatusChanged) -> None:
        level = "ERROR" if event.state == "error" else ("WARNING" if event.state == "standby" else "INFO")
        routine = event.state == "syncing" or (event.state == "idle" and self._last_state in ROUTINE)
        if not routine:  # a run logs its own start and end; the Log says when something else happens
            self.console_log(level, f"Status: {event.state}" + (f" ({event.detail})" if event.detail else ""))
        self._last_state = event.state
        if event.state == "paused":
            self.paused = True
            self.refresh_bindings()
        elif event.state in ("idle", "listening"):
            self.paused = False
            self.refresh_bindings()
        if not self._history_loaded and event.state not in ("starting", "error", "stopped"):
            self._history_loaded = True  # the schema exists once the service has got this far
            self._load_changes("")

    def _note_leadership(self, snap: dict[str, Any]) -> None:
        """A standby that takes over says so: the operator was watching another process until now."""
        leader = snap.get("shown") or snap.get("leader")
        if not snap.get("is_leader") and leader and leader != snap.get("service"):
            self._standby_leader = leader
        elif snap.get("is_leader") and self._standby_leader:
            gone, self._standby_leader = self._standby_leader, None
            self.console_log("WARNING", f"This console now leads: the leader {gone} stopped or went away")
            self.toast(f"This console now leads and syncs: {gone} stopped or went away.", title="Took over")

    @on(msg.ChangesLoaded)
    def _on_changes_loaded(self, message: msg.ChangesLoaded) -> None:
        if message.rows is None:  # the read failed
            if not message.needle:
                self._history_loaded = False  # try again on the next status change
            return
        self.changes_pane.load(message.rows, message.needle)
        if not message.needle and self._change_cursor is None:
            # The history reaches this far; other processes' changes are tailed from here.
            self._change_cursor = max((int(r["id"]) for r in message.rows if r.get("id") is not None), default=0)
            self._follow_others()

    @on(msg.RemoteLoaded)
    def _on_remote_loaded(self, message: msg.RemoteLoaded) -> None:
        if message.changes is None or message.lines is None:  # the database is away: look again later
            self.set_timer(5 * REMOTE_S, self._follow_others)
            return
        if message.changes:
            self._change_cursor = max(int(r["id"]) for r in message.changes)
            self._pending_changes.extend(records_of(message.changes))
            self._dirty = True
        if message.lines:
            self._log_cursor = max(int(r["id"]) for r in message.lines)
            self._pending_log.extend(
                msg.LogLine(r["at"], r["level"], r["logger"], r["text"], source=r["service"]) for r in message.lines
            )
        self._caught_up = message.leading
        self.set_timer(REMOTE_S, self._follow_others)

    @on(msg.RejectsLoaded)
    def _on_rejects_loaded(self, message: msg.RejectsLoaded) -> None:
        screen = self._rejects_screen
        if screen is not None and screen.is_attached:
            screen.show(message.rows, message.error)

    @on(msg.ServiceStopped)
    def _on_service_stopped(self, message: msg.ServiceStopped) -> None:
        if not message.clean:
            log.warning("the current batch did not finish in time; exiting anyway (it is rolled back)")
        self.exit(0)

    # -- timers ---------------------------------------------------------------------

    def _flush_buffers(self) -> None:
        try:
            dropped = self.bridge.take_dropped()
            if dropped:
                self.console_log("WARNING", f"{dropped:,} log lines dropped: the console was behind")
            if self._pending_log:
                pending, self._pending_log = self._pending_log, []
                lines = []
                for line in pending[-MAX_LINES:]:
                    lines += log_text(line.at, line.level, line.text, line.source)
                self.log_pane.add(lines[-MAX_LINES:])
            now = time.monotonic()
            if self._pending_changes and now >= self._changes_due:
                pending, self._pending_changes = self._pending_changes, []
                self.changes_pane.add(pending[-MAX_CHANGES:])
                self._changes_due = now + min(2.0, TABLE_BUDGET * (time.monotonic() - now))
            if self._dirty:
                self._dirty = False
                self._refresh_panes()
        except Exception as exc:  # noqa: BLE001 - a rendering bug must not take the console (and the sync) down
            log.exception("console: could not update the panes: %s", exc)

    def _tick(self) -> None:
        self._refresh_panes()
        if self._tty_fd is not None and not self.quitting:
            try:
                gone = not os.isatty(self._tty_fd)
            except OSError:
                gone = True
            if gone:
                self.hang_up("stdin is no longer a terminal")
        if self.start_service and not self.service.alive and not self.quitting and not self._worker_lost:
            self._worker_lost = True
            log.error("the sync worker has stopped; press q to quit and restart empsync")
            self.toast("The sync worker has stopped. Press q and restart empsync.", severity="error")

    def _snapshot(self) -> dict[str, Any]:
        """What the console shows: its service's snapshot, or the live leader's view over it."""
        try:
            return shown(self.service.snapshot())
        except Exception as exc:  # noqa: BLE001 - the status must still render
            return {"state": "error", "detail": f"cannot read the service status: {exc}"}

    def _refresh_panes(self) -> None:
        try:
            snap = self._snapshot()
            stats = self.service.stats()
            state = snap.get("state")
            if state == "paused" and not self.paused:
                self.paused = True
                self.refresh_bindings()
            elif state in ("idle", "listening") and self.paused:
                self.paused = False
                self.refresh_bindings()
            self._note_leadership(snap)
            self.status_pane.show(snap, self.clock(), override="stopping" if self.quitting else None)
            self.stats_pane.show(stats, snap)
            where = _where(snap, self.config)
            self.sub_title = terminal_safe(where if snap.get("is_leader") else f"{where} · {whose(snap)}")
        except Exception as exc:  # noqa: BLE001 - see _flush
            log.exception("console: could not update the status: %s", exc)

    # -- the terminal going away (an SSH drop) ----------------------------------------
    #
    # Once the terminal has hung up, Textual's writer thread dies on its first write and the
    # next frames block the event loop for good; so a hang-up does not go through the App at
    # all. A plain thread stops the service (the lock is released) and ends the process.
    # SIGTERM, with the terminal still there, quits the ordinary way.

    def _watch_terminal(self) -> None:
        if self.is_headless:
            return
        stdin = sys.__stdin__  # None when started without one (a daemon, some embedders)
        try:
            fd = stdin.fileno() if stdin is not None else -1
            if fd < 0 or not os.isatty(fd):
                return
        except (OSError, ValueError):
            return
        self._tty_fd = fd
        try:
            self._old_sighup = signal.signal(signal.SIGHUP, lambda signum, frame: self.hang_up("received SIGHUP"))
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self._terminated)
            self._signals.append(signal.SIGTERM)
        except (RuntimeError, ValueError, NotImplementedError):  # not the main thread: no signals
            pass

    def _terminated(self) -> None:
        log.warning("received SIGTERM: stopping the service and exiting")
        self.action_quit()

    def hang_up(self, reason: str) -> None:
        """The terminal is gone: stop the service on a thread of its own, then end the process."""
        if self._hung_up:
            return
        self._hung_up, self._tty_fd = True, None
        threading.Thread(target=self._stop_and_exit, args=(reason,), name="empsync-hangup", daemon=True).start()

    def _stop_and_exit(self, reason: str) -> None:
        log.warning("%s: the terminal went away; stopping the service and exiting", reason)
        if self.api is not None:
            try:
                self.api.stop()
            except Exception:  # noqa: BLE001 - closed with the process anyway
                pass
        clean = False
        try:
            clean = bool(self.service.stop(STOP_TIMEOUT_S))
        finally:
            os._exit(0 if clean else 1)  # nothing can be drawn or restored on a terminal that is gone

    # -- actions ------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "pause":
            return not self.paused
        if action == "resume":
            return self.paused
        if action == "clear_filter":
            return bool(self.changes_pane.needle)
        return True

    def toast(self, message: str, *, severity: str = "information", title: str = "", timeout: float = 6) -> None:
        message = terminal_safe(message, multiline=True)  # a reason may quote a document id
        self.toasts.append(message)
        self.notify(message, title=title, severity=severity, timeout=timeout, markup=False)  # type: ignore[arg-type]

    def _queue_run(self, force: bool) -> None:
        try:
            ticket = self.service.force_sync("console") if force else self.service.sync_now("console")
        except EmpsyncError as exc:
            self.toast(exc.message, severity="error")
            return
        self.toast_queued("Force sync" if force else "Sync", ticket)

    def toast_queued(self, what: str, ticket: Any) -> None:
        """Say where a run just asked for goes: this console's queue, or the leader's."""
        snap = self._snapshot()
        if getattr(ticket, "forwarded", False):
            if snap.get("shown"):
                busy = "; it starts when the leader's current run ends" if snap.get("current_run") else ""
                self.toast(f"{what} asked of the leader {snap['shown']} (#{ticket.request_id}){busy}")
            else:
                takes_over = "" if snap.get("attached") else "; this console takes over if the leader is gone"
                self.toast(
                    f"{what} queued (#{ticket.request_id}), but no live leader answers: "
                    f"it waits for one, 5 min at most{takes_over}",
                    severity="warning",
                )
        elif snap.get("current_run"):
            self.toast(f"{what} queued (#{ticket.request_id}); it starts when the current run ends")
        else:
            self.toast(f"{what} queued (#{ticket.request_id})")
        self._dirty = True

    def action_force_sync(self) -> None:
        self._queue_run(force=True)

    def action_sync_now(self) -> None:
        self._queue_run(force=False)

    def action_edit_interval(self) -> None:
        if isinstance(self.screen, IntervalScreen):
            return
        self.push_screen(IntervalScreen(self._snapshot().get("interval")), self._interval_chosen)

    def _interval_chosen(self, seconds: int | None) -> None:
        if seconds is None:
            return
        try:
            self.service.set_interval(seconds)
        except EmpsyncError as exc:
            self.toast(exc.message, severity="error")
            return
        self.toast(f"Interval set to {seconds:,} s (stored in the database; `empsync interval --reset` undoes it)")
        self._dirty = True

    def action_pause(self) -> None:
        self.service.pause()
        self.paused = True
        self.refresh_bindings()
        self.toast("Scheduled syncs paused. Press p to resume (f and s still sync at once).", title="Paused")
        self._dirty = True

    def action_resume(self) -> None:
        self.service.resume()
        self.paused = False
        self.refresh_bindings()
        self.toast("Scheduled syncs resumed.")
        self._dirty = True

    def action_filter(self) -> None:
        if isinstance(self.screen, FilterScreen):
            return
        self.push_screen(FilterScreen(self.changes_pane.needle), self._filter_chosen)

    def _filter_chosen(self, needle: str | None) -> None:
        if needle is None:
            return
        self.changes_pane.set_filter(needle)
        if needle:
            self._load_changes(needle)  # older matches from the database, beyond the in-memory window

    def action_clear_filter(self) -> None:
        self.changes_pane.set_filter("")

    def action_rejects(self) -> None:
        if isinstance(self.screen, RejectsScreen):
            return
        self._rejects_screen = RejectsScreen()
        self.push_screen(self._rejects_screen)
        self.call_after_refresh(self._layout, self.size.width)  # its footer, too
        self._load_rejects()

    def action_history(self) -> None:
        if not isinstance(self.screen, RunsScreen):
            self.push_screen(RunsScreen())
            self.call_after_refresh(self._layout, self.size.width)

    def action_sync_ids(self) -> None:
        if not isinstance(self.screen, IdsScreen):
            self.push_screen(IdsScreen(), self._ids_chosen)

    def _ids_chosen(self, ids: tuple[str, ...] | None) -> None:
        if not ids:
            return
        try:
            ticket = self.service.sync_ids(ids, "console")
        except EmpsyncError as exc:
            self.toast(exc.message, severity="error")
            return
        self.toast_queued(f"Sync of {len(ids):,} employee(s)", ticket)

    def action_help(self) -> None:
        # Built once and kept: composing it again cost each ``?`` three times the work of showing it.
        if not isinstance(self.screen, HelpScreen):
            if not self.is_screen_installed(HELP_SCREEN):
                self.install_screen(HelpScreen(), HELP_SCREEN)
            self.push_screen(HELP_SCREEN)

    # Textual's action_quit is a coroutine; ours is plain so signal handlers can call it too.
    def action_quit(self) -> None:  # type: ignore[override]
        if self.quitting:
            self.toast("Still stopping the service…")
            return
        self.quitting = True
        self.toast("Stopping the sync service and releasing the lock…", timeout=30)
        self._refresh_panes()
        self._stop_service()

    # -- thread workers (database reads, the blocking stop) ------------------------------

    @work(thread=True, exclusive=True, group="changes", exit_on_error=False)
    def _load_changes(self, needle: str) -> None:
        try:
            rows = self.service.recent_changes(limit=MAX_CHANGES, needle=needle)
        except EmpsyncError as exc:
            log.warning("could not read recent changes: %s", exc.message)
            self.post_message(msg.ChangesLoaded(None, needle))
            return
        self.post_message(msg.ChangesLoaded(rows, needle))

    def _follow_others(self) -> None:
        """Once a second while another process leads (and once after taking over): what it wrote."""
        cursor = self._change_cursor
        if cursor is None or self.quitting:
            return  # no history yet
        leading = bool(self._snapshot().get("is_leader"))
        if leading and self._caught_up:
            self.set_timer(REMOTE_S, self._follow_others)  # our own events show everything now
            return
        self._read_others(cursor, self._log_cursor, leading)

    @work(thread=True, exclusive=True, group="remote", exit_on_error=False)
    def _read_others(self, changes_after: int, lines_after: int | None, leading: bool) -> None:
        try:
            changes = self.service.changes_by_others(changes_after, limit=MAX_CHANGES)
            lines = self.service.log_by_others(lines_after, limit=REMOTE_LOG_LINES)
        except EmpsyncError:
            self.post_message(msg.RemoteLoaded(None, None, leading))
            return
        self.post_message(msg.RemoteLoaded(changes, lines, leading))

    @work(thread=True, exclusive=True, group="rejects", exit_on_error=False)
    def _load_rejects(self) -> None:
        try:
            rows = self.service.rejects()
        except EmpsyncError as exc:
            self.post_message(msg.RejectsLoaded([], exc.message))
            return
        self.post_message(msg.RejectsLoaded(rows))

    @work(thread=True, exclusive=True, group="stop", exit_on_error=False)
    def _stop_service(self) -> None:
        if self.api is not None:
            try:
                self.api.stop()
            except Exception:  # noqa: BLE001 - the API's socket is closed with the process anyway
                pass
        try:
            clean = self.service.stop(STOP_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - quitting must always quit
            log.exception("stopping the service failed")
            clean = False
        self.post_message(msg.ServiceStopped(bool(clean)))


def _serve_api(service: Any, config: Any) -> Any:
    """The control API, unless its port is taken, as when this console opens beside a running service."""
    from core.api import ControlApi
    from core.errors import ConfigError

    try:
        return ControlApi(service, config.api).start()  # a port in use is a ConfigError naming api.port
    except ConfigError as exc:
        if exc.key != "api.port" or "in use" not in exc.problem:
            raise
        log.warning(
            "The control API's port %s:%s is in use (by the service that leads, most likely): this console "
            "serves no API; the leader's answers for both",
            config.api.host,
            config.api.port,
        )
        return None


WHAT = {"force": "Force sync", "ids": "Sync of selected employees", "rollback": "Rollback"}


def _done_text(result: RunReport, by: str = "") -> str:
    """A finished run's toast (``result``: a ``RunReport``); ``by``: the leader that made it for us."""
    c = result.counts
    written = c.inserted + c.updated + c.deleted + c.repaired
    repaired = f", {c.repaired:,} repaired" if c.repaired else ""
    on = f" on {by}" if by else ""
    return (
        f"{WHAT.get(result.kind, 'Sync')} done{on} (run #{result.run_id}): {c.fetched:,} read, {written:,} written"
        f"{repaired}, {c.rejected:,} rejected in {result.duration_ms / 1000:.1f} s"
    )


def _where(snap: dict[str, Any], config: Any) -> str:
    """The header's "connected to": project/collection → target (password masked)."""
    source = snap.get("source") or {}
    project = source.get("project") or getattr(getattr(config, "source", None), "project", "")
    collection = source.get("collection") or getattr(getattr(config, "source", None), "collection", "")
    target = snap.get("target")
    if not target and config is not None:
        from core.config import mask_url

        target = mask_url(config.target.url)
    return f"{project}/{collection} → {target or '?'}"


def run_console(config: Any, attach: bool = False) -> int:
    """``empsync`` with no command: the service hosted by the console, until q (exit code returned).

    ``attach`` (``empsync --attach``): a console that never takes the lock and serves no API;
    it watches and steers whichever process leads.
    """
    # Under `empsync web` textual-serve runs this console with Textual's web driver on pipes.
    in_a_browser = os.environ.get("TEXTUAL_DRIVER", "").startswith("textual.drivers.web_driver:")
    if not in_a_browser and not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("empsync: the console needs a terminal on stdin and stdout", file=sys.stderr)
        print("  hint: run `empsync --no-ui` for the headless service, or a one-shot command", file=sys.stderr)
        return 2
    from core.logs import configure
    from core.service import SyncService

    root = logging.getLogger()
    # configure() sets levels and quiets chatty libraries; its stderr handler is swapped for the
    # console's own, since anything written to stderr would scribble over the screen.
    root.removeHandler(configure(level=logging.INFO))
    handler = ConsoleLogHandler()
    root.addHandler(handler)
    api = None
    turns = Turns()
    service = SyncService(config, attach=attach, turns=turns)
    try:
        if config.api.enabled and not attach:
            api = _serve_api(service, config)
        app = EmpsyncApp(service, config, log_handler=handler, api=api, turns=turns)
        app.run()
        return app.return_code or 0
    finally:
        root.removeHandler(handler)
        configure(level=logging.WARNING)  # the screen is gone: late warnings may use the terminal again
        if api is not None and service.alive:
            api.stop()
        if service.alive and not service.stop(STOP_TIMEOUT_S):
            log.warning("the current batch did not finish in time; exiting anyway (it is rolled back)")
