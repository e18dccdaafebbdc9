"""SSH-attended operation: consoles and commands that steer the service already running.

A real ``empsync --no-ui`` leads on MariaDB and the emulator; beside it a
console (Pilot, in this process), ``empsync sync`` typed at a shell, or a
standby's API ask it for runs through the database. Every check is on what
the database recorded (request and run rows) and on what the console shows;
waits poll against deadlines that are only upper bounds.
"""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import socket
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, text

import core.presence as presence
from core import requests as req
from core.dialects import make_lock
from core.emulator import free_port
from core.engine import SyncEngine
from core.requests import Requests
from core.service import SyncService
from core.state import StateKey
from tui.app import EmpsyncApp

from .conftest import employee, run_cli, write_docs, write_toml
from .service_support import Headless, http, mirror_rows, runs_table, stored_state, until, wait_for

pytestmark = pytest.mark.integration

TOKEN = "remote-control-token-51f0"


def identity(process: Headless) -> str:
    return f"{socket.gethostname()}:{process.pid}"


def start_leader(config, tmp_path, processes, name: str = "leader") -> tuple[Headless, Any]:
    """A headless service that leads and has made its start-up run."""
    path = write_toml(tmp_path / f"{name}.toml", config)
    process = Headless(path)
    processes.append(process)
    process.wait_line("Leading")
    process.wait_line("Employee sync completed")
    # Its published view is what tells every other process that it is alive.
    wait_for(lambda: presence.live_leader(stored_state(config)), 20, "the leader's heartbeat")
    return process, path


def requests_of(config) -> list[req.Request]:
    engine = SyncEngine(config)
    try:
        engine.db.ensure_schema()
        board = Requests(engine.db)
        with engine.db.connect() as conn:
            ids = [r[0] for r in conn.execute(text("SELECT id FROM empsync_requests ORDER BY id"))]
        rows = board.get_many(ids)
        return [rows[i] for i in ids]
    finally:
        engine.close()


def run_row(config, run_id: int) -> dict[str, Any]:
    return next(r for r in runs_table(config) if r["id"] == run_id)


def log_has(app: EmpsyncApp, *needles: str) -> bool:
    return any(all(n in line for n in needles) for line in app.log_pane.text_lines())


# -- the console beside a running service ---------------------------------------------


async def test_f_in_a_standby_console_makes_the_leader_run_it_and_shows_its_work(
    make_config, mysql_url, firestore_client, tmp_path, processes
):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(12)})
    config = make_config(mysql_url, sync={"interval": 300, "force_interval": 3600})
    leader, _ = start_leader(config, tmp_path, processes)
    name = identity(leader)
    service = SyncService(config)
    app = EmpsyncApp(service, config)
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: f"leader {name}" in app.status_pane.border_title, "the leader's view")
        assert "this console: standby" in app.status_pane.border_title
        assert f"leader {name}" in app.sub_title and "IDLE" in app.status_pane.text  # the leader's state
        assert not service.snapshot()["is_leader"]
        # The leader's start-up run, from its log in the database, marked with its name.
        await until(pilot, lambda: log_has(app, name, "Employee sync completed: 12 fetched"), "the leader's log")

        write_docs(firestore_client, {"e3": employee(3, salary=99_999)})
        await pilot.press("f")
        assert any(f"asked of the leader {name}" in t for t in app.toasts)

        def done() -> req.Request | None:
            rows = [r for r in requests_of(config) if r.is_final]
            return rows[-1] if rows else None

        request = await until(pilot, done, "the leader to answer the request")
        assert (request.kind, request.trigger, request.status) == ("force", "console", req.DONE)
        assert request.requested_by == service.identity and request.claimed_by == name
        run = run_row(config, request.run_id)
        assert (run["kind"], run["trigger"], run["status"], run["pid"]) == ("force", "console", "ok", leader.pid)
        # Taken and started within 2 s of the request: the leader looks every second.
        assert run["started_at"] - request.requested_at <= timedelta(seconds=2), (request, run)
        assert request.result["updated"] == 1 and request.exit_code == 0

        await until(
            pilot,
            lambda: any(t.startswith(f"Force sync done on the leader {name} (run #{run['id']}):") for t in app.toasts),
            "the toast with the run's result",
        )
        await until(pilot, lambda: log_has(app, name, "Employee updated: e3"), "the leader's log of the change")
        await until(
            pilot,
            lambda: any(
                r[2] == "e3" and "salary: 50003 → 99999" in r[4]
                for r in (
                    [str(c) for c in app.changes_pane.table.get_row_at(i)]
                    for i in range(app.changes_pane.table.row_count)
                )
            ),
            "the leader's change in Recent changes",
        )
        # The console's own lines are not the leader's: only the leader's carry its name in front.
        rest = [line.split(maxsplit=2)[-1] for line in app.log_pane.text_lines()]
        assert any(r.startswith("Asked the leader") for r in rest) and not any(
            r.startswith(name) and "Asked" in r for r in rest
        )
        await pilot.press("q")
        await until(pilot, lambda: not service.alive, "the console's service to stop")
    assert leader.process.poll() is None, "the leader lives on"
    assert mirror_rows(config)["e3"]["salary"] == 99_999


