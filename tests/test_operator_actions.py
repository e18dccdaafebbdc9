"""The operator's actions against the real servers: selected employees, rollback, holds and the run history."""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any

import pytest
from google.cloud import firestore
from sqlalchemy import select

from core.engine import SyncEngine
from core.state import StateKey

from .conftest import employee, run_cli, write_docs, write_toml
from .service_support import mirror_rows, stored_state

pytestmark = pytest.mark.integration


@contextmanager
def engine_for(config):
    engine = SyncEngine(config)
    try:
        engine.db.ensure_schema()
        yield engine
    finally:
        engine.close()


def doc(client, doc_id: str):
    return client.collection("employees").document(doc_id)


def ok(result):
    assert result.status == "ok", (result.reason, result.hint)
    return result


def table(config) -> dict[str, dict[str, Any]]:
    """The rows as an operator compares them: every column but the bookkeeping of when."""
    return {
        i: {k: v for k, v in r.items() if k not in ("synced_at", "firestore_update_time")}
        for i, r in mirror_rows(config).items()
    }


def live(config) -> dict[str, dict[str, Any]]:
    return {
        i: {k: v for k, v in r.items() if k != "deleted_at"}
        for i, r in table(config).items()
        if r["deleted_at"] is None
    }


# -- sync selected employees -------------------------------------------------------------------------


