"""Listen mode against the real emulator and real targets.

Each numbered point of the issue has its tests here: micro-batches through the
same apply path, the cost of a (re)subscription, the watchdog and an emulator
outage under a running service, ordering, back-pressure, and the status and
log lines that show the live mode. What goes through the apply path runs on
every target (SQLite, MariaDB, PostgreSQL); what only concerns the stream
runs on MariaDB. Waits poll a condition against a generous
deadline; nothing asserts on wall time (latency is ``bench/latency.py``'s job).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from google.cloud import firestore
from sqlalchemy import select

import core.emulator as emulator_module
from core import config as cfg
from core import listen
from core.api import ControlApi
from core.emulator import Emulator, free_port
from core.engine import SyncEngine
from core.events import StatusChanged, SyncStarted
from core.live import FALLBACK, LISTENING, PENDING_BATCHES, RECONNECTING
from core.service import SyncService
from core.source import make_client
from core.state import StateKey
from core.watermark import Watermark, margin, scope_of, stored_lag

from .conftest import employee, run_cli, write_docs, write_toml
from .servers import export_emulator
from .service_support import Events, Headless, http, mirror_rows, runs_table, stored_state, wait_for

pytestmark = pytest.mark.integration

COMPARED = ("name", "salary", "status", "department", "city")


# -- helpers ----------------------------------------------------------------------------


def listen_config(make_config: Callable[..., cfg.Config], url: str, **sections: dict[str, Any]) -> cfg.Config:
    """Listen mode with a short poll interval (the fallback) and no force run during the test."""
    sync = {"mode": "listen", "interval": 10, "force_interval": 7 * 86_400, **sections.pop("sync", {})}
    source = {"timeout": 20, **sections.pop("source", {})}
    return make_config(url, sync=sync, source=source, **sections)


def listen_state(service: SyncService) -> str | None:
    return service.snapshot().get("listen_state")


def wait_listening(service: SyncService, timeout: float = 60) -> dict[str, Any]:
    return wait_for(
        lambda: (s := service.snapshot()).get("listen_state") == LISTENING and s,
        timeout,
        "the listener to be listening",
    )


@contextmanager
def live(config: cfg.Config) -> Iterator[tuple[SyncService, Events]]:
    """A running service in listen mode, listening, with its events recorded."""
    service = SyncService(config)
    events = Events(service)
    service.start()
    try:
        assert wait_listening(service)
        yield service, events
    finally:
        assert service.stop(15), "the worker did not stop"


def listen_states(events: Events, mark: int = 0) -> list[str]:
    """The listener states the service announced, in order, without repeats."""
    seen: list[str] = []
    for event in events.since(mark, StatusChanged):
        state = event.snapshot.get("listen_state")
        if state and (not seen or seen[-1] != state):
            seen.append(state)
    return seen


def row(config: cfg.Config, doc_id: str) -> dict[str, Any] | None:
    return mirror_rows(config).get(doc_id)


def wait_row(config: cfg.Config, doc_id: str, check: Callable[[dict[str, Any]], bool], what: str, timeout: float = 30):
    return wait_for(lambda: (r := row(config, doc_id)) is not None and check(r) and r, timeout, what)


def audit_rows(config: cfg.Config, doc_id: str) -> list[dict[str, Any]]:
    engine = SyncEngine(config)
    try:
        engine.db.ensure_schema()
        changes, runs = engine.db.tables.changes, engine.db.tables.runs
        query = (
            select(changes, runs.c.kind)
            .join(runs, runs.c.id == changes.c.run_id)
            .where(changes.c.document_id == doc_id)
            .order_by(changes.c.id)
        )
        with engine.db.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]
    finally:
        engine.close()


def expected_values(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": data.get("name"),
        "salary": data.get("salary"),
        "status": data.get("status"),
        "department": data.get("department"),
        "city": (data.get("address") or {}).get("city"),
    }


def differences(config: cfg.Config, client) -> list[str]:
    """A verify-style comparison: Firestore's documents against the table's live rows, by id and values."""
    docs = {s.id: expected_values(s.to_dict()) for s in client.collection("employees").stream()}
    rows = {i: r for i, r in mirror_rows(config).items() if r["deleted_at"] is None}
    diffs = [f"{i}: missing from the table" for i in sorted(docs.keys() - rows.keys())]
    diffs += [f"{i}: in the table, not in Firestore" for i in sorted(rows.keys() - docs.keys())]
    for doc_id in sorted(docs.keys() & rows.keys()):
        got = {c: rows[doc_id][c] for c in COMPARED}
        if got != docs[doc_id]:
            diffs.append(f"{doc_id}: table {got} != Firestore {docs[doc_id]}")
    return diffs


def listener_view(service: SyncService | None) -> str:
    """The listener's inner state, for a failure message."""
    mirror = service._live_mirror if service is not None else None
    if mirror is None:
        return ""
    listener, watch = mirror.listener, mirror.listener._watch
    inner = (
        f", watch active={watch.is_active} current={watch.current} docs={len(watch.doc_map)} "
        f"pending changes={len(watch.change_map)}"
        if watch is not None
        else ""
    )
    return f"; listener: {mirror.status()} heard={listener.heard} backlog={listener.backlog}{inner}"


