"""The operator console (tui/): Pilot tests, most against a stand-in service, three against the real one.

The console's own behaviour (keys, dialogs, the filter, pause, the Log's
bounds, coalescing, its screens) is tested against
``console_support.FakeService``: the service's face API over a worker thread
of its own that sends real core events through the subscriber the App
registers, so the real Bridge and ``post_message`` carry them. These need no
server and run in seconds. Three tests host a real ``SyncService`` on the
real emulator and databases (marked integration): a forced run seen in every
pane, a Firestore change reaching Recent changes, and q releasing the lock.
The snapshot tests render fixed data with a frozen clock.

Every wait polls a condition against a generous deadline, never a fixed
sleep or wall time.
"""

from __future__ import annotations

import copy
import inspect
import logging
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pytest_textual_snapshot import SVGImageExtension
from sqlalchemy import create_engine
from textual.command import CommandList, CommandPalette

from core.dialects import make_lock
from core.events import BatchApplied, ChangeRecord
from core.face import SyncFace
from core.service import SyncService
from core.times import utcnow
from tui import format as fmt
from tui.app import EmpsyncApp
from tui.messages import LogLine
from tui.panes.changes import MAX_CHANGES
from tui.panes.log import MAX_LINES
from tui.screens.confirm import ConfirmScreen
from tui.screens.filter import FilterScreen
from tui.screens.help import HelpScreen
from tui.screens.ids import IdsScreen
from tui.screens.interval import IntervalScreen
from tui.screens.rejects import RejectsScreen
from tui.screens.runs import RunChangesScreen, RunsScreen

from .conftest import employee, write_docs
from .console_support import FakeService, Script, audit_row, change
from .service_support import until

# -- helpers ----------------------------------------------------------------------------


def console(config, **kwargs) -> tuple[EmpsyncApp, SyncService]:
    service = SyncService(config)
    return EmpsyncApp(service, config, **kwargs), service


def table_rows(app: EmpsyncApp) -> list[list[str]]:
    table = app.changes_pane.table
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def leading(service: Any) -> bool:
    snap = service.snapshot()
    return snap.get("is_leader") and snap.get("state") == "idle"


def last_run_done(service: Any, kind: str | None = None) -> bool:
    result = service.snapshot().get("last_result") or {}
    return result.get("status") == "ok" and (kind is None or result.get("kind") == kind)


def toasted(app: EmpsyncApp, text: str) -> bool:
    return any(text in t for t in app.toasts)


def logged(app: EmpsyncApp, text: str) -> bool:
    return any(text in line for line in app.log_pane.text_lines())


async def ready(pilot, fake: FakeService) -> None:
    """The stand-in leads and is idle, and the console has read its history."""
    await until(pilot, lambda: leading(fake), "the stand-in to lead")
    await until(pilot, lambda: fake.called("recent_changes"), "the console to read the history")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


# -- end to end: the real service on the real servers ---------------------------------------


@pytest.mark.integration
async def test_force_sync_shows_in_status_stats_and_log(make_config, mysql_url, firestore_client):
    """End to end on MariaDB: f queues a forced run that the Status, Stats and Log panes and a toast all report."""
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(30)})
    app, service = console(make_config(mysql_url, sync={"interval": 3600}))
    async with app.run_test(size=(140, 40)) as pilot:
        # A first start syncs at once (nothing has run yet): let that run end, then force one.
        await until(pilot, lambda: last_run_done(service), "the start-up run")
        before = service.snapshot()["last_result"]["run_id"]
        await pilot.press("f")
        assert any("Force sync queued" in t for t in app.toasts)

        def forced() -> bool:
            result = service.snapshot().get("last_result") or {}
            return result.get("kind") == "force" and result.get("run_id") != before and result["status"] == "ok"

        await until(pilot, forced, "the forced run")
        await until(pilot, lambda: "IDLE" in app.status_pane.text, "Status to be idle again")
        stamp = fmt.absolute(fmt.parse_time(service.snapshot()["last_sync_at"]), utcnow())
        # The forced run's time, as Last (the pane redraws once a second: IDLE may be from just before).
        await until(pilot, lambda: f"· {stamp}" in app.status_pane.text, "Status to show the forced run's time")
        await until(pilot, lambda: "Runs 2" in app.stats_pane.text, "Stats to count both runs")
        assert "Inserted 30" in app.stats_pane.text and "Unchanged 30" in app.stats_pane.text

        def completed() -> int:
            return sum("Employee sync completed" in line for line in app.log_pane.text_lines())

        await until(pilot, lambda: completed() >= 2, "the Log to show the completed forced run")
        assert "leader: this console" in app.status_pane.text
        assert "***" in app.status_pane.text and "s3cret" not in app.status_pane.text  # password masked
        assert any("Force sync done" in t for t in app.toasts)
        await pilot.press("q")
    service.stop()