async def test_an_attached_console_never_takes_the_lock_and_follows_the_next_leader(
    monkeypatch, make_config, mysql_url, firestore_client, tmp_path, processes
):
    monkeypatch.setattr(presence, "LIVE_S", 4.0)  # this console's patience with a silent leader
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(3)})
    config = make_config(mysql_url, sync={"interval": 10, "force_interval": 3600})
    first, path = start_leader(config, tmp_path, processes, "first")
    service = SyncService(config, attach=True)
    app = EmpsyncApp(service, config)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: f"leader {identity(first)} · this console: attached" in app.status_pane.text, "A")
        first.process.kill()  # kill -9: a standby would take over within two seconds
        assert first.wait(10) == -signal.SIGKILL
        await until(pilot, lambda: "no live leader" in app.status_pane.border_title, "the leader to fall silent")
        await pilot.press("f")  # asked of nobody: it waits for a leader
        assert any("no live leader answers" in t for t in app.toasts)
        engine = create_engine(mysql_url)
        try:
            probe = make_lock(engine, config.target.table)
            assert probe.acquire(), "the attached console took the lock"
            probe.release()
        finally:
            engine.dispose()
        assert not service.snapshot()["is_leader"]

        second = Headless(path)
        processes.append(second)
        await until(pilot, lambda: f"leader {identity(second)}" in app.status_pane.border_title, "the next leader")

        def served() -> req.Request | None:
            forced = [r for r in requests_of(config) if r.trigger == "console"]
            return forced[-1] if forced and forced[-1].is_final else None

        request = await until(pilot, served, "the new leader to run the waiting request")
        assert request.claimed_by == identity(second) and request.status == req.DONE
        await pilot.press("q")
    assert {r["pid"] for r in runs_table(config)} == {first.pid, second.pid}, "the console never ran a sync"


async def test_a_plain_standby_console_takes_over_and_says_so(
    make_config, mysql_url, firestore_client, tmp_path, processes
):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(3)})
    config = make_config(mysql_url, sync={"interval": 10, "force_interval": 3600})
    leader, _ = start_leader(config, tmp_path, processes)
    service = SyncService(config)
    app = EmpsyncApp(service, config)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: f"leader {identity(leader)}" in app.status_pane.border_title, "the leader's view")
        await until(pilot, lambda: service.snapshot()["state"] == "standby", "the console to have tried for the lock")
        leader.process.kill()
        assert leader.wait(10) == -signal.SIGKILL
        await until(pilot, lambda: service.snapshot().get("is_leader"), "the console to take over", deadline=10 + 30)
        await until(pilot, lambda: any("This console now leads" in t for t in app.toasts), "the take-over toast")
        await until(pilot, lambda: log_has(app, f"the leader {identity(leader)} stopped or went away"), "the Log")
        await until(pilot, lambda: app.status_pane.border_title == "Status · this console leads", "the title")
        write_docs(firestore_client, {"after": employee(50)})
        await until(pilot, lambda: "after" in mirror_rows(config), "the console to sync after taking over")
        await pilot.press("q")
        await until(pilot, lambda: not service.alive, "the console's service to stop")


# -- empsync sync typed at a shell while a service leads ---------------------------------


