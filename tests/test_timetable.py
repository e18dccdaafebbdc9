"""Scheduled runs keep UTC time when the host's local clock changes for daylight saving.

The ``schedule`` library compares naive local times. These tests put the
process in Central European time (a POSIX TZ rule, so no zone files are
needed), freeze a UTC clock, and step it across both changes of 2026, with
the library's own reading of local time following the same clock.
"""

from __future__ import annotations

import datetime as dt
import time
import types
from datetime import UTC, datetime, timedelta

import pytest
import schedule

from core.timetable import JobKind, Timetable

CET = "CET-1CEST,M3.5.0,M10.5.0/3"  # Europe/Berlin: CEST from the last Sunday of March to that of October
SPRING_FORWARD = datetime(2026, 3, 29, 1, 0)  # UTC: local 02:00 CET becomes 03:00 CEST
FALL_BACK = datetime(2026, 10, 25, 1, 0)  # UTC: local 03:00 CEST becomes 02:00 CET


class Clock:
    """A frozen UTC clock, and the host's local time at that instant."""

    def __init__(self, utc: datetime) -> None:
        self.utc = utc

    def local(self) -> datetime:
        return self.utc.replace(tzinfo=UTC).astimezone().replace(tzinfo=None)


@pytest.fixture
def clock(monkeypatch):
    """A host in Central European time whose clock the test moves; the library reads it too."""
    monkeypatch.setenv("TZ", CET)
    time.tzset()
    clock = Clock(datetime(2026, 1, 1))

    class LibraryNow(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return clock.local() if tz is None else clock.utc.replace(tzinfo=UTC).astimezone(tz)

    monkeypatch.setattr(schedule, "datetime", types.SimpleNamespace(datetime=LibraryNow, timedelta=dt.timedelta))
    yield clock
    monkeypatch.undo()
    time.tzset()


def steps(clock: Clock, start: datetime, end: datetime, look) -> None:
    """Move the clock a minute at a time from ``start`` to ``end``, looking at each minute."""
    clock.utc = start
    while clock.utc <= end:
        look()
        clock.utc += timedelta(minutes=1)


def test_the_clock_really_changes_for_daylight_saving(clock):
    clock.utc = FALL_BACK - timedelta(minutes=30)
    before = clock.local()
    clock.utc = FALL_BACK + timedelta(minutes=30)
    assert (before.hour, before.minute, clock.local().hour, clock.local().minute) == (2, 30, 2, 30)


@pytest.mark.parametrize("change", [SPRING_FORWARD, FALL_BACK], ids=["spring-forward", "fall-back"])
def test_a_run_planned_before_the_change_is_due_at_its_utc_time(clock, change):
    fired: list[datetime] = []
    clock.utc = change - timedelta(minutes=30)
    timetable = Timetable(lambda kind: fired.append(clock.utc), clock=lambda: clock.utc, local_clock=clock.local)
    timetable.plan("force", 3 * 3600, change + timedelta(minutes=20))
    steps(clock, clock.utc, change + timedelta(hours=2), timetable.run_pending)
    assert fired == [change + timedelta(minutes=20)]


@pytest.mark.parametrize("change", [SPRING_FORWARD, FALL_BACK], ids=["spring-forward", "fall-back"])
def test_an_hourly_run_stays_hourly_in_utc_across_the_change(clock, change):
    fired: list[tuple[JobKind, datetime]] = []
    clock.utc = change - timedelta(hours=1)
    timetable = Timetable(
        lambda kind: fired.append((kind, clock.utc)), clock=lambda: clock.utc, local_clock=clock.local
    )
    timetable.plan("normal", 3600, change - timedelta(minutes=20))
    steps(clock, clock.utc, change + timedelta(hours=3), timetable.run_pending)
    assert fired == [("normal", change + timedelta(minutes=m)) for m in (-20, 40, 100, 160)]
    assert timetable.due("normal") == change + timedelta(minutes=220)


@pytest.mark.parametrize(
    ("change", "off_by"), [(SPRING_FORWARD, timedelta(minutes=-20)), (FALL_BACK, timedelta(hours=1))]
)
def test_the_library_alone_would_be_off_by_the_change(clock, change, off_by):
    """What the timetable corrects: a next_run set in naive local time before the change."""
    fired: list[datetime] = []
    clock.utc = change - timedelta(minutes=30)
    scheduler = schedule.Scheduler()
    job = scheduler.every(3 * 3600).seconds.do(lambda: fired.append(clock.utc))
    job.next_run = clock.local() + timedelta(minutes=50)  # due 20 minutes after the change, in UTC
    steps(clock, clock.utc, change + timedelta(hours=2), scheduler.run_pending)
    assert fired == [change + timedelta(minutes=20) + off_by]


def test_a_run_missed_while_busy_runs_once_and_each_job_is_told_by_its_tag(clock):
    fired: list[JobKind] = []
    clock.utc = datetime(2026, 6, 1, 12, 0)
    timetable = Timetable(fired.append, clock=lambda: clock.utc, local_clock=clock.local)
    timetable.plan("normal", 60, clock.utc)
    timetable.plan("force", 3600, clock.utc + timedelta(hours=1))
    assert timetable.is_due("normal") and not timetable.is_due("force")
    clock.utc += timedelta(minutes=10)  # ten intervals went by while a run was busy
    timetable.run_pending()
    timetable.run_pending()
    assert fired == ["normal"]
    assert timetable.due("normal") == clock.utc + timedelta(minutes=1)
    timetable.plan("normal", 120, clock.utc)  # replanned (a new interval): one job still, the new interval
    timetable.run_pending()
    assert fired == ["normal", "normal"] and timetable.due("normal") == clock.utc + timedelta(minutes=2)