@pytest.mark.integration
async def test_a_firestore_change_appears_in_recent_changes(make_config, sqlite_url, firestore_client):
    """End to end: a salary written to Firestore reaches Recent changes as one update row after s."""
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(5)})
    app, service = console(make_config(sqlite_url, sync={"interval": 3600}))
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: leading(service), "the service to lead")
        await pilot.press("f")
        await until(pilot, lambda: last_run_done(service, "force"), "the first forced run")
        await until(pilot, lambda: len(table_rows(app)) == 5, "the five inserts in Recent changes")
        assert all(row[1] == "insert" for row in table_rows(app))

        write_docs(firestore_client, {"e3": employee(3, salary=99_999)})
        await pilot.press("s")
        await until(
            pilot,
            lambda: any(r[2] == "e3" and "salary: 50003 → 99999" in r[4] for r in table_rows(app)),
            "the salary change in Recent changes",
        )
        newest = table_rows(app)[0]
        assert newest[1] == "update" and newest[2] == "e3" and newest[3] == "Employee 3"
        await pilot.press("q")
    service.stop()


@pytest.mark.integration
async def test_q_stops_the_service_and_frees_the_lock(make_config, mysql_url):
    """End to end on MariaDB: while the console leads no one else gets the lock; after q another process does."""
    config = make_config(mysql_url)
    app, service = console(config)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: service.snapshot().get("is_leader"), "the service to lead")
        engine = create_engine(mysql_url)
        other = make_lock(engine, config.target.table)
        assert not other.acquire()  # the console holds it
        await pilot.press("q")
        assert "STOPPING" in app.status_pane.text
        await until(pilot, lambda: not service.alive, "the worker to stop")
    assert app.return_code == 0
    assert other.acquire(), "the lock is still held after quitting"
    other.release()
    engine.dispose()


# -- the console's own behaviour, against the stand-in service (no servers) -----------------


def face_members() -> list[str]:
    return [name for name in vars(SyncFace) if not name.startswith("_")]


@pytest.mark.parametrize("implementation", [SyncService, FakeService])
def test_the_stand_in_and_the_service_have_the_face_the_console_uses(implementation):
    """Every call of the face Protocol, with its parameters by name, kind and which have defaults: the
    stand-in cannot drift from what the console may call, nor the service from the Protocol."""

    def shape(function) -> list[tuple[str, Any, bool]]:
        parameters = inspect.signature(function).parameters.values()
        return [(p.name, p.kind, p.default is not p.empty) for p in parameters]

    for name in face_members():
        wanted, got = inspect.getattr_static(SyncFace, name), inspect.getattr_static(implementation, name, None)
        assert got is not None, f"{implementation.__name__} has no {name}"
        if isinstance(wanted, property):
            assert isinstance(got, property), name
        else:
            assert shape(got) == shape(wanted), name


async def test_f_and_s_queue_runs_whose_events_reach_every_pane():
    """f and s ask the service for runs from the console; a run's events fill Recent changes, Status,
    Stats, the Log and a toast, all through the bridge from the worker thread."""
    fake = FakeService()
    inserts = tuple(change(f"e{i}", "insert", name=f"Employee {i}") for i in range(30))
    fake.script(Script(changes=inserts, batch_size=10))
    app = EmpsyncApp(fake)
    async with app.run_test(size=(140, 40)) as pilot:
        await ready(pilot, fake)
        await pilot.press("f")
        assert [c.args for c in fake.called("force_sync")] == [("console",)]
        assert toasted(app, "Force sync queued (#1)")
        await until(pilot, lambda: last_run_done(fake, "force"), "the forced run")
        await until(pilot, lambda: len(table_rows(app)) == 30, "its 30 inserts in Recent changes")
        assert [r[2] for r in table_rows(app)[:2]] == ["e29", "e28"]
        assert all(r[1] == "insert" for r in table_rows(app))
        await until(pilot, lambda: toasted(app, "Force sync done (run #1): 30 read, 30 written"), "the done toast")
        await until(pilot, lambda: "Runs 1" in app.stats_pane.text, "Stats to count the run")
        assert "Inserted 30" in app.stats_pane.text
        assert "IDLE" in app.status_pane.text and "leader: this console" in app.status_pane.text
        assert logged(app, "Employee sync completed")

        await pilot.press("s")
        assert [c.args for c in fake.called("sync_now")] == [("console",)]
        assert toasted(app, "Sync queued (#2)")
        await until(pilot, lambda: toasted(app, "Sync done (run #2): 0 read, 0 written"), "the second run's toast")
        await pilot.press("q")
    assert app.return_code == 0 and fake.called("stop") and not fake.alive


