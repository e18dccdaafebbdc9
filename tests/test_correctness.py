"""The mirror stays right: each wrong result once found in the engine, as a test against real servers.

Every test here reproduces a case where the table once ended up different
from Firestore (a mixed version, a lost deletion, a stale reject, a watermark
from another table, a skipped late commit, drift nobody healed, a mass delete)
and asserts the table, the rejects and the audit the way ``empsync verify``
and an operator would see them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.cloud import firestore
from sqlalchemy import delete, insert, update

from core import config as cfg
from core.engine import SyncEngine, _Run
from core.mapping import Reject
from core.service import SyncService
from core.state import StateKey
from core.store import Rejected
from core.times import utcnow
from core.verify import verify

from .conftest import employee, run_cli, write_docs, write_toml
from .service_support import failing_writes, mirror_rows, stored_state, wait_for

pytestmark = pytest.mark.integration


def ok(result):
    assert result.status == "ok", (result.reason, result.hint)
    return result.counts


def doc(client, doc_id: str):
    return client.collection("employees").document(doc_id)


def differences(engine: SyncEngine) -> dict[str, Any]:
    report = verify(engine)
    return {"missing": report.missing, "extra": report.extra, "different": report.different}


NO_DRIFT = {"missing": [], "extra": [], "different": []}
PAST = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


@contextmanager
def engine_for(config: cfg.Config) -> Iterator[SyncEngine]:
    engine = SyncEngine(config)
    try:
        yield engine
    finally:
        engine.close()


def mirror_table(engine: SyncEngine):
    return engine.db.tables.mirror


# -- a document read twice in one batch ---------------------------------------------------


def test_two_versions_of_a_document_in_one_batch_leave_the_newest_one(make_config, target_url, firestore_client):
    """A revert in the second version is written, and the row's hash is that version's."""
    write_docs(firestore_client, {"e1": employee(1, salary=100)})
    config = make_config(target_url)
    with engine_for(config) as engine:
        ok(engine.run(force=True))
        doc(firestore_client, "e1").update({"salary": 200, "updated_at": firestore.SERVER_TIMESTAMP})
        (middle,) = engine.source.get(["e1"])
        doc(firestore_client, "e1").update({"salary": 100, "updated_at": firestore.SERVER_TIMESTAMP})
        (newest,) = engine.source.get(["e1"])
        run = _Run(engine.state.start_run("normal", "test"), "normal", False, True, utcnow())
        engine._apply([middle, newest], run)
        assert mirror_rows(config)["e1"]["salary"] == 100
        assert differences(engine) == NO_DRIFT
        # The next force run finds nothing to put right: the hash was the newest version's.
        assert ok(engine.run(force=True)).repaired == 0


# -- the watermark belongs to its table and mapping ---------------------------------------------


def test_a_new_target_table_gets_a_full_read_not_the_old_tables_watermark(make_config, target_url, firestore_client):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(5)})
    first = make_config(target_url)
    with engine_for(first) as engine:
        ok(engine.run(force=True))
    doc(firestore_client, "e0").update({"salary": 1, "updated_at": firestore.SERVER_TIMESTAMP})
    moved = make_config(target_url, target={"table": "staff"})
    with engine_for(moved) as engine:
        counts = ok(engine.run())  # a normal run: it must still read everything for the new table
        assert counts.inserted == 5
        assert differences(engine) == NO_DRIFT


def test_a_newly_mapped_field_is_filled_for_unchanged_documents_by_the_next_normal_run(
    make_config, target_url, firestore_client
):
    write_docs(firestore_client, {f"e{i}": employee(i, nickname=f"nick{i}") for i in range(4)})
    fields = {"name": {"type": "string", "required": True}, "salary": {"type": "integer"}}
    with engine_for(make_config(target_url, fields=fields)) as engine:
        ok(engine.run(force=True))
        ok(engine.run())  # a watermark now stands for this mapping
    wider = make_config(target_url, fields={**fields, "nickname": {"type": "string"}})
    with engine_for(wider) as engine:
        counts = ok(engine.run())
        assert counts.updated == 4 and counts.repaired == 0  # a new mapping arriving is not drift
    assert {r["nickname"] for r in mirror_rows(wider).values()} == {"nick0", "nick1", "nick2", "nick3"}


# -- a force run that reads nothing --------------------------------------------------------------


def test_a_force_run_that_reads_no_documents_keeps_rows_and_rejects(make_config, target_url, firestore_client):
    write_docs(firestore_client, {"ok": employee(1), "bad": employee(2, salary="lots")})
    config = make_config(target_url)
    with engine_for(config) as engine:
        ok(engine.run(force=True))
        assert {r["document_id"] for r in engine.state.rejects()} == {"bad"}
    typo = make_config(target_url, source={"collection": "employes"})
    with engine_for(typo) as engine:
        ok(engine.run(force=True))
        assert {r["document_id"] for r in engine.state.rejects()} == {"bad"}
    assert mirror_rows(config)["ok"]["deleted_at"] is None


def test_hard_mode_removes_a_soft_deleted_row_whose_document_is_gone(make_config, target_url, firestore_client):
    """A row marked deleted by hand (or by an earlier soft mode) is no row hard mode may keep."""
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(4)})
    config = make_config(target_url, target={"delete_mode": "hard"})
    with engine_for(config) as engine:
        ok(engine.run(force=True))
        m, key = mirror_table(engine), mirror_table(engine).c.firestore_id
        with engine.db.begin() as conn:
            conn.execute(update(m).where(key.in_(["e1", "e2"])).values(deleted_at=utcnow()))
        doc(firestore_client, "e1").delete()
        doc(firestore_client, "e2").delete()
        assert ok(engine.run(force=True)).deleted == 2
        assert set(mirror_rows(config)) == {"e0", "e3"}
        doc(firestore_client, "e3").delete()  # the same for a deletion a batch applies (ids runs, listen mode)
        with engine.db.begin() as conn:
            conn.execute(update(m).where(key == "e3").values(deleted_at=utcnow()))
        assert ok(engine.run(ids=["e3"])).deleted == 1
        assert set(mirror_rows(config)) == {"e0"}


# -- late commits: the resume margin -----------------------------------------------------------------


def late_write(client, doc_id: str, before: timedelta) -> None:
    """A write whose updated_at is older than its commit, as a lagging server timestamp is."""
    write_docs(client, {doc_id: employee(7, updated_at=datetime.now(UTC) - before)})


def test_a_configured_margin_catches_a_late_commit_and_the_poll_measures_its_lag(
    make_config, target_url, firestore_client
):
    write_docs(firestore_client, {"e1": employee(1)})
    config = make_config(target_url, source={"watermark_margin_ms": 10_000})
    with engine_for(config) as engine:
        ok(engine.run(force=True))
        late_write(firestore_client, "late", timedelta(seconds=3))
        counts = ok(engine.run())
        assert counts.inserted == 1
        lag_ms = int(engine.state.get(StateKey.COMMIT_LAG_MS) or 0)
        assert lag_ms >= 2_000, "the poll saw a new version older than the last read: a lag, recorded"


def test_a_stored_lag_widens_the_margin_of_polls(make_config, target_url, firestore_client):
    """A lag measured by a listener (or any run) is used by the next poll, whatever the configured floor."""
    write_docs(firestore_client, {"e1": employee(1)})
    config = make_config(target_url)
    with engine_for(config) as engine:
        engine.db.ensure_schema()
        engine.state.set({StateKey.COMMIT_LAG_MS: 5_000})
        ok(engine.run(force=True))
        late_write(firestore_client, "late", timedelta(seconds=3))
        assert ok(engine.run()).inserted == 1


# -- a corrupt watermark ---------------------------------------------------------------------------------


def test_a_corrupt_watermark_fails_normal_runs_naming_the_key_and_a_force_run_rewrites_it(
    make_config, target_url, firestore_client, tmp_path
):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(3)})
    config = make_config(target_url)
    with engine_for(config) as engine:
        ok(engine.run(force=True))
        engine.state.set({StateKey.WATERMARK: "{not json"})
    path = str(write_toml(tmp_path / "sync.toml", config))
    due = {StateKey.LAST_SYNC_AT: None}
    with engine_for(config) as engine:
        engine.state.set(due)
    plain = run_cli("--config", path, "sync")
    assert plain.returncode == 1
    assert "'watermark'" in plain.stderr and "empsync sync --force" in plain.stderr
    assert "Traceback" not in plain.stderr
    forced = run_cli("--config", path, "sync", "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    with engine_for(config) as engine:
        engine.state.set(due)
    again = run_cli("--config", path, "sync", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "ok", again.stderr


# -- a force run heals drift made in the table -------------------------------------------------------------


def test_a_force_run_repairs_rows_changed_behind_its_back_and_audits_what_it_found(
    make_config, target_url, firestore_client, tmp_path
):
    # Last changed an hour ago: normal runs do not read them again.
    write_docs(firestore_client, {f"e{i}": employee(i, updated_at=PAST) for i in range(6)})
    config = make_config(target_url)
    with engine_for(config) as engine:
        ok(engine.run(force=True))
        m, key = mirror_table(engine), mirror_table(engine).c.firestore_id
        with engine.db.begin() as conn:
            conn.execute(update(m).where(key == "e1").values(salary=1, status="gone fishing"))  # an UPDATE by hand
            conn.execute(delete(m).where(key == "e2"))  # a DELETE by hand
            conn.execute(update(m).where(key == "e3").values(deleted_at=utcnow()))  # a soft delete by hand
            conn.execute(  # a row with no document
                insert(m).values(firestore_id="ghost", name="Nobody", synced_at=utcnow(), content_hash="x" * 32)
            )
        assert differences(engine) != NO_DRIFT
        # A normal run trusts the hash: it leaves the drift alone.
        assert ok(engine.run()).repaired == 0
    path = str(write_toml(tmp_path / "sync.toml", config))
    proc = run_cli("--config", path, "sync", "--force", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["repaired"] == 3 and result["deleted"] == 1 and result["inserted"] == 0
    with engine_for(config) as engine:
        assert differences(engine) == NO_DRIFT
        changes = engine.state.recent_changes(limit=50)
        repairs = {
            (c["document_id"], c["field"]): (c["old_value"], c["new_value"])
            for c in changes
            if c["operation"] == "repair"
        }
        assert repairs[("e1", "salary")] == ("1", "50001")
        assert repairs[("e1", "status")] == ("gone fishing", "active")
        assert ("e2", None) in repairs
        assert repairs[("e3", "deleted_at")][1] is None and repairs[("e3", "deleted_at")][0] is not None
        stats = json.loads(run_cli("--config", path, "stats", "--json").stdout)
        assert stats["repaired"] == 3
        # Healed for good: the next force run repairs nothing.
        assert ok(engine.run(force=True)).repaired == 0


def test_a_dry_force_run_lists_repairs_without_making_them(make_config, target_url, firestore_client):
    write_docs(firestore_client, {"e1": employee(1)})
    config = make_config(target_url)
    with engine_for(config) as engine:
        ok(engine.run(force=True))
        with engine.db.begin() as conn:
            conn.execute(update(mirror_table(engine)).values(salary=7))
        result = engine.run(force=True, dry_run=True)
        assert result.counts.repaired == 1
        (item,) = [c for c in result.would_change if c["operation"] == "repair"]
        assert item["fields"] == {"salary": {"old": "7", "new": "50001"}}
    assert mirror_rows(config)["e1"]["salary"] == 7


# -- the mass-delete guard ---------------------------------------------------------------------------------


def guarded(make_config, url: str, **target: Any) -> cfg.Config:
    return make_config(url, target={"max_delete_fraction": 0.25, **target})


def test_the_mass_delete_guard_stops_deletions_but_not_the_rest_of_the_run(
    make_config, target_url, firestore_client, tmp_path
):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(8)})
    config = guarded(make_config, target_url)
    with engine_for(config) as engine:
        ok(engine.run(force=True))
    for i in range(3):  # 3 of 9 live rows (with the new one): 33 %
        doc(firestore_client, f"e{i}").delete()
    doc(firestore_client, "e7").update({"salary": 9, "updated_at": firestore.SERVER_TIMESTAMP})
    write_docs(firestore_client, {"new": employee(20)})
    path = str(write_toml(tmp_path / "sync.toml", config))
    proc = run_cli("--config", path, "sync", "--force", "--json")
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    assert result["status"] == "failed" and result["deleted"] == 0
    assert "3 of 9 live rows" in result["reason"] and "--allow-mass-delete" in proc.stdout
    assert result["inserted"] == 1 and result["updated"] == 1
    rows = mirror_rows(config)
    assert all(rows[f"e{i}"]["deleted_at"] is None for i in range(3)) and rows["e7"]["salary"] == 9
    status = json.loads(run_cli("--config", path, "status", "--json").stdout)
    assert status["mass_delete_guard"]["deleting"] == 3 and status["mass_delete_guard"]["live_rows"] == 9
    assert "TRIPPED" in run_cli("--config", path, "status").stdout

    allowed = run_cli("--config", path, "sync", "--force", "--allow-mass-delete", "--json")
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["deleted"] == 3
    assert json.loads(run_cli("--config", path, "status", "--json").stdout)["mass_delete_guard"] is None


def test_a_tripped_guard_is_not_retried_in_a_loop_by_the_service(make_config, target_url, firestore_client):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(4)})
    config = guarded(make_config, target_url)
    with engine_for(config) as engine:
        ok(engine.run(force=True))
    for i in range(3):
        doc(firestore_client, f"e{i}").delete()
    service = SyncService(config)
    service.start()
    try:
        wait_for(lambda: service.snapshot().get("is_leader"), 30, "leadership")
        service.force_sync("test")
        snap = wait_for(
            lambda: (s := service.snapshot()).get("last_result") and s["last_result"]["status"] == "failed" and s,
            60,
            "the guarded force run",
        )
        assert snap["retry_at"] is None and snap["failures"] == 0
        assert "mass-delete guard" in snap["detail"]
        service.force_sync("test", allow_mass_delete=True)
        wait_for(
            lambda: (r := service.snapshot()["last_result"]) and r["status"] == "ok" and r["deleted"] == 3,
            60,
            "the allowed force run",
        )
    finally:
        assert service.stop(15)
    assert stored_state(config).get(StateKey.MASS_DELETE_GUARD) is None


def test_a_dry_run_says_the_guard_would_hold_the_deletions_back(make_config, target_url, firestore_client):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(4)})
    config = guarded(make_config, target_url)
    with engine_for(config) as engine:
        ok(engine.run(force=True))
        for i in range(2):
            doc(firestore_client, f"e{i}").delete()
        result = engine.run(force=True, dry_run=True)
        assert result.status == "ok" and result.counts.deleted == 0
        assert [c["operation"] for c in result.would_change] == ["blocked"]
        assert engine.state.get(StateKey.MASS_DELETE_GUARD) is None  # a dry run records nothing


# -- a failed batch in a listen session --------------------------------------------------------------------


def listen_config(make_config, url: str, **sync: Any) -> cfg.Config:
    return make_config(url, sync={"mode": "listen", "interval": 10, "force_interval": 7 * 86_400, **sync})


@contextmanager
def listening(config: cfg.Config) -> Iterator[SyncService]:
    service = SyncService(config)
    service.start()
    try:
        wait_for(lambda: service.snapshot().get("listen_state") == "listening", 60, "the listener")
        yield service
    finally:
        assert service.stop(15), "the worker did not stop"


def soft_deleted(config: cfg.Config, *ids: str) -> bool:
    rows = mirror_rows(config)
    return all(rows.get(i) is not None and rows[i]["deleted_at"] is not None for i in ids)


def test_a_deletion_in_a_failed_listen_batch_is_applied_once_the_database_is_back(
    make_config, target_url, firestore_client
):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(4)})
    config = listen_config(make_config, target_url)
    with listening(config) as service:
        wait_for(lambda: len(mirror_rows(config)) == 4, 30, "the first snapshot's rows")
        # Changed since the watermark, so the stream watches it (and reports its deletion).
        doc(firestore_client, "e1").update({"salary": 5, "updated_at": firestore.SERVER_TIMESTAMP})
        wait_for(lambda: mirror_rows(config)["e1"]["salary"] == 5, 30, "the change")
        since = utcnow()
        with failing_writes(service.engine, times=1) as failed:
            doc(firestore_client, "e1").delete()
            wait_for(lambda: failed, 30, "the deletion's batch to fail")
        # The re-subscription's first snapshot lists only documents that exist: the
        # deletion must come from what the listener kept, not from the stream.
        wait_for(lambda: soft_deleted(config, "e1"), 30, "the deletion after the blip")
    assert no_force_run_since(config, since)


def test_a_whole_collection_listener_deletes_what_went_while_no_stream_was_open(
    make_config, target_url, firestore_client
):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(5)})
    config = listen_config(make_config, target_url, listen_scope="collection")
    with listening(config):
        wait_for(lambda: len(mirror_rows(config)) == 5, 30, "the first snapshot's rows")
    since = utcnow()
    doc(firestore_client, "e1").delete()
    doc(firestore_client, "e2").delete()
    with listening(config):
        wait_for(lambda: soft_deleted(config, "e1", "e2"), 30, "the deletions made while stopped")
        with engine_for(config) as engine:
            assert differences(engine) == NO_DRIFT
    assert no_force_run_since(config, since)


def test_a_listen_session_clears_a_reject_another_run_recorded(make_config, target_url, firestore_client):
    write_docs(firestore_client, {"e1": employee(1)})
    config = listen_config(make_config, target_url)
    with listening(config):
        wait_for(lambda: "e1" in mirror_rows(config), 30, "the row")
        with engine_for(config) as other:  # another process (a poll, a force run) recorded a reject
            with other.db.begin() as conn:
                other.mirror.record_rejects(conn, [Rejected("e1", Reject("salary", "stale"), None)], None, utcnow())
            assert {r["document_id"] for r in other.state.rejects()} == {"e1"}
            doc(firestore_client, "e1").update({"salary": 5, "updated_at": firestore.SERVER_TIMESTAMP})
            wait_for(lambda: not other.state.rejects(), 30, "the valid version to clear the reject")


def no_force_run_since(config: cfg.Config, since: datetime) -> bool:
    """The deletion arrived through the stream, not through the safety-net force run."""
    with engine_for(config) as engine, engine.db.connect() as conn:
        runs = engine.state.recent_runs(conn, limit=100)
    return not [r for r in runs if r["kind"] == "force" and r["started_at"] >= since]