def wait_no_differences(config: cfg.Config, client, timeout: float = 60, service: SyncService | None = None) -> None:
    last: list[str] = []

    def check() -> bool:
        nonlocal last
        last = differences(config, client)
        return not last

    try:
        wait_for(check, timeout, "the table to equal Firestore", every=0.5)
    except AssertionError:
        raise AssertionError(f"{len(last)} differences, first: {last[:5]}{listener_view(service)}") from None


def update(client, doc_id: str, **fields: Any) -> None:
    client.collection("employees").document(doc_id).update({**fields, "updated_at": firestore.SERVER_TIMESTAMP})


def listen_runs(config: cfg.Config) -> list[dict[str, Any]]:
    return [r for r in runs_table(config) if r["kind"] == "listen"]


# -- 1. micro-batches through the same path ------------------------------------------------


def test_changes_flow_through_the_apply_path_with_audit_rows(make_config, target_url, firestore_client):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(20)})
    config = listen_config(make_config, target_url)
    with live(config) as (service, _events):
        wait_for(lambda: len(mirror_rows(config)) == 20, 30, "the initial 20 rows")

        update(firestore_client, "e1", salary=99_001, position="Lead")
        wait_row(config, "e1", lambda r: r["salary"] == 99_001, "the update of e1")
        audit = {a["field"]: a for a in audit_rows(config, "e1") if a["operation"] == "update"}
        assert audit["salary"]["old_value"] == "50001" and audit["salary"]["new_value"] == "99001"
        assert audit["position"]["new_value"] == "Lead"
        assert {a["kind"] for a in audit.values()} == {"listen"}

        # Several documents in one commit arrive as one snapshot (the client sorts them).
        write_docs(firestore_client, {f"new{i}": employee(1000 + i) for i in range(5)})
        wait_row(config, "new4", lambda r: r["name"] == "Employee 1004", "the new documents")
        assert [a["kind"] for a in audit_rows(config, "new1") if a["operation"] == "insert"] == ["listen"]

        # A removed document in the watched set (changed since the watermark) follows delete_mode.
        update(firestore_client, "e2", status="leaving")
        wait_row(config, "e2", lambda r: r["status"] == "leaving", "the update of e2")
        firestore_client.collection("employees").document("e2").delete()
        wait_row(config, "e2", lambda r: r["deleted_at"] is not None, "the soft delete of e2")
        assert [a["kind"] for a in audit_rows(config, "e2") if a["operation"] == "delete"] == ["listen"]

        # The documented limitation: a document unchanged since the watermark is outside the
        # watched set, so its deletion waits for the force run, which finds it.
        firestore_client.collection("employees").document("e3").delete()
        service.force_sync("test")
        wait_row(config, "e3", lambda r: r["deleted_at"] is not None, "the force run's delete of e3")
        assert listen_state(service) == LISTENING
        live_run = listen_runs(config)[-1]
        assert live_run["status"] == "running" and live_run["inserted"] >= 1 and live_run["updated"] >= 2
    wait_no_differences(config, firestore_client)


# -- 2. cost ------------------------------------------------------------------------------


