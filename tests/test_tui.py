"""The operator console (tui/): Pilot tests against the real emulator and MariaDB, plus snapshots.

The Pilot tests host a real ``SyncService`` in the App and wait on conditions
(workers, messages, the service's own status) with generous deadlines, never
on fixed sleeps or wall time. The snapshot tests render a fixed status (a
stand-in face with the service's small API and frozen data, and a frozen
clock) since they test what the screen looks like, not the sync.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pytest_textual_snapshot import SVGImageExtension
from sqlalchemy import create_engine
from textual import events
from textual.command import CommandList, CommandPalette

from core.dialects import make_lock
from core.events import BatchApplied, ChangeRecord
from core.service import SyncService
from core.times import utcnow
from tui import format as fmt
from tui.app import EmpsyncApp
from tui.messages import LogLine
from tui.panes.changes import MAX_CHANGES
from tui.screens.confirm import ConfirmScreen
from tui.screens.filter import FilterScreen
from tui.screens.help import HelpScreen
from tui.screens.ids import IdsScreen
from tui.screens.interval import IntervalScreen
from tui.screens.rejects import RejectsScreen
from tui.screens.runs import RunChangesScreen, RunsScreen

from .conftest import employee, run_cli, write_docs, write_toml
from .service_support import until

# -- helpers ----------------------------------------------------------------------------


def console(config, **kwargs) -> tuple[EmpsyncApp, SyncService]:
    service = SyncService(config)
    return EmpsyncApp(service, config, **kwargs), service


def table_rows(app: EmpsyncApp) -> list[list[str]]:
    table = app.changes_pane.table
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def leading(service: SyncService) -> bool:
    snap = service.snapshot()
    return snap.get("is_leader") and snap.get("state") == "idle"


def last_run_done(service: SyncService, kind: str | None = None) -> bool:
    result = service.snapshot().get("last_result") or {}
    return result.get("status") == "ok" and (kind is None or result.get("kind") == kind)


# -- Pilot tests against the real servers -------------------------------------------------


@pytest.mark.integration
async def test_force_sync_shows_in_status_stats_and_log(make_config, mysql_url, firestore_client):
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
async def test_selected_employees_then_the_history_and_a_rollback_from_the_console(
    make_config, sqlite_url, firestore_client
):
    from google.cloud import firestore

    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(5)})
    app, service = console(make_config(sqlite_url, sync={"interval": 3600}))
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: last_run_done(service), "the start-up run")
        firestore_client.collection("employees").document("e1").update(
            {"salary": 7, "updated_at": firestore.SERVER_TIMESTAMP}
        )
        await pilot.press("e")
        assert isinstance(app.screen, IdsScreen)
        await pilot.press(*"e1, x/y")
        assert "/" in app.screen.problem  # refused as you type
        await pilot.press(*["backspace"] * 5, "enter")
        await until(pilot, lambda: last_run_done(service, "ids"), "the ids run")
        await until(pilot, lambda: any("Sync of selected employees done" in t for t in app.toasts), "its toast")
        ids_run = service.snapshot()["last_result"]["run_id"]

        await pilot.press("h")
        assert isinstance(app.screen, RunsScreen)
        await until(pilot, lambda: len(app.screen.rows) >= 2, "the run history")
        assert app.screen.rows[0]["id"] == ids_run and app.screen.rows[0]["kind"] == "ids"
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RunChangesScreen) and app.screen.rows, "the run's changes")
        assert {(r["field"], r["new_value"]) for r in app.screen.rows} >= {("salary", "7")}
        await pilot.press("escape")
        await pilot.press("u")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation")
        assert "1 row" in app.screen.text and "paused" in app.screen.text
        await pilot.press("y")
        await until(pilot, lambda: last_run_done(service, "rollback"), "the rollback")
        await until(pilot, lambda: any("rolled back" in t for t in app.toasts), "the rollback's toast")
        await until(pilot, lambda: service.snapshot().get("paused"), "the pause after a rollback")
        await pilot.press("escape", "q")
    service.stop()


@pytest.mark.integration
async def test_a_firestore_change_appears_in_recent_changes(make_config, sqlite_url, firestore_client):
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
async def test_interval_modal_sets_the_interval_everywhere(make_config, mysql_url, tmp_path):
    config = make_config(mysql_url)
    app, service = console(config)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: service.snapshot().get("is_leader"), "the service to lead")
        await pilot.press("i")
        assert isinstance(app.screen, IntervalScreen)
        await pilot.press("1", "2", "0", "enter")
        assert not isinstance(app.screen, IntervalScreen)
        assert service.snapshot()["interval"] == 120

        def stored() -> bool:
            return service.engine.state.get("interval") == "120"

        await until(pilot, stored, "the worker to store the interval")
        await until(pilot, lambda: "120 s (database)" in app.status_pane.text, "Status to show 120 s")
        await pilot.press("q")
    service.stop()
    status = run_cli("status", "--json", "--config", str(write_toml(tmp_path / "sync.toml", config)))
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["interval"] == 120 and data["interval_source"] == "database"


@pytest.mark.integration
async def test_interval_modal_refuses_out_of_range_values(make_config, sqlite_url):
    app, service = console(make_config(sqlite_url, sync={"interval": 300}))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: service.snapshot().get("is_leader"), "the service to lead")
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
        assert service.snapshot()["interval"] == 300
        assert service.engine.state.get("interval") is None
        await pilot.press("q")
    service.stop()


@pytest.mark.integration
async def test_p_pauses_and_resumes_with_a_toast(make_config, sqlite_url):
    app, service = console(make_config(sqlite_url))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: leading(service), "the service to lead")
        await pilot.press("p")
        assert any("Press p to resume" in t for t in app.toasts)
        await until(pilot, lambda: service.snapshot()["state"] == "paused", "the service to pause")
        await until(pilot, lambda: "PAUSED" in app.status_pane.text, "Status to say paused")
        assert service.engine.state.get("paused") == "1"
        assert app.check_action("resume", ()) and not app.check_action("pause", ())
        await pilot.press("ctrl+p")  # the command palette offers the same actions, by name
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"resume")
        await until(pilot, lambda: app.screen.query_one(CommandList).option_count, "the palette's matches")
        await pilot.press("enter")
        await until(pilot, lambda: service.snapshot()["state"] == "idle", "the service to resume")
        assert service.engine.state.get("paused") == "0"
        await until(pilot, lambda: "IDLE" in app.status_pane.text, "Status to say idle")
        await pilot.press("q")
    service.stop()


@pytest.mark.integration
async def test_slash_filters_recent_changes_by_id_or_name(make_config, sqlite_url, firestore_client):
    docs = {f"e{i}": employee(i) for i in range(8)}
    docs["x-alice"] = employee(100, name="Alice Silva")
    write_docs(firestore_client, docs)
    app, service = console(make_config(sqlite_url, sync={"interval": 3600}))
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: leading(service), "the service to lead")
        await pilot.press("f")
        await until(pilot, lambda: len(table_rows(app)) == 9, "nine inserts in Recent changes")

        await pilot.press("slash")
        assert isinstance(app.screen, FilterScreen)
        await pilot.press(*"silva", "enter")
        await until(pilot, lambda: [r[2] for r in table_rows(app)] == ["x-alice"], "the filter by name")
        assert "silva" in app.changes_pane.border_title
        await app.workers.wait_for_complete()  # the database query for older matches
        await pilot.pause()
        assert [r[2] for r in table_rows(app)] == ["x-alice"]

        await pilot.press("slash", "e", "5", "enter")
        await until(pilot, lambda: [r[2] for r in table_rows(app)] == ["e5"], "the filter by id")

        await pilot.press("escape")  # clears the filter on the main screen
        await until(pilot, lambda: len(table_rows(app)) == 9, "all rows back")
        await pilot.press("q")
    service.stop()


@pytest.mark.integration
async def test_q_stops_the_service_and_frees_the_lock(make_config, mysql_url):
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


@pytest.mark.integration
async def test_keys_answer_while_a_large_sync_runs(make_config, sqlite_url, firestore_client):
    write_docs(firestore_client, {f"big{i:05d}": employee(i) for i in range(6000)})
    config = make_config(sqlite_url, target={"batch_size": 20}, sync={"interval": 3600})
    app, service = console(config)

    def key(name: str, character: str | None) -> None:
        # As the terminal driver delivers a key. (Pilot.press also waits for the whole process to
        # go idle, which it never does while the sync thread works: that would measure the sync.)
        app.post_message(events.Key(name, character))

    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: service.snapshot().get("current_run"), "the start-up run to begin")
        await until(pilot, lambda: len(table_rows(app)) > 0, "changes to arrive during the run")
        await until(pilot, lambda: "SYNCING" in app.status_pane.text, "Status to show the run in progress")

        key("question_mark", "?")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "? to open the help")
        assert service.snapshot().get("current_run"), "the run ended before ? was handled"
        key("escape", "\x1b")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen), "Esc to close the help")
        key("p", "p")
        await until(pilot, lambda: app.paused, "p to pause")
        assert service.snapshot().get("current_run"), "the run ended before p was handled"
        await until(pilot, lambda: "then paused" in app.status_pane.text, "Status to show the pause to come")
        rows_during = len(table_rows(app))
        assert 0 < rows_during <= MAX_CHANGES

        await until(pilot, lambda: last_run_done(service), "the large run to finish", deadline=240)
        assert service.snapshot()["last_result"]["inserted"] == 6000
        await until(pilot, lambda: len(table_rows(app)) == MAX_CHANGES, "the table to fill to its bound")
        assert table_rows(app)[0][2].startswith("big")
        await until(pilot, lambda: "PAUSED" in app.status_pane.text, "Status to say paused after the run")
        await pilot.press("q")
    service.stop()


def arrived(pane, line: str) -> bool:
    """Whether ``line`` is among the pane's newest lines (the service may log a line after it)."""
    return any(text.endswith(line) for text in pane.text_lines()[-20:])


