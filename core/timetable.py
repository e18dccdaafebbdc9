"""The service's two scheduled jobs, a normal run and a force run, each one's due time kept in UTC.

The ``schedule`` library runs them, but it keeps a job's ``next_run`` in
naive local time and compares it with ``datetime.now()``: a job planned
before the local clock changes (DST) would run an hour early or late. Here
each job's truth is its due time in naive UTC. Before every look, the
library's ``next_run`` is derived afresh from it as "local now plus what is
left", so what the library compares is exactly "is the UTC due time
reached", whatever the local clock did meanwhile. Each job is tagged with its
kind, which is how the service tells them apart.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Literal, get_args

import schedule

from .times import utcnow

JobKind = Literal["normal", "force"]
JOB_KINDS: tuple[JobKind, ...] = get_args(JobKind)


class Timetable:
    """When each kind of run is next due; ``run(kind)`` is called on the thread that calls ``run_pending``."""

    def __init__(
        self,
        run: Callable[[JobKind], None],
        *,
        clock: Callable[[], datetime] = utcnow,
        local_clock: Callable[[], datetime] = datetime.now,
    ) -> None:
        self._run = run
        self._clock, self._local_clock = clock, local_clock  # the second only as the library reads it
        self._scheduler = schedule.Scheduler()
        self._due: dict[JobKind, datetime] = {}
        self._every: dict[JobKind, timedelta] = {}

    def __bool__(self) -> bool:
        """Whether any job is planned."""
        return bool(self._due)

    def plan(self, kind: JobKind, every: int, due: datetime) -> None:
        """Run ``kind`` every ``every`` seconds, next at ``due`` (naive UTC)."""
        jobs = self._scheduler.get_jobs(kind)
        if not jobs:
            jobs = [self._scheduler.every(every).seconds.do(self._fire, kind).tag(kind)]
        for job in jobs:
            job.interval = every
        self._every[kind], self._due[kind] = timedelta(seconds=every), due

    def due(self, kind: JobKind) -> datetime | None:
        """When ``kind`` is next due, in naive UTC (None before it is planned)."""
        return self._due.get(kind)

    def is_due(self, kind: JobKind) -> bool:
        due = self._due.get(kind)
        return due is not None and self._clock() >= due

    def run_pending(self) -> None:
        """Run the jobs that are due, each once however many of its intervals went by."""
        now, local = self._clock(), self._local_clock()
        for job in self._scheduler.get_jobs():
            job.next_run = local + (self._due[_kind(job)] - now)
        self._scheduler.run_pending()

    def _fire(self, kind: JobKind) -> None:
        # Due again one interval from now, unless ``run`` plans it otherwise (aligned with the run it made).
        self._due[kind] = self._clock() + self._every[kind]
        self._run(kind)


def _kind(job: schedule.Job) -> JobKind:
    return next(k for k in JOB_KINDS if k in job.tags)