def test_sync_force_while_a_service_leads_prints_that_runs_result(
    make_config, mysql_url, firestore_client, tmp_path, processes
):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(5)})
    config = make_config(mysql_url, sync={"interval": 300, "force_interval": 3600})
    leader, path = start_leader(config, tmp_path, processes)
    write_docs(firestore_client, {"e1": employee(1, name="Renamed")})

    done = run_cli("sync", "--force", "--json", "--config", str(path))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # stdout is the run's JSON and nothing else
    assert (result["status"], result["kind"], result["forced"], result["updated"]) == ("ok", "force", True, 1)
    run = run_row(config, result["run_id"])
    assert (run["trigger"], run["pid"], run["kind"]) == ("cli", leader.pid, "force"), "the leader ran it, for cli"
    request = requests_of(config)[-1]
    assert (request.trigger, request.status, request.run_id, request.result) == ("cli", req.DONE, run["id"], result)

    status = json.loads(run_cli("status", "--json", "--config", str(path)).stdout)
    assert status["leader"] == identity(leader) and status["leader_alive"] is True and status["leader_state"]
    shown = run_cli("sync", "--status", "--config", str(path)).stdout
    assert re.search(rf"^leader +{re.escape(identity(leader))} \(\w+, seen \S+Z\)$", shown, re.M), shown

    text_form = run_cli("sync", "--force", "--config", str(path))
    assert text_form.returncode == 0, text_form.stderr
    assert text_form.stdout.startswith("force sync ok: 5 fetched, 0 inserted, 0 updated"), text_form.stdout

    queued = run_cli("sync", "--force", "--no-wait", "--json", "--config", str(path))
    assert queued.returncode == 0, queued.stderr
    answer = json.loads(queued.stdout)
    assert answer["status"] == "queued" and answer["leader"] == identity(leader) and answer["kind"] == "force"
    final = wait_for(
        lambda: (r := {x.id: x for x in requests_of(config)}[answer["request_id"]]).is_final and r, 30, "the run"
    )
    assert final.status == req.DONE and run_row(config, final.run_id)["pid"] == leader.pid

    # Selected documents: a run of kind ids, their list carried in the request.
    selected = run_cli("sync", "--id", "e2", "--id", "e4", "--json", "--config", str(path))
    assert selected.returncode == 0, selected.stderr
    ids_run = json.loads(selected.stdout)
    assert (ids_run["kind"], ids_run["fetched"]) == ("ids", 2) and run_row(config, ids_run["run_id"])[
        "pid"
    ] == leader.pid
    assert requests_of(config)[-1].payload == {"ids": ["e2", "e4"]}

    # A kind this leader does not know (a newer empsync asked): failed with the reason, not left waiting.
    engine = SyncEngine(config)
    try:
        unknown = Requests(engine.db).queue("frobnicate", "cli", "newer:1", {"x": 1})
    finally:
        engine.close()
    failed = wait_for(lambda: (r := {x.id: x for x in requests_of(config)}[unknown]).is_final and r, 30, "an answer")
    assert failed.status == req.FAILED and "does not run requests of kind 'frobnicate'" in failed.result["reason"]

    # A plain `sync` from cron, when due: exit 3 at once, as before; with --wait the leader makes a normal run.
    engine = SyncEngine(config)
    try:
        engine.state.set({StateKey.LAST_SYNC_AT: "2020-01-01T00:00:00Z"})  # due
    finally:
        engine.close()
    asked = len(requests_of(config))
    cron = run_cli("sync", "--config", str(path))
    assert cron.returncode == 3 and "sync lock is held" in cron.stderr, cron.stderr
    assert len(requests_of(config)) == asked, "a plain sync asks nothing of the leader"
    waited = run_cli("sync", "--wait", "--json", "--config", str(path))
    assert waited.returncode == 0, waited.stderr
    normal = json.loads(waited.stdout)
    assert normal["kind"] == "normal" and run_row(config, normal["run_id"])["pid"] == leader.pid


def test_no_live_leader_takes_the_request_exit_3(make_config, mysql_url, tmp_path):
    """The lock is held by something that takes no requests: a one-shot run, or an older empsync."""
    config = make_config(mysql_url, sync={"interval": 300, "force_interval": 3600})
    path = write_toml(tmp_path / "sync.toml", config)
    engine = create_engine(mysql_url)
    holder = make_lock(engine, config.target.table)
    state = SyncEngine(config)
    try:
        assert holder.acquire()
        # A one-shot run names no leader: nothing to ask, exit 3 at once as ever.
        one_shot = run_cli("sync", "--force", "--config", str(path))
        assert one_shot.returncode == 3 and one_shot.stderr.startswith("empsync: skipped: the sync lock is held")
        assert requests_of(config) == []

        state.state.set({StateKey.LEADER: "old-empsync:77"})  # a leader that publishes no heartbeat
        done = run_cli("sync", "--force", "--config", str(path))
        assert done.returncode == 3, (done.stdout, done.stderr)
        assert "no live leader took request #1 within 5 s" in done.stderr and "withdrew it" in done.stderr
        assert "old-empsync:77 holds the sync lock but takes no requests" in done.stderr
        assert "Traceback" not in done.stderr
        as_json = run_cli("sync", "--force", "--json", "--config", str(path))
        assert as_json.returncode == 3
        skipped = json.loads(as_json.stdout)
        assert skipped["status"] == "skipped" and "no live leader" in skipped["reason"]
        assert [r.status for r in requests_of(config)] == [req.EXPIRED, req.EXPIRED], "withdrawn: they never run"
    finally:
        holder.release()
        engine.dispose()
        state.close()