def test_restart_reads_only_what_changed_while_down(make_config, target_url, firestore_client):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(300)})
    # A long interval: no polled run is due when empsync comes back, only the listener reads.
    config = listen_config(make_config, target_url, sync={"interval": 3600})
    with live(config):
        wait_for(lambda: len(mirror_rows(config)) == 300, 60, "the first sync of 300 rows")
        # Rows land batch by batch; the watermark only when the force run ends. Stopping before
        # that rightly leaves no watermark, and the restart would read the whole collection.
        wait_for(lambda: any(r["finished_at"] for r in runs_table(config)), 60, "the first run to finish")
    # Where the restart's subscription starts: the margin before the stored watermark. A lag
    # measured under load widens the margin, and the documents inside it are read again.
    state = stored_state(config)
    since = Watermark.loads(state.get(StateKey.WATERMARK), scope_of(config))
    assert since is not None, state
    floor = since.ts - margin(config, stored_lag(state, StateKey.COMMIT_LAG_MS))
    in_margin = sum(1 for d in firestore_client.collection("employees").stream() if d.get("updated_at") >= floor)

    # empsync is down; the app carries on.
    for i in range(5):
        update(firestore_client, f"e{i}", salary=90_000 + i)
    write_docs(firestore_client, {"new0": employee(400), "new1": employee(401)})
    changed = 7

    with live(config) as (service, _events):
        wait_row(config, "new1", lambda r: True, "the documents added while down")
        wait_row(config, "e4", lambda r: r["salary"] == 90_004, "the updates made while down")
        live_run = listen_runs(config)[-1]
        assert live_run["status"] == "running"
        assert (live_run["inserted"], live_run["updated"]) == (2, 5)
        # The initial snapshot cost the changed documents and those in the margin, not the collection.
        expected = changed + in_margin
        assert changed <= live_run["firestore_reads"] <= expected, (live_run, in_margin, state)
        assert service.engine.source.meter.reads <= expected + 1
        assert service.snapshot()["listen_cost"].startswith("each (re)subscription reads only the documents changed")
    assert [r["kind"] for r in runs_table(config)].count("force") == 1  # no full read on the restart
    assert differences(config, firestore_client) == []


def test_without_updated_field_the_whole_collection_is_watched(make_config, target_url, firestore_client, monkeypatch):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(12)})
    # The short silence bound is for streams whose re-subscription is cheap; not this one.
    monkeypatch.setattr(listen, "SILENCE_S", 0.5)
    config = listen_config(make_config, target_url, source={"updated_field": ""}, target={"delete_mode": "hard"})
    with live(config) as (service, _events):
        snapshot = wait_for(
            lambda: (s := service.snapshot()).get("listen_detail") == "the whole collection" and s,
            30,
            "the listener on the whole collection",
        )
        assert snapshot["listen_cost"] == "no updated_field: each (re)subscription reads the whole collection"
        wait_for(lambda: listen_runs(config) and listen_runs(config)[-1]["firestore_reads"] == 12, 30, "metering")
        # The whole collection is watched: any deletion reaches the stream, and follows delete_mode.
        firestore_client.collection("employees").document("e5").delete()
        wait_for(lambda: "e5" not in mirror_rows(config), 30, "the hard delete of e5")
        firestore_client.collection("employees").document("e6").update({"salary": 1})
        wait_row(config, "e6", lambda r: r["salary"] == 1, "the update of e6")
        assert [a["kind"] for a in audit_rows(config, "e5") if a["operation"] == "delete"] == ["listen"]
        assert service.snapshot()["listen_reconnects"] == 0
    # The initial snapshot, the removal, the get that confirms it, and e6's update.
    assert listen_runs(config)[-1]["firestore_reads"] == 12 + 1 + 1 + 1
    assert differences(config, firestore_client) == []