async def test_selected_employees_then_the_history_and_a_rollback():
    """e refuses a bad id as it is typed and asks for a run of the good ones; h lists the runs, Enter shows
    a run's changes, u shows what a rollback would put back and asks before the service rolls back."""
    fake = FakeService()
    fake.script(Script(changes=(change("e1", field="salary", old="50001", new="7", name="Employee 1"),)))
    app = EmpsyncApp(fake)
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot, fake)
        await pilot.press("e")
        assert isinstance(app.screen, IdsScreen)
        await pilot.press(*"e1, x/y")
        assert "/" in app.screen.problem  # refused as you type
        await pilot.press("enter")
        assert isinstance(app.screen, IdsScreen) and not fake.called("sync_ids")  # and on Enter
        await pilot.press(*["backspace"] * 5, "enter")
        assert [c.args for c in fake.called("sync_ids")] == [(("e1",), "console")]
        assert toasted(app, "Sync of 1 employee(s) queued")
        await until(pilot, lambda: toasted(app, "Sync of selected employees done"), "its toast")
        ids_run = fake.snapshot()["last_result"]["run_id"]

        await pilot.press("h")
        assert isinstance(app.screen, RunsScreen)
        await until(pilot, lambda: app.screen.rows, "the run history")
        assert (app.screen.rows[0]["id"], app.screen.rows[0]["kind"]) == (ids_run, "ids")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RunChangesScreen) and app.screen.rows, "the run's changes")
        assert [(r["field"], r["new_value"]) for r in app.screen.rows] == [("salary", "7")]
        await pilot.press("escape", "u")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation")
        assert [c.args for c in fake.called("plan_rollback")] == [(ids_run,)]
        assert f"Put back 1 row(s) as they were before run(s) #{ids_run}: 1 updated" in app.screen.text
        assert "paused" in app.screen.text
        assert not fake.called("rollback"), "nothing is rolled back before the operator says yes"
        await pilot.press("y")
        assert [(c.args, c.kwargs["trigger"]) for c in fake.called("rollback")] == [((ids_run,), "console")]
        await until(pilot, lambda: toasted(app, f"rolled back #{ids_run}"), "the rollback's toast")
        await until(pilot, lambda: app.paused, "the pause after a rollback")
        await pilot.press("escape", "q")


async def test_interval_dialog_hands_the_seconds_to_the_service_and_status_shows_them():
    """Enter in the interval dialog sets the interval once, through the service; Status shows where it is stored."""
    fake = FakeService()
    app = EmpsyncApp(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, fake)
        await pilot.press("i")
        assert isinstance(app.screen, IntervalScreen)
        await pilot.press("1", "2", "0", "enter")
        assert not isinstance(app.screen, IntervalScreen)
        assert [c.args for c in fake.called("set_interval")] == [(120,)]
        assert toasted(app, "Interval set to 120 s")
        await until(pilot, lambda: "120 s (database)" in app.status_pane.text, "Status to show 120 s")
        await pilot.press("q")


async def test_interval_dialog_refuses_out_of_range_values_and_sets_nothing():
    """Below 10 s or above a day the dialog says why, stays open on Enter, and Esc leaves the interval alone."""
    fake = FakeService()
    app = EmpsyncApp(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, fake)
        await pilot.press("i", "5")
        modal = app.screen
        assert isinstance(modal, IntervalScreen)
        assert modal.problem == "At least 10 seconds"
        await pilot.press("enter")  # refused: the dialog stays, the error stays
        assert app.screen is modal and modal.problem == "At least 10 seconds"
        await pilot.press("backspace", *"90000", "enter")
        assert app.screen is modal and modal.problem.startswith("At most 86,400")
        await pilot.press("escape")
        assert not isinstance(app.screen, IntervalScreen)
        await pilot.pause()
        assert not fake.called("set_interval") and fake.snapshot()["interval"] == 300
        await pilot.press("q")