@pytest.mark.integration
async def test_log_is_bounded_and_keeps_the_readers_place(make_config, sqlite_url):
    app, service = console(make_config(sqlite_url))
    chatty = logging.getLogger("empsync.test.chatty")

    def lines(prefix: str, count: int) -> None:
        # From another thread, as the worker logs; paced like a reader thread that backs off.
        for n in range(count):
            while app.bridge.in_flight > 200:
                time.sleep(0.005)
            chatty.info("%s %d", prefix, n)

    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: leading(service) and last_run_done(service), "the first run to end")
        threading.Thread(target=lines, args=("line", 2500)).start()
        await until(pilot, lambda: arrived(app.log_pane, "line 2499"), "the first burst")
        assert len(app.log_pane.lines) == 2000  # bounded
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
        assert len(view.lines) == 2000  # while older lines fell off the top
        view.focus()
        await pilot.press("end")
        await pilot.wait_for_scheduled_animations()
        assert view.following

        for n in range(3000):  # far faster than any screen: lines are shed, and the Log says so
            chatty.info("flood %d", n)
        await until(pilot, lambda: any("log lines dropped" in t for t in view.text_lines()), "the shed notice")
        assert len(view.lines) == 2000
        await pilot.press("q")
    service.stop()


@pytest.mark.integration
async def test_errors_show_in_status_and_log_without_a_crash(make_config):
    dead = "mysql+pymysql://empsync:pw@127.0.0.1:1/gone"  # nothing listens on port 1: MySQL is down
    app, service = console(make_config(dead))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: "ERROR" in app.status_pane.text, "Status to show the error")
        assert "Error" in app.status_pane.text and "retrying" in app.status_pane.text
        await until(
            pilot,
            lambda: any("Status: error" in line for line in app.log_pane.text_lines()),
            "the Log to show the error",
        )
        await pilot.press("r")  # the rejects screen says it cannot read them, and does not crash
        assert isinstance(app.screen, RejectsScreen)
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.screen.summary.startswith("Could not read the rejects")
        await pilot.press("escape", "q")
    service.stop()