def test_a_standby_api_forwards_triggers_to_the_leader(make_config, mysql_url, firestore_client, tmp_path, processes):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(3)})
    base = make_config(mysql_url, sync={"interval": 300, "force_interval": 3600})
    leader, _ = start_leader(base, tmp_path, processes)
    port = free_port()
    with_api = dataclasses.replace(
        base, api=dataclasses.replace(base.api, enabled=True, host="127.0.0.1", port=port, token=TOKEN)
    )
    standby = Headless(write_toml(tmp_path / "standby.toml", with_api))
    processes.append(standby)
    standby.wait_line("Status: standby")
    code, _, body = http("POST", f"http://127.0.0.1:{port}/api/realtime-sync/trigger", {"force": True}, token=TOKEN)
    assert code == 202 and body["queued"]["forwarded"] is True, body
    standby.wait_line("ended request #1 (force run): ok")
    request = requests_of(base)[-1]
    assert (request.trigger, request.requested_by, request.claimed_by) == ("api", identity(standby), identity(leader))
    assert run_row(base, request.run_id)["trigger"] == "api"
    status = http("GET", f"http://127.0.0.1:{port}/api/realtime-sync/status", token=TOKEN)[2]
    assert status["leader_view"]["service"] == identity(leader) and status["leader_view"]["fresh"]
    assert "Leading" not in standby.text()


# -- the seed's spellings ------------------------------------------------------------------


def test_the_seeds_spellings(make_config, sqlite_url, tmp_path):
    path = write_toml(tmp_path / "sync.toml", make_config(sqlite_url, sync={"interval": 300}))
    status = run_cli("sync", "--status", "--json", "--config", str(path))
    plain = run_cli("status", "--json", "--config", str(path))
    assert status.returncode == plain.returncode == 0, status.stderr
    assert json.loads(status.stdout).keys() == json.loads(plain.stdout).keys()
    assert run_cli("sync", "--status", "--config", str(path)).stdout.startswith("state")

    stored = run_cli("sync", "--interval=120", "--config", str(path))
    assert stored.returncode == 0 and "interval set to 120 s" in stored.stdout, stored.stderr
    assert json.loads(run_cli("status", "--json", "--config", str(path)).stdout)["interval"] == 120
    assert runs_table(make_config(sqlite_url)) == [], "--interval alone runs nothing"
    refused = run_cli("sync", "--interval=9", "--config", str(path))
    assert refused.returncode == 2 and "interval" in refused.stderr

    both = run_cli("sync", "--status", "--force", "--config", str(path))
    assert both.returncode == 2 and "--status" in both.stderr
    assert run_cli("sync", "--wait", "--no-wait", "--config", str(path)).returncode == 2
    assert run_cli("--attach", "status", "--config", str(path)).returncode == 2

    # --interval with a run: the interval first (on stderr), then the run's JSON alone on stdout.
    ran = run_cli("sync", "--interval=60", "--force", "--json", "--config", str(path))
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["status"] == "ok" and "interval set to 60 s" in ran.stderr
    assert [r["trigger"] for r in runs_table(make_config(sqlite_url))] == ["cli"]
    assert requests_of(make_config(sqlite_url)) == [], "nothing else held the lock: nothing was asked of anyone"


def test_selected_ids_and_a_rollback_typed_while_a_service_leads_run_in_the_leader(
    make_config, mysql_url, firestore_client, tmp_path, processes
):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(4)})
    config = make_config(mysql_url, sync={"interval": 3600, "force_interval": 7200})
    leader, path = start_leader(config, tmp_path, processes)
    write_docs(firestore_client, {"e1": employee(1, salary=1)})

    ids = run_cli("sync", "--id", "e1", "--json", "--config", str(path))
    assert ids.returncode == 0, ids.stderr
    made = json.loads(ids.stdout)
    assert (made["kind"], made["updated"], made["firestore_reads"]) == ("ids", 1, 1)
    assert run_row(config, made["run_id"])["pid"] == leader.pid
    assert mirror_rows(config)["e1"]["salary"] == 1

    back = run_cli("rollback", str(made["run_id"]), "--yes", "--json", "--config", str(path))
    assert back.returncode == 0, back.stderr
    rolled = json.loads(back.stdout)
    assert rolled["kind"] == "rollback" and rolled["rolled_back"] == [made["run_id"]]
    assert run_row(config, rolled["run_id"])["pid"] == leader.pid, "the leader rolled it back, holding the lock"
    assert mirror_rows(config)["e1"]["salary"] == 50001
    wait_for(lambda: stored_state(config).get("paused") == "1", 10, "the pause the rollback asks for")