async def test_p_pauses_and_the_palette_resumes_with_toasts_and_the_right_keys():
    """p pauses scheduled runs through the service (a toast says how to resume); only resume is then offered,
    and the command palette finds it by name."""
    fake = FakeService()
    app = EmpsyncApp(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, fake)
        await pilot.press("p")
        assert len(fake.called("pause")) == 1 and toasted(app, "Press p to resume")
        await until(pilot, lambda: "PAUSED" in app.status_pane.text, "Status to say paused")
        assert app.check_action("resume", ()) and not app.check_action("pause", ())
        await pilot.press("ctrl+p")  # the command palette offers the same actions, by name
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"resume")
        await until(pilot, lambda: app.screen.query_one(CommandList).option_count, "the palette's matches")
        await pilot.press("enter")
        await until(pilot, lambda: fake.called("resume"), "the palette to resume")
        await until(pilot, lambda: "IDLE" in app.status_pane.text, "Status to say idle")
        assert toasted(app, "Scheduled syncs resumed")
        assert app.check_action("pause", ()) and not app.check_action("resume", ())
        await pilot.press("q")


async def test_slash_filters_by_id_or_name_with_older_matches_from_the_database():
    """/ keeps the changes whose id or name holds the text: those in memory and, asked of the database,
    older ones beyond the pane's window; Esc on the main screen clears the filter."""
    older = [audit_row(1, "x-alice", name="Alice Silva")]
    older += [audit_row(n, f"h{n:03d}", name=f"Person {n}") for n in range(2, MAX_CHANGES + 2)]
    fake = FakeService(changes=reversed(older))  # newest first, as the database returns them
    batch = (change("e5", field="salary", old="1", new="2", name="Bruno Silva"), change("e6", "insert", name="Eva"))
    fake.script(Script(changes=batch))
    app = EmpsyncApp(fake)
    async with app.run_test(size=(140, 40)) as pilot:
        await ready(pilot, fake)
        assert len(table_rows(app)) == MAX_CHANGES and "x-alice" not in {r[2] for r in table_rows(app)}
        await pilot.press("f")
        await until(pilot, lambda: table_rows(app)[0][2] == "e6", "the run's changes on top")

        await pilot.press("slash")
        assert isinstance(app.screen, FilterScreen)
        await pilot.press(*"silva", "enter")
        await until(pilot, lambda: [r[2] for r in table_rows(app)] == ["e5", "x-alice"], "the filter by name")
        assert fake.called("recent_changes")[-1].kwargs == {"limit": MAX_CHANGES, "needle": "silva"}
        assert "silva" in app.changes_pane.border_title

        await pilot.press("slash", "e", "6", "enter")
        await until(pilot, lambda: [r[2] for r in table_rows(app)] == ["e6"], "the filter by id")
        await pilot.press("escape")  # clears the filter on the main screen
        await until(pilot, lambda: len(table_rows(app)) == MAX_CHANGES, "all rows back")
        assert "filter" not in app.changes_pane.border_title
        await pilot.press("q")


async def test_a_change_read_at_start_up_and_then_sent_as_an_event_shows_once():
    """The history read at start-up can race the first run: a row it read may then arrive as that run's
    event too. It shows once; the same change made again later (at another time) shows again."""
    at = utcnow()
    fake = FakeService(
        changes=[audit_row(1, "e1", "update", name="Employee 1", field="salary", old="1", new="2", at=at)]
    )
    app = EmpsyncApp(fake)
    async with app.run_test(size=(140, 40)) as pilot:
        await ready(pilot, fake)
        assert [r[2] for r in table_rows(app)] == ["e1"]
        same = ChangeRecord(at, "e1", "update", "salary", "1", "2", "Employee 1")
        again = ChangeRecord(at + timedelta(seconds=5), "e1", "update", "salary", "1", "2", "Employee 1")
        fake.emit(BatchApplied(at, 1, {}, (same,)), BatchApplied(at, 2, {}, (change("e2", "insert"),)))
        await until(pilot, lambda: [r[2] for r in table_rows(app)] == ["e2", "e1"], "the second event's row")
        fake.emit(BatchApplied(again.at, 3, {}, (again,)))
        await until(pilot, lambda: [r[2] for r in table_rows(app)] == ["e1", "e2", "e1"], "the change made again")
        await pilot.press("q")


async def test_the_help_screen_is_built_once_and_shown_again():
    """? shows the same help screen each time (composing it anew was most of a key's work), Esc closes it."""
    app = fixed_console()
    async with app.run_test(size=(100, 30)) as pilot:
        shown = []
        for _ in range(2):
            await pilot.press("question_mark")
            await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
            shown.append(app.screen)
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, HelpScreen), "the main screen again")
        assert shown[0] is shown[1]


