"""The sync service in-process, against the real emulator and real targets.

Scheduled runs, live interval changes, pause, disabled mode, a job's
exception, one leader on a lost lock connection, and recovery from a
database outage; the lock and the outage on MariaDB and on PostgreSQL. The contract's smallest interval is 10 s; for
second-scale schedules these tests lower the config's bound in-process and
give the service shorter timings.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from datetime import timedelta

import pytest

import core.config
from core import config as cfg
from core.backoff import backoff_delay
from core.errors import ConfigError
from core.events import StatusChanged, SyncFailed, SyncFinished, SyncStarted
from core.service import SyncService, Timings
from core.times import parse_iso, utcnow

from .conftest import employee, run_cli, started, write_docs, write_toml
from .servers import MariaDB, PostgreSQL
from .service_support import Events, mirror_rows, running, runs_table, stored_state, wait_for, wait_leading

pytestmark = pytest.mark.integration


FAST = Timings(
    lead_check_s=0.3,
    lead_retry_s=0.3,
    lead_backoff_base_s=0.2,
    lead_backoff_cap_s=1.0,
    backoff_base_s=0.2,
    backoff_cap_s=1.0,
    status_refresh_s=0.5,
)


@pytest.fixture
def fast(monkeypatch) -> Timings:
    """Second-scale timing for a service: intervals from 1 s, quick leadership checks, short backoff."""
    monkeypatch.setattr(core.config, "INTERVAL_MIN", 1)  # the config's bound, below the contract's 10 s
    return FAST


def cli_toml(tmp_path, config: cfg.Config, **sync):
    """sync.toml for a one-shot command next to an in-process service (real bounds apply there)."""
    values = {"interval": 300, "force_interval": 3600, **sync}
    return write_toml(
        tmp_path / "sync.toml", dataclasses.replace(config, sync=dataclasses.replace(config.sync, **values))
    )


def scheduled_starts(events: Events, mark: int = 0) -> list[SyncStarted]:
    return [e for e in events.since(mark, SyncStarted) if e.trigger == "schedule"]


# -- 1. scheduled runs -----------------------------------------------------------------


def test_scheduled_runs_happen_one_at_a_time(fast, make_config, target_url, firestore_client):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(5)})
    config = make_config(target_url, sync={"interval": 1, "force_interval": 3600})
    service = SyncService(config, timings=fast)
    events = Events(service)
    with running(service):
        first = events.wait_finished(1, trigger="schedule")[0]
        # Both jobs are due at the first start: one full read serves both, never two.
        assert first.kind == "force" and first.counts.fetched == 5 and first.counts.inserted == 5
        runs = events.wait_finished(3, trigger="schedule")
        assert [r.kind for r in runs[1:3]] == ["normal", "normal"]
        assert all(r.counts.written == 0 for r in runs[1:3]), "idle incremental runs write nothing"

        write_docs(firestore_client, {"late": employee(99)})
        wait_for(lambda: "late" in mirror_rows(config), 20, "a scheduled run to bring the new document")

        snap = service.snapshot()
        assert snap["is_leader"] and snap["state"] in ("idle", "syncing")
        assert snap["interval"] == 1 and snap["next_sync_at"] is not None
        assert snap["last_result"]["status"] == "ok"
    events.assert_never_overlapped()
    assert service.snapshot()["state"] == "stopped"
    assert all(r["status"] == "ok" for r in runs_table(config))


def test_a_missed_tick_runs_once_and_manual_runs_queue(fast, make_config, sqlite_url, firestore_client):
    write_docs(firestore_client, {"a": employee(1)})
    config = make_config(sqlite_url, sync={"interval": 2, "force_interval": 3600})
    service = SyncService(config, timings=fast)
    events = Events(service)
    slow_started = threading.Event()
    release = threading.Event()

    def stall(event) -> None:  # on the worker thread: the run takes as long as the test says
        if isinstance(event, SyncStarted) and event.kind == "normal" and not slow_started.is_set():
            slow_started.set()
            release.wait(20)

    service.subscribe(stall)
    with running(service):
        assert slow_started.wait(30), "no scheduled normal run"
        # While it runs: manual triggers return at once and only queue.
        tickets = [service.sync_now("test"), service.sync_now("test")]
        assert tickets[0].request_id != tickets[1].request_id
        assert len(service.snapshot()["pending"]) >= 1

        # Every face-facing call returns while the worker is busy: none waits on it.
        def calls() -> None:
            for _ in range(3):
                service.snapshot(), service.stats(), service.set_interval(2)
                service.pause(), service.resume()
                service.subscribe(lambda event: None)()

        callers = [threading.Thread(target=calls) for _ in range(4)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(10)
        assert not any(c.is_alive() for c in callers) and not release.is_set(), "a call waited on the worker"
        time.sleep(2 * config.sync.interval)  # two ticks go by while the run is stuck
        release.set()
        manual = events.wait_finished(1, trigger="test")
        events.wait_finished(3, trigger="schedule", kind="normal")
    events.assert_never_overlapped()
    # The two queued requests were served by one run, not two.
    assert len(events.finished(trigger="test")) == 1 and manual[0].status == "ok"
    stuck_end = next(
        e for e in events.all(SyncFinished) if e.result.trigger == "schedule" and e.result.kind == "normal"
    )
    after = [e for e in events.all(SyncStarted) if e.trigger == "schedule" and e.at >= stuck_end.at]
    # The missed ticks made at most one catch-up run; the next waited for its interval
    # (stored times are whole seconds, so at least interval - 1 s).
    assert after[1].at - after[0].at >= timedelta(seconds=config.sync.interval - 1.1)


# -- 2. interval ----------------------------------------------------------------------


def test_set_interval_is_picked_up_live(fast, make_config, sqlite_url, firestore_client):
    write_docs(firestore_client, {"a": employee(1)})
    config = make_config(sqlite_url, sync={"interval": 3600, "force_interval": 3600})
    service = SyncService(config, timings=fast)
    events = Events(service)
    with running(service):
        events.wait_finished(1, trigger="schedule")
        mark = events.mark()
        wait_for(lambda: service.snapshot().get("next_sync_at"), 10, "next_sync_at")
        later = parse_iso(service.snapshot()["next_sync_at"]) - parse_iso(service.snapshot()["last_sync_at"])
        assert later >= timedelta(seconds=3000), "an hour's interval schedules the next run an hour out"
        assert service.set_interval(1) == 1  # returns at once with the value
        assert service.snapshot()["interval"] == 1 and service.snapshot()["interval_source"] == "database"
        wait_for(lambda: scheduled_starts(events, mark), 15, "a scheduled run on the new interval")
    assert stored_state(config)["interval"] == "1"


def test_interval_bounds_persistence_and_the_cli(make_config, mysql_url, firestore_client, tmp_path):
    write_docs(firestore_client, {"a": employee(1)})
    config = make_config(mysql_url, sync={"interval": 300, "force_interval": 3600})
    toml = cli_toml(tmp_path, config)
    first = SyncService(config)
    events = Events(first)
    with running(first):
        events.wait_finished(1, trigger="schedule")
        for bad in (9, 0, -5, 86_401):
            with pytest.raises(ConfigError, match="10"):
                first.set_interval(bad)
        assert first.snapshot()["interval"] == 300, "a refused value changes nothing"
        first.set_interval(45)
        wait_for(lambda: stored_state(config).get("interval") == "45", 10, "the interval stored")

    # A restart reads it back: the stored interval wins over sync.toml.
    second = SyncService(config)
    events = Events(second)
    with running(second):
        wait_for(lambda: second.snapshot().get("interval") == 45, 10, "the stored interval after a restart")
        assert second.snapshot()["interval_source"] == "database"
        status = json.loads(run_cli("status", "--json", "--config", str(toml)).stdout)
        assert (status["interval"], status["interval_source"]) == (45, "database")

        for bad in ("9", "86401", "ten"):
            refused = run_cli("interval", bad, "--config", str(toml))
            assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
            assert "interval" in refused.stderr
        assert stored_state(config)["interval"] == "45"

        # `empsync interval 10` from another shell: seen within a second or so, and it reschedules.
        mark = events.mark()
        done = run_cli("interval", "10", "--config", str(toml))
        assert done.returncode == 0, done.stderr
        wait_for(lambda: second.snapshot().get("interval") == 10, 10, "the service to see the CLI's interval")
        snap = second.snapshot()
        due = parse_iso(snap["last_sync_at"]) + timedelta(seconds=11)
        assert parse_iso(snap["next_sync_at"]) <= max(due, utcnow() + timedelta(seconds=1)), snap

        wait_for(lambda: scheduled_starts(events, mark), 20, "a scheduled run on the CLI's interval")

        assert run_cli("interval", "--reset", "--config", str(toml)).returncode == 0
        wait_for(lambda: second.snapshot().get("interval_source") == "file", 10, "the reset to sync.toml's interval")
        assert second.snapshot()["interval"] == 300


# -- pause / resume ---------------------------------------------------------------------


def test_pause_and_resume_in_process_and_from_a_shell(fast, make_config, sqlite_url, firestore_client, tmp_path):
    write_docs(firestore_client, {"a": employee(1)})
    config = make_config(sqlite_url, sync={"interval": 1, "force_interval": 3600})
    toml = cli_toml(tmp_path, config)
    service = SyncService(config, timings=fast)
    events = Events(service)
    with running(service):
        events.wait_finished(2, trigger="schedule")

        service.pause()
        wait_for(lambda: service.snapshot()["state"] == "paused", 10, "state paused")
        snap = service.snapshot()
        assert snap["paused"] is True and snap["next_sync_at"] is None
        mark = events.mark()
        time.sleep(2.5)  # two and a half intervals
        assert not scheduled_starts(events, mark), "a scheduled run happened while paused"
        service.sync_now("test")  # manual runs still work while paused
        manual = events.wait_finished(1, trigger="test")[0]
        assert manual.status == "ok"
        assert stored_state(config)["paused"] == "1"

        service.resume()
        wait_for(lambda: scheduled_starts(events, mark), 10, "scheduled runs after resume")
        assert service.snapshot()["paused"] is False

        # The same from another shell, through the database.
        assert run_cli("pause", "--config", str(toml)).returncode == 0
        wait_for(lambda: service.snapshot()["state"] == "paused", 10, "paused by `empsync pause`")
        assert service.snapshot()["paused"] is True
        time.sleep(0.5)  # a run that was under way when the pause landed
        mark = events.mark()
        time.sleep(2.5)
        assert not scheduled_starts(events, mark), "a scheduled run happened after `empsync pause`"
        assert run_cli("resume", "--config", str(toml)).returncode == 0
        wait_for(lambda: scheduled_starts(events, mark), 10, "scheduled runs after `empsync resume`")
        assert service.snapshot()["state"] in ("idle", "syncing") and service.snapshot()["paused"] is False
    events.assert_never_overlapped()


# -- 3. disabled ----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["file", "environment"])
def test_disabled_stops_scheduled_runs_only(fast, how, make_config, sqlite_url, firestore_client, tmp_path):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(3)})
    base = make_config(sqlite_url, sync={"interval": 1, "force_interval": 1})
    toml = cli_toml(tmp_path, base, enabled=how != "file")
    env = {"FIRESTORE_REALTIME_ENABLED": "false"} if how == "environment" else {}
    config = cfg.load(str(write_toml(tmp_path / "service.toml", dataclasses.replace(
        base, sync=dataclasses.replace(base.sync, enabled=how != "file")
    ))), env=env)  # fmt: skip
    assert config.sync.enabled is False
    service = SyncService(config, timings=fast)
    events = Events(service)
    with running(service):
        wait_for(lambda: service.snapshot()["state"] == "disabled", 10, "state disabled")
        snap = service.snapshot()
        assert snap["enabled"] is False and snap["is_leader"] and snap["next_sync_at"] is None
        time.sleep(2.5)  # both jobs (1 s apart) would have fired by now
        assert not events.all(SyncStarted), "a scheduled run happened while disabled"
        assert mirror_rows(config) == {}

        service.sync_now("test")
        assert events.wait_finished(1, trigger="test")[0].counts.inserted == 3
        service.force_sync("test")
        assert events.wait_finished(1, trigger="test", kind="force")[0].status == "ok"
        wait_for(lambda: service.snapshot()["state"] == "disabled", 10, "back to disabled after the manual runs")
        mark = events.mark()
        time.sleep(1.5)
        assert not events.since(mark, SyncStarted)

    shown = run_cli("status", "--json", "--config", str(toml), env=env)
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["enabled"] is False and status["next_sync_at"] is None


# -- a job's exception ---------------------------------------------------------------------


def test_a_failing_job_is_a_failed_run_and_the_worker_lives_on(fast, make_config, sqlite_url, firestore_client):
    write_docs(firestore_client, {"a": employee(1)})
    config = make_config(sqlite_url, sync={"interval": 1, "force_interval": 3600})
    service = SyncService(config, timings=fast)
    events = Events(service)
    with running(service):
        events.wait_finished(1, trigger="schedule")

        # A bug inside the run (while writing a batch).
        def broken_write(*args, **kwargs):
            raise RuntimeError("injected bug in the write")

        service.engine.mirror.write = broken_write
        write_docs(firestore_client, {"b": employee(2)})
        failed = wait_for(lambda: events.all(SyncFailed), 15, "a failed run")[0]
        assert "injected bug" in failed.error
        wait_for(lambda: service.snapshot()["state"] == "error", 10, "state error")
        assert service.alive and service.snapshot()["failures"] >= 1
        assert any(r["status"] == "failed" and "injected bug" in (r["message"] or "") for r in runs_table(config))
        del service.engine.mirror.write  # the class's method again
        wait_for(lambda: "b" in mirror_rows(config), 15, "the retry to sync the document")

        # A bug that escapes the engine altogether: still a failed run, never a dead thread.
        mark = events.mark()
        calls = []

        def exploding_run(**kwargs):
            calls.append(kwargs)
            raise RuntimeError("injected bug outside the engine")

        service.engine.run = exploding_run
        wait_for(lambda: events.since(mark, SyncFailed), 15, "a failed run from the escaped exception")
        assert "injected bug outside the engine" in events.since(mark, SyncFailed)[0].error
        assert service.alive
        assert stored_state(config)["last_status"] == "failed"
        del service.engine.run  # the class's method again
        write_docs(firestore_client, {"c": employee(3)})
        wait_for(lambda: "c" in mirror_rows(config), 20, "syncing again after the bug went away")
        wait_for(lambda: service.snapshot()["failures"] == 0, 10, "failures reset by a good run")
        assert service.alive
    events.assert_never_overlapped()


# -- 5. one leader: a lost lock connection ------------------------------------------------------


@pytest.mark.parametrize("server", ["mariadb", "postgres"], ids=["mariadb", "postgresql"])
def test_a_lost_lock_connection_drops_leadership_until_regained(fast, make_config, request, server, firestore_client):
    admin = request.getfixturevalue(server)
    url = request.getfixturevalue("mysql_url" if server == "mariadb" else "postgresql_url")
    write_docs(firestore_client, {"a": employee(1)})
    config = make_config(url, sync={"interval": 3600, "force_interval": 3600})
    service = SyncService(config, timings=fast)
    events = Events(service)
    with running(service):
        events.wait_finished(1, trigger="schedule")
        wait_leading(service)
        # Cut the leader's lock connection and take the lock before it can come back.
        thief = admin.steal_lock(service._lock)
        try:
            wait_for(
                lambda: not service.snapshot()["is_leader"] and service.snapshot()["state"] == "standby",
                10,
                "the service to notice it lost the lock",
            )
            lost = [e for e in events.all(StatusChanged) if e.state == "standby"]
            assert lost and "lost the lock" in lost[-1].detail
            # A standby does not sync, even when asked.
            write_docs(firestore_client, {"b": employee(2)})
            mark = events.mark()
            service.sync_now("test")
            time.sleep(2)
            assert not events.since(mark, SyncStarted), "a standby ran a sync"
            assert "b" not in mirror_rows(config)
        finally:
            thief.close()  # gives the lock back
        wait_leading(service, timeout=15)
        # The request queued while standby runs once the lock is back.
        wait_for(lambda: "b" in mirror_rows(config), 15, "the queued run after regaining the lock")
    events.assert_never_overlapped()


# -- 7. retries: the database down for 20 s ------------------------------------------------------


@pytest.mark.parametrize("server_class", [MariaDB, PostgreSQL], ids=["mariadb", "postgresql"])
def test_a_database_outage_recovers_without_a_restart(fast, make_config, firestore_client, tmp_path, server_class):
    server = started(server_class(tmp_path / "outage"))
    try:
        config = make_config(server.url(server.create_database("outage")), sync={"interval": 1, "force_interval": 3600})
        write_docs(firestore_client, {f"e{i}": employee(i) for i in range(10)})
        service = SyncService(config, timings=fast)
        events = Events(service)
        with running(service):
            events.wait_finished(1, trigger="schedule")
            wait_for(lambda: len(mirror_rows(config)) == 10, 10, "the first sync")
            worker = service._thread

            server.stop()
            mark = events.mark()
            # The backlog: changes and new documents written while the database is away.
            write_docs(firestore_client, {"e0": employee(0, name="Changed while down")})
            write_docs(firestore_client, {f"n{i}": employee(100 + i) for i in range(5)})
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                assert service.alive, "the worker died while the database was down"
                time.sleep(0.5)
            snap = service.snapshot()
            assert snap["state"] in ("error", "standby"), snap["state"]
            assert not snap["is_leader"], "a leader that cannot reach its lock must step down"
            failures = events.since(mark, SyncFailed)
            server.start()

            def caught_up() -> bool:
                rows = mirror_rows(config)
                return len(rows) == 15 and rows["e0"]["name"] == "Changed while down"

            wait_for(caught_up, 60, "the backlog synced after the database came back")
            wait_leading(service, timeout=30)
            assert service._thread is worker and service.alive
            # Capped backoff, not a hot loop: with these shortened timings at most one try a
            # fraction of a second; the real curve is checked in test_backoff_curve below.
            assert len(failures) <= 40
        events.assert_never_overlapped()
    finally:
        server.destroy()


def test_the_consoles_reads_through_the_service(make_config, target_url, firestore_client, tmp_path):
    """What a console reads through the face: recent changes (filtered by id or name in any case, % and _
    as themselves), the rejects, one run's changes, and what other processes' runs and log lines added, never its own."""
    write_docs(
        firestore_client,
        {"e1": employee(1, name="Alice Silva"), "e2": employee(2), "bad": employee(3, salary="lots")},
    )
    config = make_config(target_url)
    other = run_cli("sync", "--force", "--config", str(cli_toml(tmp_path, config)))  # another process's run
    assert other.returncode == 0, other.stderr
    service = SyncService(config)
    try:
        theirs = service.changes_by_others(0)
        assert sorted((r["document_id"], r["operation"]) for r in theirs) == [("e1", "insert"), ("e2", "insert")]
        assert [r["document_id"] for r in service.rejects()] == ["bad"]
        assert "salary" in service.rejects()[0]["reason"]

        write_docs(firestore_client, {"e2": employee(2, salary=1)})
        ours = service.engine.run(trigger="console")  # this process's own run
        assert ours.status == "ok" and ours.counts.updated == 1
        assert service.changes_by_others(max(r["id"] for r in theirs)) == [], "its own run is not another's"
        changed = {r["field"]: r["new_value"] for r in service.run_changes(ours.run_id)}
        assert changed["salary"] == "1" and set(changed) == {"salary", "updated_at"}

        newest = service.recent_changes(limit=10)
        assert [r["document_id"] for r in newest[:2]] == ["e2", "e2"] and len(newest) == 4  # its two fields first
        for needle in ("silva", "SILVA", "e1", "E1"):
            assert [r["document_id"] for r in service.recent_changes(needle=needle)] == ["e1"], needle
        assert service.recent_changes(needle="e_") == [] and service.recent_changes(needle="%") == []  # no wildcards

        at = utcnow()
        line = {"at": at, "level": "INFO", "logger": "empsync.sync", "text": "a line"}
        service.shared_log.write([{**line, "service": "other-host:1"}, {**line, "service": service.identity}])
        assert [r["service"] for r in service.log_by_others(None)] == ["other-host:1"]
        assert service.log_by_others(service.log_by_others(None)[-1]["id"]) == []
    finally:
        service.engine.close()


def test_backoff_curve_is_capped_exponential_with_jitter():
    """Five minutes of outage cost a handful of attempts with the shipped timings."""
    shipped = Timings()
    for failures in range(1, 30):
        full = min(shipped.backoff_cap_s, shipped.backoff_base_s * 2 ** (failures - 1))
        delays = {backoff_delay(failures, shipped.backoff_base_s, shipped.backoff_cap_s) for _ in range(50)}
        assert all(full / 2 <= d <= full for d in delays)
        assert len(delays) > 1, "jitter"
    for base, cap in (
        (shipped.backoff_base_s, shipped.backoff_cap_s),
        (shipped.lead_backoff_base_s, shipped.lead_backoff_cap_s),
    ):
        elapsed, attempts = 0.0, 0
        while elapsed < 300:
            attempts += 1
            elapsed += backoff_delay(attempts, base, cap)
        assert attempts <= 12, (base, cap, attempts)