@pytest.mark.integration
async def test_firestore_down_shows_as_an_error_and_the_console_carries_on(make_config, sqlite_url):
    config = make_config(sqlite_url, source={"emulator_host": "127.0.0.1:1", "timeout": 3})
    app, service = console(config)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: (service.snapshot().get("last_result") or {}).get("status") == "failed", "a run")
        await until(pilot, lambda: "last run failed" in app.status_pane.text, "Status to show the failure")
        await until(
            pilot,
            lambda: any("Employee sync failed" in line for line in app.log_pane.text_lines()),
            "the Log to show the failure",
        )
        reason = service.snapshot()["last_result"]["reason"]
        assert any(t.startswith(reason) for t in app.toasts)  # a toast named the cause
        await pilot.press("question_mark", "escape", "p")  # still answering
        assert app.paused
        await pilot.press("q")
    service.stop()


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


class FixedState:
    def recent_changes(self, limit: int = 50, needle: str = "") -> list[dict[str, Any]]:
        rows = []
        for n, (doc, op, field, old, new, name) in enumerate(CHANGES):
            rows.append(
                {
                    "changed_at": NOW - timedelta(minutes=2 + n * 3),
                    "document_id": doc,
                    "operation": op,
                    "field": field,
                    "old_value": old,
                    "new_value": new,
                    "name": name,
                }
            )
        return [r for r in rows if needle.casefold() in (r["document_id"] + (r["name"] or "")).casefold()][:limit]

    def rejects(self) -> list[dict[str, Any]]:
        return []