async def test_keys_answer_while_a_run_is_in_progress():
    """While a run is under way (held open after its first batch) ? opens the help, Esc closes it, and p
    pauses at once, shown as a pause to come; the run then ends paused, the table at its bound."""
    fake = FakeService()
    fake.script(Script(changes=tuple(change(f"big{i:04d}", "insert") for i in range(MAX_CHANGES + 100)), batch_size=20))
    gate = fake.hold_runs()
    app = EmpsyncApp(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, fake)
        await pilot.press("f")
        await until(pilot, lambda: "SYNCING" in app.status_pane.text, "Status to show the run in progress")
        await until(pilot, lambda: len(table_rows(app)) == 20, "the first batch in the table")

        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("p")
        assert app.paused and fake.called("pause")
        await until(pilot, lambda: "then paused" in app.status_pane.text, "Status to show the pause to come")
        assert fake.snapshot()["current_run"], "the run is still held open"

        gate.set()
        await until(pilot, lambda: last_run_done(fake), "the run to finish")
        await until(pilot, lambda: "PAUSED" in app.status_pane.text, "Status to say paused after the run")
        await until(pilot, lambda: table_rows(app)[0][2] == f"big{MAX_CHANGES + 99:04d}", "the last batch")
        assert len(table_rows(app)) == MAX_CHANGES
        await pilot.press("q")


async def test_q_during_a_run_says_stopping_stops_the_service_and_exits_0():
    """q while a batch is in progress: Status says stopping, the service is asked to stop once (q again only
    says it is still stopping), and when the batch has ended the console exits 0."""
    fake = FakeService()
    fake.script(Script(changes=(change("e1", "insert"),)))
    batch = fake.hold_runs()
    app = EmpsyncApp(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, fake)
        await pilot.press("f")
        await until(pilot, lambda: "SYNCING" in app.status_pane.text, "the run to start")
        await pilot.press("q")
        assert "STOPPING" in app.status_pane.text and toasted(app, "Stopping the sync service")
        await pilot.press("q")
        assert toasted(app, "Still stopping the service")
        assert fake.alive, "the batch in progress holds the stop"
        batch.set()
        await until(pilot, lambda: not fake.alive, "the stand-in's worker to stop")
    assert app.return_code == 0 and len(fake.called("stop")) == 1


def arrived(pane, line: str) -> bool:
    """Whether ``line`` is among the pane's newest lines (the service may log a line after it)."""
    return any(text.endswith(line) for text in pane.text_lines()[-20:])


async def test_log_is_bounded_and_keeps_the_readers_place():
    """The Log keeps its newest MAX_LINES lines; a reader scrolled up stays on the same line while more
    arrive; End follows again; a flood faster than the screen is shed and the Log says so."""
    fake = FakeService()
    app = EmpsyncApp(fake)
    chatty = logging.getLogger("empsync.test.chatty")

    def lines(prefix: str, count: int) -> None:
        # From another thread, as the worker logs; paced like a reader thread that backs off.
        for n in range(count):
            while app.bridge.in_flight > 200:
                time.sleep(0.005)
            chatty.info("%s %d", prefix, n)

    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot, fake)
        threading.Thread(target=lines, args=("line", MAX_LINES + 500)).start()
        await until(pilot, lambda: arrived(app.log_pane, f"line {MAX_LINES + 499}"), "the first burst")
        assert len(app.log_pane.lines) == MAX_LINES  # bounded
        view = app.log_pane
        await until(pilot, lambda: view.following, "the Log to follow the tail")  # once the last lines are laid out
        # The reader scrolls up to somewhere near the end (set directly: key scrolls animate).
        view.scroll_to(y=view.max_scroll_y - 20, animate=False, immediate=True)
        await pilot.pause()
        reading = view.visible_text()[0]
        assert not view.following

        threading.Thread(target=lines, args=("more", 300)).start()
        await until(pilot, lambda: arrived(view, "more 299"), "the second burst")
        await pilot.pause()
        assert view.visible_text()[0] == reading, "the view moved under the reader"
        assert len(view.lines) == MAX_LINES  # while older lines fell off the top
        view.focus()
        await pilot.press("end")
        await pilot.wait_for_scheduled_animations()
        assert view.following

        for n in range(3000):  # far faster than any screen: lines are shed, and the Log says so
            chatty.info("flood %d", n)
        await until(pilot, lambda: any("log lines dropped" in t for t in view.text_lines()), "the shed notice")
        assert len(view.lines) == MAX_LINES
        await pilot.press("q")