def test_an_ids_run_reads_exactly_those_documents_and_leaves_the_schedule_alone(
    make_config, target_url, firestore_client, tmp_path
):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(6)})
    config = make_config(target_url)
    with engine_for(config) as engine:
        ok(engine.run(force=True))
        before = stored_state(config)
    doc(firestore_client, "e1").update({"salary": 1, "updated_at": firestore.SERVER_TIMESTAMP})
    doc(firestore_client, "e2").update({"salary": "lots", "updated_at": firestore.SERVER_TIMESTAMP})
    doc(firestore_client, "e3").delete()
    doc(firestore_client, "e4").update({"salary": 4, "updated_at": firestore.SERVER_TIMESTAMP})  # not asked for
    path = str(write_toml(tmp_path / "sync.toml", config))
    proc = run_cli(
        "--config", path, "sync", "--id", "e1", "--id", "e2", "--id", "e3", "--id", "e1", "--id", "nope", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["kind"] == "ids" and result["status"] == "ok"
    assert result["firestore_reads"] == 4  # one billed read per distinct id, missing ones included
    assert (result["updated"], result["rejected"], result["deleted"]) == (1, 1, 1)
    rows = mirror_rows(config)
    assert rows["e1"]["salary"] == 1 and rows["e3"]["deleted_at"] is not None and rows["e4"]["salary"] == 50004
    after = stored_state(config)
    for key in (StateKey.WATERMARK, StateKey.LAST_SYNC_AT, StateKey.LAST_FORCE_SYNC_AT):
        assert after.get(key) == before.get(key), key
    with engine_for(config) as engine:
        assert {r["document_id"] for r in engine.state.rejects()} == {"e2"}
        with engine.db.connect() as conn:
            assert engine.state.last_run(conn)["kind"] == "ids"


def test_ids_from_a_file_or_stdin_keep_spaces_and_refuse_bad_ids(make_config, target_url, firestore_client, tmp_path):
    write_docs(firestore_client, {"a": employee(1), "b ": employee(2), " c": employee(3)})
    config = make_config(target_url)
    path = str(write_toml(tmp_path / "sync.toml", config))
    listing = tmp_path / "ids.txt"
    listing.write_text("a\nb \r\n\n")
    proc = run_cli("--config", path, "sync", "--ids-from", str(listing), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["inserted"] == 2
    import subprocess
    import sys

    from .conftest import REPO

    piped = subprocess.run(
        [sys.executable, "-m", "core.cli", "--config", path, "sync", "--ids-from", "-", "--json"],
        input=" c\n", capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert set(mirror_rows(config)) == {"a", "b ", " c"}
    for bad in (["--id", "x/y"], ["--id", "__hidden__"], ["--id", ""], ["--id", "a", "--force"]):
        refused = run_cli("--config", path, "sync", *bad)
        assert refused.returncode == 2, (bad, refused.stderr)
        assert "Traceback" not in refused.stderr


# -- rollback -----------------------------------------------------------------------------------------


def test_a_rollback_restores_the_rows_pauses_and_can_itself_be_rolled_back(
    make_config, target_url, firestore_client, tmp_path
):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(5)})
    config = make_config(target_url, target={"delete_mode": "hard"})
    with engine_for(config) as engine:
        ok(engine.run(force=True))
    snapshot = table(config)
    doc(firestore_client, "e0").update({"salary": 1, "status": "left", "updated_at": firestore.SERVER_TIMESTAMP})
    doc(firestore_client, "e1").delete()
    write_docs(firestore_client, {"new": employee(9)})
    with engine_for(config) as engine:
        bad = ok(engine.run(force=True))
        assert (bad.counts.updated, bad.counts.deleted, bad.counts.inserted) == (1, 1, 1)
    after_bad = table(config)
    path = str(write_toml(tmp_path / "sync.toml", config))

    dry = run_cli("--config", path, "rollback", str(bad.run_id), "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert sorted((c["document_id"], c["operation"]) for c in planned["changes"]) == [
        ("e0", "update"), ("e1", "insert"), ("new", "delete"),
    ]  # fmt: skip
    assert table(config) == after_bad  # a dry run writes nothing

    unconfirmed = run_cli("--config", path, "rollback", str(bad.run_id))
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr  # no terminal, nobody to ask

    done = run_cli("--config", path, "rollback", str(bad.run_id), "--yes", "--json")
    assert done.returncode == 0, done.stderr
    rolled = json.loads(done.stdout)
    assert rolled["kind"] == "rollback" and rolled["rolled_back"] == [bad.run_id]
    assert table(config) == snapshot  # exactly as before the run, the hard-deleted row included
    assert stored_state(config).get(StateKey.PAUSED) == "1"
    assert "empsync resume" in rolled["reason"]

    again = run_cli("--config", path, "rollback", str(rolled["run_id"]), "--yes", "--json")
    assert again.returncode == 0, again.stderr
    assert table(config) == after_bad  # the rollback of the rollback: the run's state again


def test_a_rollback_refuses_when_a_later_run_changed_the_same_rows_unless_cascade(
    make_config, target_url, firestore_client, tmp_path
):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(3)})
    config = make_config(target_url)
    with engine_for(config) as engine:
        ok(engine.run(force=True))
    snapshot = live(config)
    with engine_for(config) as engine:
        doc(firestore_client, "e0").update({"salary": 1, "updated_at": firestore.SERVER_TIMESTAMP})
        first = ok(engine.run(force=True))
        doc(firestore_client, "e0").update({"salary": 2, "updated_at": firestore.SERVER_TIMESTAMP})
        doc(firestore_client, "e2").update({"salary": 3, "updated_at": firestore.SERVER_TIMESTAMP})
        second = ok(engine.run(force=True))
    path = str(write_toml(tmp_path / "sync.toml", config))
    refused = run_cli("--config", path, "rollback", str(first.run_id), "--yes")
    assert refused.returncode == 2
    assert f"#{second.run_id}" in refused.stderr and "--cascade" in refused.stderr
    cascaded = run_cli("--config", path, "rollback", str(first.run_id), "--yes", "--cascade", "--json")
    assert cascaded.returncode == 0, cascaded.stderr
    assert json.loads(cascaded.stdout)["rolled_back"] == [second.run_id, first.run_id]
    assert live(config) == snapshot


def test_hold_keeps_the_documents_out_of_every_sync_until_released(make_config, target_url, firestore_client, tmp_path):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(3)})
    config = make_config(target_url)
    with engine_for(config) as engine:
        ok(engine.run(force=True))
        doc(firestore_client, "e0").update({"salary": 1, "updated_at": firestore.SERVER_TIMESTAMP})
        bad = ok(engine.run(force=True))
    path = str(write_toml(tmp_path / "sync.toml", config))
    held = run_cli("--config", path, "rollback", str(bad.run_id), "--yes", "--hold")
    assert held.returncode == 0, held.stderr
    assert stored_state(config).get(StateKey.PAUSED) != "1"  # held, not paused
    with engine_for(config) as engine:
        ok(engine.run(force=True))
        ok(engine.run(ids=["e0"]))
    assert mirror_rows(config)["e0"]["salary"] == 50000  # the bad version stays out
    doc(firestore_client, "e0").delete()
    with engine_for(config) as engine:
        ok(engine.run(force=True))
    assert mirror_rows(config)["e0"]["deleted_at"] is None  # and a held row is not removed either
    released = run_cli("--config", path, "release", "e0")
    assert released.returncode == 0 and "released 1" in released.stdout
    with engine_for(config) as engine:
        ok(engine.run(force=True))
    assert mirror_rows(config)["e0"]["deleted_at"] is not None
    assert run_cli("--config", path, "release").returncode == 2