class FixedFace:
    """The service's face API with fixed answers: for rendering tests only."""

    alive = True

    def __init__(self) -> None:
        self.engine = SimpleNamespace(state=FixedState())

    def start(self) -> FixedFace:
        return self

    def stop(self, timeout: float = 9.0) -> bool:
        return True

    def subscribe(self, callback) -> Callable[[], None]:
        return lambda: None

    def snapshot(self) -> dict[str, Any]:
        return json.loads(json.dumps(SNAPSHOT))

    def stats(self) -> dict[str, Any]:
        return json.loads(json.dumps(STATS))

    def force_sync(self, trigger: str = "api") -> SimpleNamespace:
        return SimpleNamespace(request_id=1)

    sync_now = force_sync

    def set_interval(self, seconds: int) -> int:
        return seconds

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass


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


def fixed_console() -> EmpsyncApp:
    return EmpsyncApp(FixedFace(), start_service=False, clock=lambda: NOW)


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


@pytest.mark.integration
async def test_a_burst_of_changes_is_coalesced_and_bounded(make_config, sqlite_url):
    """1,500 changes in a burst from another thread: a few table updates, at most MAX_CHANGES rows."""
    app, service = console(make_config(sqlite_url))
    records = [ChangeRecord(NOW, f"b{i}", "update", "salary", str(i), str(i + 1), f"B {i}") for i in range(1500)]

    def burst() -> None:  # what the worker thread does: the subscriber the App registered
        for start in range(0, 1500, 100):
            app.bridge.on_event(BatchApplied(NOW, 1, {}, tuple(records[start : start + 100])))

    async with app.run_test(size=(80, 24)) as pilot:
        # Its start-up run over, so that nothing but the burst is in flight when it has arrived.
        await until(pilot, lambda: leading(service) and last_run_done(service), "the start-up run to end")
        threading.Thread(target=burst).start()
        await until(pilot, lambda: table_rows(app) and table_rows(app)[0][2] == "b1499", "the burst in the table")
        assert app.changes_pane.table.row_count == MAX_CHANGES
        assert [r[2] for r in table_rows(app)[:3]] == ["b1499", "b1498", "b1497"]
        assert app.bridge.in_flight == 0
        await pilot.press("q")
    service.stop()


class StandbyFace(FixedFace):
    """A console beside a leader on another host: its own service stands by, the leader publishes."""

    def __init__(self, fresh: bool = True, attached: bool = False) -> None:
        super().__init__()
        self.fresh, self.attached = fresh, attached

    def snapshot(self) -> dict[str, Any]:
        leader = {
            **SNAPSHOT,
            "state": "syncing",
            "mode": "listen",
            "current_run": {"run_id": 77, "kind": "force", "counts": {"fetched": 400, "inserted": 3}},
            "listen_state": "listening",
            "lag_ms": 140,
            "listen_backlog": 12,
        }
        own = {**SNAPSHOT, "state": "attached" if self.attached else "standby", "is_leader": False}
        own.update(service="ops-2:5151", attached=self.attached, leader="ops-1:4242")
        own["leader_view"] = {"service": "ops-1:4242", "at": _iso(NOW), "fresh": self.fresh, "snapshot": leader}
        return own


async def test_a_standby_console_shows_the_leader_and_says_whose_view_it_is():
    app = EmpsyncApp(StandbyFace(), start_service=False, clock=lambda: NOW)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        pane = app.status_pane
        assert pane.border_title == "Status · leader ops-1:4242 · this console: standby"
        assert "SYNCING  force run #77 · 400 read, 3 written" in pane.text  # the leader's run
        assert "Mode listen · leader ops-1:4242 · this console: standby" in pane.text
        assert "Live listening · lag 140 ms · backlog 12" in pane.text
        assert app.sub_title.endswith("· leader ops-1:4242 · this console: standby")

    app = EmpsyncApp(StandbyFace(fresh=False, attached=True), start_service=False, clock=lambda: NOW)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        pane = app.status_pane
        assert pane.border_title == "Status · this console: attached · no live leader"
        assert "ATTACHED" in pane.text and "no live leader: f and s wait for one" in pane.text
        assert "attached, leader ops-1:4242 (not answering)" in pane.text
        assert "lag" not in pane.text, "a silent leader's view is not shown as if it were live"