async def test_a_burst_of_changes_is_coalesced_and_bounded():
    """1,500 changes in 15 events from the worker thread: the table ends at MAX_CHANGES rows, newest on top,
    and every event was handled (none left in flight)."""
    fake = FakeService()
    app = EmpsyncApp(fake)
    now = utcnow()
    records = [ChangeRecord(now, f"b{i}", "update", "salary", str(i), str(i + 1), f"B {i}") for i in range(1500)]
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, fake)
        fake.emit(*(BatchApplied(now, 1, {}, tuple(records[start : start + 100])) for start in range(0, 1500, 100)))
        await until(pilot, lambda: table_rows(app) and table_rows(app)[0][2] == "b1499", "the burst in the table")
        assert app.changes_pane.table.row_count == MAX_CHANGES
        assert [r[2] for r in table_rows(app)[:3]] == ["b1499", "b1498", "b1497"]
        assert app.bridge.in_flight == 0
        await pilot.press("q")


async def test_a_database_outage_shows_in_status_and_log_and_the_rejects_screen_says_it_cannot_read():
    """The service in error (the database away): Status and the Log say so; r opens the rejects screen,
    which says it could not read them instead of crashing."""
    fake = FakeService(leads=False)
    fake.read_error = "cannot reach the database (OperationalError)"
    app = EmpsyncApp(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        fake.set_state("error", "cannot reach the database for the sync lock (OperationalError) (retrying)")
        await until(pilot, lambda: "ERROR" in app.status_pane.text, "Status to show the error")
        assert "retrying" in app.status_pane.text
        await until(pilot, lambda: logged(app, "Status: error"), "the Log to show the error")
        await pilot.press("r")
        assert isinstance(app.screen, RejectsScreen)
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.screen.summary == "Could not read the rejects: cannot reach the database (OperationalError)"
        await pilot.press("escape", "q")
    assert app.return_code == 0


async def test_a_failed_run_is_a_toast_with_its_hint_and_the_console_carries_on():
    """A run that fails (Firestore unreachable): a toast and the Log give the reason and the hint, Status
    shows the error and the retry, and keys still answer."""
    fake = FakeService()
    reason, hint = "cannot reach Firestore at 127.0.0.1:1 (deadline exceeded)", "is the emulator running?"
    fake.script(Script(fail=reason, hint=hint))
    app = EmpsyncApp(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, fake)
        await pilot.press("s")
        await until(pilot, lambda: any(t == f"{reason}\n{hint}" for t in app.toasts), "the failure's toast")
        await until(pilot, lambda: "retrying in 5 s" in app.status_pane.text, "Status to show the retry")
        await until(pilot, lambda: logged(app, f"Hint: {hint}"), "the hint in the Log")
        assert logged(app, "Employee sync failed")
        await pilot.press("question_mark", "escape", "p")  # still answering
        assert app.paused
        await pilot.press("q")


async def test_rejects_screen_lists_each_reject_and_shows_the_whole_of_the_highlighted_one():
    """r lists the open rejects; the highlighted one's full id and reason show below the table, made safe
    for the terminal."""
    long_reason = "salary: 'lots' is not an integer " + "x" * 300
    rows = [
        {"document_id": "e0666", "field": "salary", "rejected_at": utcnow(), "reason": long_reason},
        {"document_id": "e\x1b[2Jvil", "field": "name", "rejected_at": utcnow(), "reason": "name: required"},
    ]
    fake = FakeService(rejects=rows)
    app = EmpsyncApp(fake)
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot, fake)
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, RejectsScreen) and app.screen.rows, "the rejects")
        screen = app.screen
        assert screen.summary.startswith("2 document(s) not written")
        detail = screen.query_one("#reject-detail")
        await until(pilot, lambda: long_reason in str(detail.render()), "the whole reason of the first")
        await pilot.press("down")
        await until(pilot, lambda: "name: required" in str(detail.render()), "the second")
        assert "\x1b" not in str(detail.render())
        await pilot.press("r")  # r closes it again
        assert not isinstance(app.screen, RejectsScreen)
        await pilot.press("q")


async def test_a_standby_console_tails_what_the_leader_writes():
    """Beside a leader, the console reads the leader's changes and log lines from the database once a
    second: they reach Recent changes, and the Log with the leader's name in front."""
    leader = "ops-1:4242"
    fake = FakeService(leads=False)
    fake.set_snapshot(leader=leader)
    fake.others_changes = [audit_row(7, "e3", "update", name="Employee 3", field="salary", old="1", new="2")]
    fake.others_log = [
        {
            "id": 1,
            "at": utcnow(),
            "level": "INFO",
            "logger": "empsync.sync",
            "text": "Employee updated: e3",
            "service": leader,
        }
    ]
    app = EmpsyncApp(fake)
    async with app.run_test(size=(140, 40)) as pilot:
        fake.set_state("standby", f"{leader} leads")
        await until(pilot, lambda: [r[2] for r in table_rows(app)] == ["e3"], "the leader's change")
        assert "salary: 1 → 2" in table_rows(app)[0][4]
        await until(pilot, lambda: logged(app, f"{leader} Employee updated: e3"), "the leader's line, named")
        fake.others_changes.append(audit_row(8, "e4", "insert", name="Employee 4"))
        await until(pilot, lambda: [r[2] for r in table_rows(app)] == ["e4", "e3"], "the next change, a look later")
        await pilot.press("q")