def test_listen_scope_collection_mirrors_every_deletion_and_keeps_the_watermark(
    make_config, target_url, firestore_client
):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(12)})
    config = listen_config(make_config, target_url, sync={"listen_scope": "collection"})
    with live(config) as (service, _events):
        snapshot = wait_for(
            lambda: (s := service.snapshot()).get("listen_detail") == "the whole collection" and s,
            30,
            "the listener on the whole collection",
        )
        assert snapshot["listen_cost"] == "listen_scope = collection: each (re)subscription reads the whole collection"
        wait_for(lambda: len(mirror_rows(config)) == 12, 30, "the initial 12 rows")
        before = service.engine.state.get(StateKey.WATERMARK)
        # e3 has not changed since the watermark: outside a "changes" listener's set, inside this one.
        firestore_client.collection("employees").document("e3").delete()
        wait_row(config, "e3", lambda r: r["deleted_at"] is not None, "the soft delete of e3 by the listener")
        assert [a["kind"] for a in audit_rows(config, "e3") if a["operation"] == "delete"] == ["listen"]
        update(firestore_client, "e4", salary=4)
        wait_row(config, "e4", lambda r: r["salary"] == 4, "the update of e4")
        # Snapshots still move the watermark, so a polled run in a fallback reads little.
        wait_for(lambda: service.engine.state.get(StateKey.WATERMARK) != before, 30, "the watermark to move")
    assert differences(config, firestore_client) == []


# -- 3. robustness: the watchdog ------------------------------------------------------------


def test_watchdog_resubscribes_a_dead_stream(make_config, mysql_url, firestore_client):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(5)})
    config = listen_config(make_config, mysql_url)
    with live(config) as (service, events):
        mirror = service._live_mirror
        mark = events.mark()
        mirror.listener._watch.close()  # the client's stream dies underneath, without a word
        wait_for(lambda: mirror.reconnects >= 1 and listen_state(service) == LISTENING, 30, "a re-subscription")
        assert listen_states(events, mark) == [RECONNECTING, LISTENING]
        update(firestore_client, "e1", salary=1)
        wait_row(config, "e1", lambda r: r["salary"] == 1, "a change after the re-subscription")
        assert service.snapshot()["listen_reconnects"] == mirror.reconnects


def test_a_silent_stream_is_resubscribed_cheaply(make_config, mysql_url, firestore_client, monkeypatch):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(50)})
    config = listen_config(make_config, mysql_url)
    with live(config) as (service, _events):
        update(firestore_client, "e1", salary=5)
        wait_row(config, "e1", lambda r: r["salary"] == 5, "a change before the silence")
        reads_before = listen_runs(config)[-1]["firestore_reads"]
        # The emulator sends no heartbeats: on a quiet collection the watchdog's silence bound fires.
        monkeypatch.setattr(listen, "SILENCE_S", 1.0)
        mirror = service._live_mirror
        wait_for(lambda: mirror.reconnects >= 3 and mirror.state == LISTENING, 60, "three silence re-subscriptions")
        monkeypatch.setattr(listen, "SILENCE_S", 3600.0)
        reconnects = mirror.reconnects
        update(firestore_client, "e2", salary=6)
        wait_row(config, "e2", lambda r: r["salary"] == 6, "a change after the re-subscriptions")
        # Each re-subscription read the few documents of the resume window, not the collection.
        spent = listen_runs(config)[-1]["firestore_reads"] - reads_before
        assert spent <= 3 * reconnects + 1, (spent, reconnects)


def test_emulator_restart_under_a_running_service(tmp_path, make_config, mysql_url, project, monkeypatch):
    # A private emulator on a fixed port: the shared one must not go down under other tests.
    # No preexec_fn (die_with_parent): forking with it from this many-threaded process can
    # crash the child; the finally below stops the emulator instead.
    emu = Emulator(port=free_port(), log_path=tmp_path / "emulator.log").start()
    try:
        config = listen_config(make_config, mysql_url, source={"emulator_host": emu.host, "timeout": 3})
        app = make_client(config)
        write_docs(app, {f"e{i}": employee(i) for i in range(30)})
        with live(config) as (service, events):
            wait_for(lambda: len(mirror_rows(config)) == 30, 30, "the initial rows")
            # Changes right before the outage: the stream may or may not deliver them in time.
            for i in range(1, 6):
                update(app, f"e{i}", salary=70_000 + i)
            write_docs(app, {"before": employee(500)})
            metadata = export_emulator(emu.host, project, tmp_path / "export")
            app.close()
            mark = events.mark()
            emu.stop(kill=True)

            wait_for(lambda: listen_state(service) == FALLBACK, 60, "polling-fallback while the emulator is down")
            wait_for(
                lambda: [e for e in events.since(mark, SyncStarted) if e.kind == "normal"],
                60,
                "a polled run while the listener is down",
            )
            assert service.alive

            command = emulator_module.emulator_command()
            monkeypatch.setattr(emulator_module, "emulator_command", lambda: [*command, "--import-data", metadata])
            emu.start()
            app = make_client(config)
            for i in range(6, 9):
                update(app, f"e{i}", salary=80_000 + i, status="moved")
            write_docs(app, {"after": employee(600)})
            wait_for(lambda: listen_state(service) == LISTENING, 120, "listening again after the restart")
            assert {RECONNECTING, FALLBACK, LISTENING} <= set(listen_states(events, mark))

            # The stream works again: a change and a deletion in the watched set arrive.
            update(app, "e9", status="leaving")
            wait_row(config, "e9", lambda r: r["status"] == "leaving", "a change after the restart", timeout=60)
            app.collection("employees").document("e9").delete()
            wait_row(config, "e9", lambda r: r["deleted_at"] is not None, "a delete after the restart")
            wait_no_differences(config, app, timeout=90)
            assert service.snapshot()["listen_reconnects"] >= 1
            app.close()
        # And empsync's own verify agrees: nothing around the outage was lost.
        toml = write_toml(tmp_path / "sync.toml", config)
        done = run_cli("verify", "--json", "--yes", "--config", str(toml))
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["differences"] == 0
    finally:
        emu.stop()