def test_a_rollback_of_an_unknown_or_expired_run_says_why(make_config, target_url, firestore_client, tmp_path):
    write_docs(firestore_client, {"e0": employee(0)})
    config = make_config(target_url)
    with engine_for(config) as engine:
        run = ok(engine.run(force=True))
        runs = engine.db.tables.runs
        with engine.db.begin() as conn:
            from datetime import timedelta

            from sqlalchemy import update

            from core.times import utcnow

            conn.execute(update(runs).where(runs.c.id == run.run_id).values(started_at=utcnow() - timedelta(days=91)))
    path = str(write_toml(tmp_path / "sync.toml", config))
    unknown = run_cli("--config", path, "rollback", "999", "--yes")
    assert unknown.returncode == 2 and "no run #999" in unknown.stderr
    expired = run_cli("--config", path, "rollback", str(run.run_id), "--yes")
    assert expired.returncode == 2 and "audit_retention_days" in expired.stderr


# -- the run history ------------------------------------------------------------------------------------


def test_runs_lists_the_history_with_reads_beside_the_naive_cost(make_config, target_url, firestore_client, tmp_path):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(4)})
    config = make_config(target_url)
    with engine_for(config) as engine:
        ok(engine.run(force=True))
        ok(engine.run(ids=["e1"]))
    path = str(write_toml(tmp_path / "sync.toml", config))
    proc = run_cli("--config", path, "runs", "--json")
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(proc.stdout)
    assert [r["kind"] for r in runs] == ["ids", "force"]
    assert runs[1]["firestore_reads"] == 4 and runs[1]["inserted"] == 4 and runs[1]["status"] == "ok"
    text = run_cli("--config", path, "runs").stdout
    assert "force" in text and "ids" in text and "4/4" in text
    with engine_for(config) as engine, engine.db.connect() as conn:
        assert conn.execute(select(engine.db.tables.runs.c.target_table)).scalars().all() == ["employees"] * 2


def test_stats_roll_up_runs_and_the_listen_lag_by_hour_and_day(make_config, target_url, firestore_client, tmp_path):
    from core.service import SyncService

    from .service_support import wait_for

    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(3)})
    config = make_config(target_url, sync={"mode": "listen", "interval": 10, "force_interval": 7 * 86_400})
    service = SyncService(config)
    service.start()
    try:
        wait_for(lambda: service.snapshot().get("listen_state") == "listening", 60, "the listener")

        # The service's own figures (the console's charts) take in a finished run within seconds.
        def runs_this_hour() -> int:
            return (service.stats().get("hourly") or [{"runs": 0}])[-1]["runs"]

        wait_for(lambda: runs_this_hour() >= 1, 30, "the first run in the service's hourly figures")
        for i in range(5):
            doc(firestore_client, "e1").update({"salary": i, "updated_at": firestore.SERVER_TIMESTAMP})
            wait_for(lambda i=i: mirror_rows(config)["e1"]["salary"] == i, 30, f"write {i}")
    finally:
        assert service.stop(15)
    path = str(write_toml(tmp_path / "sync.toml", config))
    stats = json.loads(run_cli("--config", path, "stats", "--json").stdout)
    hour, day = stats["hourly"][-1], stats["daily"][-1]
    assert len(stats["hourly"]) == 48 and len(stats["daily"]) == 30
    assert hour["runs"] >= 2 and hour["reads"] >= 3 and day["runs"] == hour["runs"]
    assert hour["lag_samples"] >= 5 and hour["lag_p50_ms"] is not None and hour["lag_p95_ms"] >= hour["lag_p50_ms"]