async def test_f_in_a_standby_console_is_asked_of_the_leader_and_its_progress_comes_back_as_toasts():
    """Beside a leader, f is forwarded (the toast says to whom); the request's start and its result come
    back as events and toasts naming the leader."""
    leader = "ops-1:4242"
    fake = FakeService(leads=False)
    view = {"service": leader, "at": "2025-03-14T09:26:53Z", "fresh": True, "snapshot": {"state": "idle"}}
    fake.set_snapshot(leader=leader, leader_view=view)
    app = EmpsyncApp(fake)
    async with app.run_test(size=(140, 40)) as pilot:
        fake.set_state("standby", f"{leader} leads")
        await until(pilot, lambda: "this console: standby" in app.status_pane.border_title, "the standby view")
        await pilot.press("f")
        assert toasted(app, f"Force sync asked of the leader {leader} (#1)")
        await until(pilot, lambda: toasted(app, f"Force sync started on the leader {leader}: run #"), "its start")
        await until(pilot, lambda: toasted(app, f"Force sync done on the leader {leader} (run #"), "its result")
        await pilot.press("q")


# -- snapshots: fixed data, frozen clock ----------------------------------------------------


NOW = datetime(2025, 3, 14, 9, 26, 53)


def _iso(moment: datetime) -> str:
    return moment.isoformat() + "Z"


SNAPSHOT: dict[str, Any] = {
    "state": "idle",
    "detail": "",
    "is_leader": True,
    "leader": "ops-1:4242",
    "service": "ops-1:4242",
    "interval": 300,
    "interval_source": "database",
    "force_interval": 3600,
    "mode": "poll",
    "last_sync_at": _iso(NOW - timedelta(seconds=134)),
    "last_force_sync_at": _iso(NOW - timedelta(minutes=14)),
    "next_sync_at": _iso(NOW + timedelta(seconds=166)),
    "next_force_sync_at": _iso(NOW + timedelta(minutes=46, seconds=7)),
    "current_run": None,
    "last_result": {"status": "ok", "kind": "normal", "run_id": 42},
    "failures": 0,
    "retry_at": None,
    "rows": 1234,
    "documents": 1240,
    "source": {"project": "demo-hr", "database": "(default)", "collection": "employees"},
    "target": "mysql+pymysql://empsync:***@db.internal:3306/hr",
    "table": "employees",
}

STATS: dict[str, Any] = {
    "runs": 42,
    "runs_by_status": {"ok": 41, "failed": 1},
    "inserted": 1240,
    "updated": 318,
    "deleted": 6,
    "unchanged": 48_113,
    "rejected": 9,
    "rejects_open": 3,
    "rows": 1234,
    "firestore_reads": 5521,
    "naive_reads": 52_080,
    "reads_saved_pct": 89.4,
    "last_duration_ms": 1840,
    "recent_durations_ms": [900, 1200, 800, 15_000, 1100, 950, 1300, 2100, 1840, 700, 650, 1840],
}

CHANGES = [  # newest first, as the database returns them
    ("e1042", "update", "salary", "61000", "64500", "Ana Ferreira"),
    ("e1042", "update", "position", "Engineer", "Senior Engineer", "Ana Ferreira"),
    ("e0007", "update", "city", "Lisbon", "Porto", "Bruno Costa"),
    ("e2210", "insert", None, None, None, "Carla Mendes"),
    ("e0319", "delete", None, None, None, None),
    ("e0455", "update", "email", "d.silva@example.com", "diogo.silva@example.com", "Diogo Silva"),
    ("e0981", "restore", None, None, None, "Eva Nunes"),
    ("e0512", "update", "remote", "false", "true", "Filipe Rocha"),
]


def fixed_changes() -> list[dict[str, Any]]:
    """CHANGES as the database returns them, two minutes apart and newest first."""
    return [
        audit_row(
            len(CHANGES) - n, doc, op, name=name, field=field, old=old, new=new, at=NOW - timedelta(minutes=2 + n * 3)
        )
        for n, (doc, op, field, old, new, name) in enumerate(CHANGES)
    ]