# -- 5. back-pressure ------------------------------------------------------------------------

FULL = os.environ.get("EMPSYNC_FULL", "") in ("1", "true", "yes")
# CI size: 5,000 writes in parallel batch commits over a few seconds. EMPSYNC_FULL=1: the
# 5,000 writes a second for 10 s.
BURST_WRITES, BURST_SECONDS = (50_000, 10.0) if FULL else (5_000, 2.5)


class BacklogSampler:
    """Samples the listener's hand-off size on its own thread; remembers the peaks.

    ``peak_streaming`` counts only samples taken once the current subscription had
    delivered more than its initial snapshot (the one snapshot the bound admits in full).
    """

    def __init__(self, service: SyncService) -> None:
        self.service = service
        self.peak = self.peak_streaming = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            mirror = self.service._live_mirror
            if mirror is not None:
                heard = mirror.listener.heard  # read first: a later snapshot only shrinks an oversized backlog
                backlog = mirror.listener.backlog
                self.peak = max(self.peak, backlog)
                if heard > 1:
                    self.peak_streaming = max(self.peak_streaming, backlog)
                self.samples += 1
            time.sleep(0.001)

    def __enter__(self) -> BacklogSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


def burst(client, writes: int, seconds: float) -> None:
    """``writes`` new documents in 500-write batch commits, spread evenly over ``seconds``.

    Distinct documents: concurrent commits on one document abort on the emulator's locks.
    """
    collection = client.collection("employees")
    commits = range(0, writes, 500)
    started = time.monotonic()

    def commit(n: int, start: int) -> None:
        delay = started + seconds * n / len(commits) - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        batch = client.batch()
        for i in range(start, min(start + 500, writes)):
            batch.set(collection.document(f"b{i}"), employee(i))
        batch.commit()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(commit, range(len(commits)), commits))


def test_a_burst_is_absorbed_with_a_bounded_hand_off(make_config, mysql_url, firestore_client):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(10)})
    config = listen_config(make_config, mysql_url)
    with live(config) as (service, events):
        bound = service._live_mirror.listener.max_pending
        assert bound == config.target.batch_size * PENDING_BATCHES
        mark = events.mark()
        with BacklogSampler(service) as sampler:
            burst(firestore_client, BURST_WRITES, BURST_SECONDS)
            wait_no_differences(config, firestore_client, timeout=900 if FULL else 120, service=service)
        catch_ups = [e for e in events.since(mark, SyncStarted) if e.trigger == "catch-up"]
        print(
            f"peak backlog {sampler.peak} (streaming {sampler.peak_streaming}) of {bound}, "
            f"{sampler.samples} samples, {len(catch_ups)} catch-up runs"
        )
        assert sampler.samples > 100
        assert sampler.peak_streaming <= bound, f"the hand-off held {sampler.peak_streaming}, over its bound {bound}"
        assert wait_listening(service)
    # Each read is in one run row: the listen session's, or a catch-up run's, never both.
    runs = runs_table(config)
    assert sum(r["firestore_reads"] for r in runs) <= service.engine.source.meter.reads, runs


# -- 4. ordering -------------------------------------------------------------------------------


def drain(config: cfg.Config, client, token: str) -> None:
    """Write a sentinel and wait for it: the stream is in commit order, so everything before is in."""
    write_docs(client, {"sentinel": employee(9_999, position=token)})
    wait_row(config, "sentinel", lambda r: r["position"] == token, "the sentinel", timeout=60)


def test_quick_updates_end_newest_and_a_recreated_document_ends_present(make_config, target_url, firestore_client):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(5)})
    config = listen_config(make_config, target_url)
    collection = firestore_client.collection("employees")
    with live(config):
        # Many quick sequential updates to one document: the newest version wins.
        for version in range(1, 41):
            collection.document("e0").update({"salary": version, "updated_at": firestore.SERVER_TIMESTAMP})

        # And concurrent writers to another: whatever Firestore committed last wins.
        def writer(n: int) -> None:
            for k in range(10):
                collection.document("e1").update({"salary": 1_000 * n + k, "updated_at": firestore.SERVER_TIMESTAMP})

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(writer, range(4)))
        # Delete-then-recreate in quick succession, for a watched document and an unwatched one.
        update(firestore_client, "e2", status="watched")
        wait_row(config, "e2", lambda r: r["status"] == "watched", "e2 in the watched set")
        for doc_id in ("e2", "e3"):
            collection.document(doc_id).delete()
            collection.document(doc_id).set(employee(700, status="recreated"))
        drain(config, firestore_client, "first")
        rows = mirror_rows(config)
        assert rows["e0"]["salary"] == 40
        assert rows["e1"]["salary"] == collection.document("e1").get().get("salary")
        for doc_id in ("e2", "e3"):
            assert rows[doc_id]["deleted_at"] is None and rows[doc_id]["status"] == "recreated", rows[doc_id]
        # Deleted, and re-created after the deletion was applied: restored.
        collection.document("e2").delete()
        wait_row(config, "e2", lambda r: r["deleted_at"] is not None, "the soft delete of e2")
        collection.document("e2").set(employee(701, status="back"))
        wait_row(config, "e2", lambda r: r["deleted_at"] is None and r["status"] == "back", "e2 restored")
        drain(config, firestore_client, "second")
    assert differences(config, firestore_client) == []


# -- 6. status and the headless face -----------------------------------------------------------


def test_status_shows_the_live_mode_state_and_lag(make_config, mysql_url, firestore_client):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(3)})
    port = free_port()
    config = listen_config(make_config, mysql_url, api={"enabled": True, "port": port, "token": "listen-token-82c4"})
    with live(config) as (service, _events):
        api = ControlApi(service, config.api).start()
        try:
            update(firestore_client, "e1", salary=3)
            wait_row(config, "e1", lambda r: r["salary"] == 3, "a change")
            code, _headers, status = http(
                "GET", f"http://127.0.0.1:{port}/api/realtime-sync/status", token="listen-token-82c4"
            )
        finally:
            api.stop()
    assert code == 200
    assert status["mode"] == "listen" and status["state"] == LISTENING
    assert status["listen_state"] == LISTENING and status["listen_detail"] == "changes since the watermark"
    assert isinstance(status["lag_ms"], int) and status["lag_ms"] >= 0
    assert status["listen_backlog"] == 0 and status["listen_reconnects"] == 0
    assert status["listen_last_applied_at"].endswith("Z")
    assert "force run" in status["listen_cost"]


def test_headless_logs_the_listen_state(tmp_path, make_config, mysql_url, firestore_client):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(3)})
    toml = write_toml(tmp_path / "sync.toml", listen_config(make_config, mysql_url))
    process = Headless(toml)
    try:
        process.wait_line("(mode listen)")
        process.wait_line("Listening to changes since the watermark")
        process.wait_line("Status: listening")
        mark = process.count()
        update(firestore_client, "e1", salary=4)
        process.wait_line("Employee updated: e1", after=mark)
        firestore_client.collection("employees").document("e1").delete()
        process.wait_line("Employee deleted: e1 (soft delete)", after=mark)
        process.signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        process.close()