LOG_LINES = [
    (NOW - timedelta(seconds=140), "INFO", "Leading: this service syncs (empsync:hr.employees)"),
    (NOW - timedelta(seconds=136), "INFO", "Starting employee sync (normal, incremental since 2025-03-14T09:19:21Z)"),
    (NOW - timedelta(seconds=135), "INFO", "Employee updated: e1042 (salary, position)"),
    (NOW - timedelta(seconds=135), "WARNING", "Employee rejected: e0666: salary: 'lots' is not an integer"),
    (
        NOW - timedelta(seconds=134),
        "INFO",
        "Employee sync completed: 3 fetched, 0 inserted, 2 updated, 0 deleted, 0 unchanged, 1 rejected; "
        "4 Firestore reads (a full read: 1240) in 1840 ms",
    ),
    (NOW - timedelta(seconds=30), "ERROR", "could not store interval: the database went away (retrying)"),
]


def fixed_console(snapshot: dict[str, Any] = SNAPSHOT) -> EmpsyncApp:
    """The stand-in with fixed answers, not started: what the screen looks like, not what the service does."""
    fake = FakeService(snapshot=copy.deepcopy(snapshot), stats=copy.deepcopy(STATS), changes=fixed_changes())
    return EmpsyncApp(fake, start_service=False, clock=lambda: NOW)


async def _settle(pilot) -> None:
    app: EmpsyncApp = pilot.app
    for at, level, text in LOG_LINES:
        app.post_message(LogLine(at, level, "empsync.sync", text))
    await app.workers.wait_for_complete()
    await until(pilot, lambda: app.changes_pane.table.row_count == len(CHANGES), "the fixed changes")
    await until(pilot, lambda: len(app.log_pane.lines) >= len(LOG_LINES), "the fixed log lines")
    await pilot.pause()


class ConsoleSnapshots(SVGImageExtension):
    """Keeps the SVG baselines in tests/snapshots/<test file>/."""

    @classmethod
    def dirname(cls, *, test_location) -> str:
        return str(Path(test_location.filepath).parent / "snapshots" / test_location.basename)


@pytest.fixture
def snapshot(snapshot):
    # snap_compare switches the assertion to its own extension; keep ours, for the folder.
    ours = snapshot.use_extension(ConsoleSnapshots)
    ours.use_extension = lambda extension_class=None: ours
    return ours


def test_snapshot_main_screen_80x24(snap_compare):
    assert snap_compare(fixed_console(), terminal_size=(80, 24), run_before=_settle)


def test_snapshot_main_screen_140x40(snap_compare):
    assert snap_compare(fixed_console(), terminal_size=(140, 40), run_before=_settle)


def test_snapshot_interval_modal_with_inline_error(snap_compare):
    async def open_modal(pilot) -> None:
        await _settle(pilot)
        await pilot.press("i", "5")
        await pilot.pause()

    assert snap_compare(fixed_console(), terminal_size=(80, 24), run_before=open_modal)


def standby_snapshot(fresh: bool = True, attached: bool = False) -> dict[str, Any]:
    """A console beside a leader on another host: its own service stands by, the leader publishes."""
    leader = {
        **SNAPSHOT,
        "state": "syncing",
        "mode": "listen",
        "current_run": {"run_id": 77, "kind": "force", "counts": {"fetched": 400, "inserted": 3}},
        "listen_state": "listening",
        "lag_ms": 140,
        "listen_backlog": 12,
    }
    own = {**SNAPSHOT, "state": "attached" if attached else "standby", "is_leader": False}
    own.update(service="ops-2:5151", attached=attached, leader="ops-1:4242")
    own["leader_view"] = {"service": "ops-1:4242", "at": _iso(NOW), "fresh": fresh, "snapshot": leader}
    return own


async def test_a_standby_console_shows_the_leader_and_says_whose_view_it_is():
    """Status and the header show the live leader's published view, named; a silent leader's is not shown as live."""
    app = fixed_console(standby_snapshot())
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        pane = app.status_pane
        assert pane.border_title == "Status · leader ops-1:4242 · this console: standby"
        assert "SYNCING  force run #77 · 400 read, 3 written" in pane.text  # the leader's run
        assert "Mode listen · leader ops-1:4242 · this console: standby" in pane.text
        assert "Live listening · lag 140 ms · backlog 12" in pane.text
        assert app.sub_title.endswith("· leader ops-1:4242 · this console: standby")

    app = fixed_console(standby_snapshot(fresh=False, attached=True))
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        pane = app.status_pane
        assert pane.border_title == "Status · this console: attached · no live leader"
        assert "ATTACHED" in pane.text and "no live leader: f and s wait for one" in pane.text
        assert "attached, leader ops-1:4242 (not answering)" in pane.text
        assert "lag" not in pane.text, "a silent leader's view is not shown as if it were live"
