"""Sync semantics end to end: the real emulator, and SQLite and MariaDB as targets."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from google.cloud import firestore
from google.cloud.firestore_v1 import GeoPoint
from sqlalchemy import event, func, inspect, select, update

from core.dialects import make_lock
from core.engine import SyncEngine
from core.state import StateKey

from .conftest import EMPLOYEE_FIELDS, employee, run_cli, write_docs, write_toml

pytestmark = pytest.mark.integration

BOOKKEEPING = {"firestore_update_time", "synced_at", "content_hash"}
# An updated_at well before any read: incremental runs then re-read nothing that
# was only just written (the engine resumes a safety margin before a read's time).
PAST = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


# -- helpers -------------------------------------------------------------------------


def rows(engine: SyncEngine) -> dict[str, dict[str, Any]]:
    with engine.db.connect() as conn:
        found = conn.execute(select(engine.db.tables.mirror)).mappings().all()
    return {r["firestore_id"]: dict(r) for r in found}


def audit(engine: SyncEngine) -> list[dict[str, Any]]:
    t = engine.db.tables.changes
    with engine.db.connect() as conn:
        return [dict(r) for r in conn.execute(select(t).order_by(t.c.id)).mappings().all()]


def rejects(engine: SyncEngine) -> dict[str, dict[str, Any]]:
    with engine.db.connect() as conn:
        found = conn.execute(select(engine.db.tables.rejects)).mappings().all()
    return {r["document_id"]: dict(r) for r in found}


def ok(result):
    assert result.status == "ok", (result.reason, result.hint)
    return result.counts


@contextmanager
def mirror_writes(engine: SyncEngine) -> Iterator[list[str]]:
    """The SQL statements that write the mirror table while the block runs."""
    table = engine.config.target.table
    pattern = re.compile(rf"^\s*(INSERT|UPDATE|DELETE|REPLACE)\b.*?\b[`\"]?{table}[`\"]?\s", re.I | re.S)
    seen: list[str] = []

    def hook(conn, cursor, statement, parameters, context, executemany) -> None:
        head = statement[:200]
        if pattern.match(head) and f"empsync_{table}" not in head:
            seen.append(statement)

    event.listen(engine.db.engine, "before_cursor_execute", hook)
    try:
        yield seen
    finally:
        event.remove(engine.db.engine, "before_cursor_execute", hook)


def upsert_columns(statement: str) -> tuple[set[str], set[str]]:
    """(the inserted columns, the columns an existing row gets set) of one upsert statement."""
    inserted = re.search(r"INTO\s+[`\"]?\w+[`\"]?\s*\(([^)]*)\)", statement, re.I)
    assert inserted, statement
    cols = {c.strip().strip('`"') for c in inserted.group(1).split(",")}
    clause = re.split(r"ON DUPLICATE KEY UPDATE|DO UPDATE SET", statement, flags=re.I)
    assert len(clause) == 2, statement
    sets = {m.strip('`"') for m in re.findall(r"([`\"]?\w+[`\"]?)\s*=", clause[1])}
    return cols, sets


def settled(i: int, **extra: Any) -> dict[str, Any]:
    """An employee last changed an hour ago."""
    return employee(i, **{"updated_at": PAST, **extra})


def docs_ref(client, doc_id: str):
    return client.collection("employees").document(doc_id)


def toml_for(tmp_path, config, name: str = "sync.toml") -> str:
    return str(write_toml(tmp_path / name, config))


# -- validation: a corpus of malformed documents beside valid ones ------------------

REF_PATH = "departments/eng"

# One document per rejection rule: (changes to a valid employee, the field the reason names).
MALFORMED: dict[str, tuple[dict[str, Any], str]] = {
    "bad-name-missing": ({"name": firestore.DELETE_FIELD}, "name"),
    "bad-name-null": ({"name": None}, "name"),
    "bad-name-map": ({"name": {"first": "Ann"}}, "name"),
    "bad-name-array": ({"name": ["Ann"]}, "name"),
    "bad-name-too-long": ({"name": "é" * 201}, "name"),
    "bad-status-too-long": ({"status": "x" * 21}, "status"),
    "bad-bio-map": ({"bio": {"text": "hi"}}, "bio"),
    "bad-bio-array": ({"bio": ["hi"]}, "bio"),
    "bad-salary-boolean": ({"salary": True}, "salary"),
    "bad-salary-fraction": ({"salary": 52000.5}, "salary"),
    "bad-salary-text": ({"salary": "lots"}, "salary"),
    "bad-salary-out-of-range-text": ({"salary": "9223372036854775808"}, "salary"),
    "bad-salary-out-of-range-float": ({"salary": 1e19}, "salary"),
    "bad-rating-nan": ({"rating": math.nan}, "rating"),
    "bad-rating-infinity": ({"rating": math.inf}, "rating"),
    "bad-rating-minus-infinity": ({"rating": -math.inf}, "rating"),
    "bad-rating-boolean": ({"rating": False}, "rating"),
    "bad-rating-text": ({"rating": "4.5"}, "rating"),
    "bad-remote-integer": ({"remote": 1}, "remote"),
    "bad-remote-text": ({"remote": "yes"}, "remote"),
    "bad-hired-text": ({"hired_at": "15/01/2020"}, "hired_at"),
    "bad-hired-not-a-day": ({"hired_at": "2021-02-29"}, "hired_at"),
    "bad-hired-before-1000": ({"hired_at": "0999-12-31"}, "hired_at"),
    "bad-updated-text": ({"updated_at": "yesterday"}, "updated_at"),
    "bad-updated-number": ({"updated_at": 1_700_000_000}, "updated_at"),
    "bad-city-array": ({"address": {"city": ["Porto"]}}, "address.city"),
    "bad-email-map": ({"email": {"work": "a@b.c"}}, "email"),
}

# Valid documents at the edges of the rules: (changes, the columns expected after coercion).
VALID: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "ok-plain": ({}, {"name": "Employee 0", "salary": 50_000, "city": "Lisbon", "remote": True}),
    "ok-salary-text": ({"salary": "52000"}, {"salary": 52_000}),
    "ok-salary-float": ({"salary": 52000.0}, {"salary": 52_000}),
    "ok-salary-int64": ({"salary": 2**63 - 1}, {"salary": 2**63 - 1}),
    "ok-phone-number": ({"phone": 5551234}, {"phone": "5551234"}),
    "ok-status-boolean": ({"status": True}, {"status": "true"}),
    "ok-name-200-emoji": ({"name": "😀" * 200}, {"name": "😀" * 200}),
    "ok-name-200-accents": ({"name": "é" * 200}, {"name": "é" * 200}),
    "ok-missing-optional": (
        {"email": firestore.DELETE_FIELD, "rating": firestore.DELETE_FIELD, "address": firestore.DELETE_FIELD},
        {"email": None, "rating": None, "city": None},
    ),
    "ok-null-optional": (
        {"email": None, "salary": None, "skills": None},
        {"email": None, "salary": None, "skills": None},
    ),
    "ok-rating-integer": ({"rating": 4}, {"rating": 4.0}),
    "ok-hired-timestamp": (
        {"hired_at": datetime(2021, 5, 6, 23, 30, tzinfo=timezone(timedelta(hours=-2)))},
        {"hired_at": date(2021, 5, 7)},
    ),
    "ok-updated-iso-offset": (
        {"updated_at": "2024-03-01T12:30:00.250+02:00"},
        {"updated_at": datetime(2024, 3, 1, 10, 30, 0, 250_000)},
    ),
    "ok-bio-long": ({"bio": "ü" * 100_000}, {"bio": "ü" * 100_000}),
    "ok-city-nested-extra": ({"address": {"city": "Porto", "geo": {"lat": 41.1}}}, {"city": "Porto"}),
    "ok-address-not-a-map": ({"address": "Porto"}, {"city": None}),
    "ok-name-nul-and-spaces": ({"name": "a\x00b  "}, {"name": "a\x00b  "}),
    "ok-city-trailing-space": ({"address": {"city": "Lisbon "}}, {"city": "Lisbon "}),
    "ok-rating-smallest": ({"rating": 5e-324}, {"rating": 5e-324}),
    "ok-rating-largest": ({"rating": 1.7976931348623157e308}, {"rating": 1.7976931348623157e308}),
    "ok-rating-tenth": ({"rating": 0.1}, {"rating": 0.1}),
    "ok-rating-minus-zero": ({"rating": -0.0}, {"rating": 0.0}),
    "ok-updated-microseconds": (
        {"updated_at": datetime(2024, 3, 1, 10, 30, 0, 123_456, tzinfo=UTC)},
        {"updated_at": datetime(2024, 3, 1, 10, 30, 0, 123_456)},
    ),
    "ok-hired-last-day": ({"hired_at": "9999-12-31"}, {"hired_at": date(9999, 12, 31)}),
    "ok-hired-first-year": ({"hired_at": "1000-01-01"}, {"hired_at": date(1000, 1, 1)}),
}


def _apply(data: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(data)
    for key, value in changes.items():
        if value is firestore.DELETE_FIELD:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def test_malformed_documents_are_rejected_beside_valid_ones(make_config, target_url, firestore_client):
    docs = {doc_id: _apply(employee(0), changes) for doc_id, (changes, _) in MALFORMED.items()}
    docs |= {doc_id: _apply(employee(0), changes) for doc_id, (changes, _) in VALID.items()}
    when = datetime(2022, 6, 1, 8, 0, 0, 123_000, tzinfo=UTC)
    docs["ok-skills-rich"] = employee(
        0,
        skills={
            "where": GeoPoint(38.7, -9.14),
            "team": firestore_client.document(REF_PATH),
            "badge": b"\x00\xff",
            "since": when,
            "tags": ["a", 1, 2.5, True, None],
        },
    )
    write_docs(firestore_client, docs)
    malformed = {doc_id: field for doc_id, (_, field) in MALFORMED.items()}
    valid = dict(VALID)
    if target_url.startswith("postgresql"):  # its text cannot hold U+0000: a reject, not a failed batch
        del valid["ok-name-nul-and-spaces"]
        malformed["ok-name-nul-and-spaces"] = "name"

    engine = SyncEngine(make_config(target_url))
    counts = ok(engine.run(force=True))
    valid_ids = set(valid) | {"ok-skills-rich"}
    assert (counts.fetched, counts.inserted, counts.rejected) == (len(docs), len(valid_ids), len(malformed))

    stored = rows(engine)
    assert set(stored) == valid_ids, "exactly the valid documents land"
    for doc_id, (_, expected) in valid.items():
        for column, value in expected.items():
            got = stored[doc_id][column]
            assert got == value and type(got) is type(value), (doc_id, column, got)
    assert json.loads(stored["ok-skills-rich"]["skills"]) == {
        "badge": "AP8=",
        "since": "2022-06-01T08:00:00.123000Z",
        "tags": ["a", 1, 2.5, True, None],
        "team": REF_PATH,
        "where": {"latitude": 38.7, "longitude": -9.14},
    }
    assert stored["ok-plain"]["hired_at"] == date(2020, 1, 15)
    assert stored["ok-plain"]["skills"] == '["python","sql"]'

    found = rejects(engine)
    assert set(found) == set(malformed)
    for doc_id, field in malformed.items():
        assert found[doc_id]["field"] == field, doc_id
        assert found[doc_id]["reason"].startswith(f"{field}: "), found[doc_id]["reason"]
    assert "required but missing" in found["bad-name-missing"]["reason"]
    assert "required but null" in found["bad-name-null"]["reason"]
    assert "max_length 200 (201 characters)" in found["bad-name-too-long"]["reason"]
    assert "NaN" in found["bad-rating-nan"]["reason"]
    assert "64-bit" in found["bad-salary-out-of-range-text"]["reason"]

    # A second look records nothing new and keeps the rejects; fixing one clears it,
    # and a rejected document that is deleted takes its reject with it.
    docs_ref(firestore_client, "bad-salary-text").update({"salary": 61_000})
    docs_ref(firestore_client, "bad-remote-text").delete()
    counts = ok(engine.run(force=True))
    # Every edge value came back from the database exactly as written: nothing to update.
    assert (counts.inserted, counts.updated, counts.rejected, counts.deleted) == (1, 0, len(malformed) - 2, 0)
    found = rejects(engine)
    assert set(found) == set(malformed) - {"bad-salary-text", "bad-remote-text"}
    assert rows(engine)["bad-salary-text"]["salary"] == 61_000
    engine.close()


def test_a_document_turning_invalid_keeps_its_good_row_until_it_is_valid_again(
    make_config, target_url, firestore_client
):
    write_docs(firestore_client, {f"e{i}": settled(i) for i in range(5)})
    engine = SyncEngine(make_config(target_url))
    ok(engine.run(force=True))
    before = rows(engine)["e1"]

    docs_ref(firestore_client, "e1").update(
        {"salary": "a lot", "name": "Renamed", "updated_at": firestore.SERVER_TIMESTAMP}
    )
    counts = ok(engine.run())  # an incremental run sees the change
    assert (counts.fetched, counts.rejected, counts.updated) == (1, 1, 0)
    assert counts.naive_reads == 5, "a full read costs the five documents: e1 has a row and a reject, read once"
    assert rows(engine)["e1"] == before, "the previous good row stays exactly as it was"
    reject = rejects(engine)["e1"]
    assert reject["field"] == "salary" and reject["reason"].startswith("salary: expected an integer")
    assert ok(engine.run(force=True)).rejected == 1  # and a full read agrees
    assert rows(engine)["e1"] == before

    docs_ref(firestore_client, "e1").update({"salary": 70_000, "updated_at": firestore.SERVER_TIMESTAMP})
    counts = ok(engine.run())
    assert (counts.fetched, counts.rejected, counts.updated) == (1, 0, 1)
    after = rows(engine)["e1"]
    assert (after["salary"], after["name"]) == (70_000, "Renamed")
    assert rejects(engine) == {}
    engine.close()


# -- field-level updates, deletes, restores ------------------------------------------


def test_an_update_writes_only_the_changed_columns_and_audits_each(make_config, target_url, firestore_client):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(10)})
    engine = SyncEngine(make_config(target_url))
    ok(engine.run(force=True))
    before = rows(engine)
    audit_before = len(audit(engine))

    docs_ref(firestore_client, "e3").update(
        {"salary": 99_000, "address.city": "Porto", "updated_at": firestore.SERVER_TIMESTAMP}
    )
    with mirror_writes(engine) as writes:
        counts = ok(engine.run(force=True))
    assert (counts.updated, counts.unchanged, counts.inserted, counts.deleted) == (1, 9, 0, 0)

    assert len(writes) == 1, writes
    inserted, updated = upsert_columns(writes[0])
    changed = {"salary", "city", "updated_at"}
    assert updated == changed | BOOKKEEPING
    assert inserted == changed | BOOKKEEPING | {"firestore_id"}

    after = rows(engine)
    assert (after["e3"]["salary"], after["e3"]["city"]) == (99_000, "Porto")
    for column in ("name", "email", "phone", "department", "remote", "hired_at", "skills"):
        assert after["e3"][column] == before["e3"][column]
    assert after["e3"]["synced_at"] > before["e3"]["synced_at"]
    assert after["e3"]["firestore_update_time"] > before["e3"]["firestore_update_time"]
    for doc_id in set(before) - {"e3"}:
        assert after[doc_id] == before[doc_id], doc_id

    new = audit(engine)[audit_before:]
    assert {(a["document_id"], a["operation"]) for a in new} == {("e3", "update")}
    by_field = {a["field"]: (a["old_value"], a["new_value"]) for a in new}
    assert set(by_field) == changed
    assert by_field["salary"] == ("50003", "99000")
    assert by_field["city"] == ("Lisbon", "Porto")
    old_ts, new_ts = by_field["updated_at"]
    assert datetime.fromisoformat(old_ts) == before["e3"]["updated_at"]
    assert datetime.fromisoformat(new_ts) == after["e3"]["updated_at"]
    assert all(a["run_id"] == counts_run_id(engine) for a in new)
    engine.close()


def counts_run_id(engine: SyncEngine) -> int:
    runs = engine.db.tables.runs
    with engine.db.connect() as conn:
        return conn.execute(select(func.max(runs.c.id))).scalar_one()


def test_delete_soft_deletes_and_recreating_restores(make_config, target_url, firestore_client):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(6)})
    engine = SyncEngine(make_config(target_url))
    ok(engine.run(force=True))

    docs_ref(firestore_client, "e2").delete()
    docs_ref(firestore_client, "e4").delete()
    counts = ok(engine.run(force=True))
    assert (counts.deleted, counts.unchanged) == (2, 4)
    stored = rows(engine)
    assert len(stored) == 6, "soft: the rows stay"
    assert stored["e2"]["deleted_at"] is not None and stored["e4"]["deleted_at"] is not None
    assert all(stored[i]["deleted_at"] is None for i in ("e0", "e1", "e3", "e5"))
    assert stored["e2"]["name"] == "Employee 2"
    deletes = [a for a in audit(engine) if a["operation"] == "delete"]
    assert sorted(a["document_id"] for a in deletes) == ["e2", "e4"]

    # A second full read does not delete them again.
    counts = ok(engine.run(force=True))
    assert counts.deleted == 0
    assert len([a for a in audit(engine) if a["operation"] == "delete"]) == 2

    write_docs(firestore_client, {"e2": employee(2, position="Manager")})
    counts = ok(engine.run(force=True))
    assert (counts.updated, counts.restored, counts.inserted, counts.deleted) == (1, 1, 0, 0)
    stored = rows(engine)
    assert stored["e2"]["deleted_at"] is None and stored["e2"]["position"] == "Manager"
    assert stored["e4"]["deleted_at"] is not None
    e2_audit = [(a["operation"], a["field"]) for a in audit(engine) if a["document_id"] == "e2"]
    assert ("restore", None) in e2_audit and ("update", "position") in e2_audit
    engine.close()


@pytest.mark.parametrize("mode", ["hard", "keep"])
def test_delete_modes_hard_and_keep(make_config, target_url, firestore_client, mode):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(4)})
    engine = SyncEngine(make_config(target_url, target={"delete_mode": mode}))
    ok(engine.run(force=True))
    docs_ref(firestore_client, "e1").delete()
    counts = ok(engine.run(force=True))
    stored = rows(engine)
    if mode == "hard":
        assert counts.deleted == 1
        assert set(stored) == {"e0", "e2", "e3"}
        assert [a["document_id"] for a in audit(engine) if a["operation"] == "delete"] == ["e1"]
        write_docs(firestore_client, {"e1": employee(1)})
        assert ok(engine.run(force=True)).inserted == 1
        assert rows(engine)["e1"]["deleted_at"] is None
    else:
        assert counts.deleted == 0
        assert set(stored) == {"e0", "e1", "e2", "e3"} and stored["e1"]["deleted_at"] is None
        assert not [a for a in audit(engine) if a["operation"] == "delete"]
    engine.close()


def test_a_second_force_run_writes_nothing(make_config, target_url, firestore_client):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(120)})
    engine = SyncEngine(make_config(target_url))
    with mirror_writes(engine) as writes:
        first = ok(engine.run(force=True))
    assert first.inserted == 120
    # Multi-row statements, one per batch of 100: never row by row.
    assert [w.count("), (") + 1 for w in writes] == [100, 20]
    before, audit_before = rows(engine), audit(engine)
    assert len([a for a in audit_before if a["operation"] == "insert"]) == 120

    with mirror_writes(engine) as writes:
        again = ok(engine.run(force=True))
    assert (again.fetched, again.unchanged, again.written, again.rejected) == (120, 120, 0, 0)
    assert writes == []
    assert rows(engine) == before  # synced_at included: not even touched
    assert audit(engine) == audit_before
    engine.close()


def test_an_idle_normal_run_costs_at_most_two_reads_and_writes_nothing(make_config, target_url, firestore_client):
    write_docs(firestore_client, {f"e{i}": settled(i) for i in range(50)})
    engine = SyncEngine(make_config(target_url))
    ok(engine.run(force=True))
    before, audit_before = rows(engine), audit(engine)

    with mirror_writes(engine) as writes:
        idle = engine.run()
    counts = ok(idle)
    assert idle.kind == "normal" and not idle.forced
    assert counts.firestore_reads <= 2
    assert (counts.fetched, counts.written) == (0, 0)
    assert writes == [] and rows(engine) == before and audit(engine) == audit_before
    assert counts.naive_reads == 50  # what a full read would have cost, for the operator

    # The same incremental run sees a change, and pays for it alone.
    docs_ref(firestore_client, "e7").update({"phone": "+351 1", "updated_at": firestore.SERVER_TIMESTAMP})
    counts = ok(engine.run())
    assert (counts.fetched, counts.updated, counts.firestore_reads) == (1, 1, 1)
    assert rows(engine)["e7"]["phone"] == "+351 1"
    # Idle again. The change is recent enough to fall inside the resume margin, so
    # it may be read once more: still at most two reads, and nothing written.
    counts = ok(engine.run())
    assert counts.written == 0 and counts.fetched <= 1 and counts.firestore_reads <= 2
    engine.close()


def test_without_updated_field_a_normal_run_reads_everything(make_config, target_url, firestore_client):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(20)})
    engine = SyncEngine(make_config(target_url, source={"updated_field": ""}))
    ok(engine.run(force=True))
    docs_ref(firestore_client, "e1").update({"phone": "changed"})
    counts = ok(engine.run())
    assert (counts.fetched, counts.updated, counts.unchanged, counts.firestore_reads) == (20, 1, 19, 20)
    engine.close()


def test_dry_run_lists_the_changes_and_writes_nothing(make_config, target_url, firestore_client, tmp_path):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(5)})
    config = make_config(target_url)
    engine = SyncEngine(config)
    ok(engine.run(force=True))
    docs_ref(firestore_client, "e1").update({"salary": 1, "updated_at": firestore.SERVER_TIMESTAMP})
    docs_ref(firestore_client, "e2").delete()
    write_docs(firestore_client, {"new": employee(9), "broken": employee(8, remote="yes")})
    before, audit_before, state_before = rows(engine), audit(engine), engine.state.get_all()

    proc = run_cli("--config", toml_for(tmp_path, config), "sync", "--force", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["status"], out["dry_run"], out["forced"]) == ("ok", True, True)
    assert (out["inserted"], out["updated"], out["deleted"], out["rejected"], out["unchanged"]) == (1, 1, 1, 1, 3)
    by_id = {c["document_id"]: c for c in out["changes"]}
    assert set(by_id) == {"e1", "e2", "new", "broken"}
    assert by_id["new"]["operation"] == "insert"
    assert by_id["e2"]["operation"] == "delete"
    assert by_id["e1"]["operation"] == "update"
    assert by_id["e1"]["fields"]["salary"] == {"old": "50001", "new": "1"}
    assert (by_id["broken"]["operation"], by_id["broken"]["field"]) == ("reject", "remote")

    assert rows(engine) == before
    assert audit(engine) == audit_before
    assert rejects(engine) == {}
    assert engine.state.get_all() == state_before, "no watermark or last-sync time moved"

    text = run_cli("--config", toml_for(tmp_path, config), "sync", "--force", "--dry-run")
    assert text.returncode == 0, text.stderr
    assert "would change:" in text.stdout and "new" in text.stdout and "salary" in text.stdout

    counts = ok(engine.run(force=True))  # and the real run does what the dry run said
    assert (counts.inserted, counts.updated, counts.deleted, counts.rejected) == (1, 1, 1, 1)
    engine.close()


def test_ordering_guard_keeps_a_row_newer_than_the_document(make_config, target_url, firestore_client):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(3)})
    engine = SyncEngine(make_config(target_url))
    ok(engine.run(force=True))
    future = datetime(2100, 1, 1, 0, 0, 0, 1)
    m = engine.db.tables.mirror
    with engine.db.begin() as conn:
        conn.execute(update(m).where(m.c.firestore_id == "e1").values(firestore_update_time=future, salary=123))

    docs_ref(firestore_client, "e1").update(
        {"salary": 77_000, "name": "Older", "updated_at": firestore.SERVER_TIMESTAMP}
    )
    counts = ok(engine.run(force=True))
    assert (counts.stale, counts.updated) == (1, 0)
    row = rows(engine)["e1"]
    assert (row["salary"], row["name"], row["firestore_update_time"]) == (123, "Employee 1", future)
    assert not [a for a in audit(engine) if a["operation"] == "update"]
    engine.close()


# -- document ids ------------------------------------------------------------------------

IDS = [
    "emp",
    "EMP",
    "Emp",
    "emp ",
    "emp  ",
    " emp",
    "emp\u00a0",
    "résumé",
    "resume",
    "re\u0301sume\u0301",  # the same word, decomposed
    "straße",
    "strasse",
    "İstanbul",
    "istanbul",
    "日本語",
    "😀",
    "😀😀",
    "a" * 1500,
    "a" * 1499 + "b",
    "A" * 1500,
    "é" * 750,  # 1,500 bytes in 750 characters
]


def test_ids_differing_in_case_space_or_unicode_stay_distinct_rows(make_config, target_url, firestore_client):
    assert all(len(i.encode()) <= 1500 for i in IDS) and len(set(IDS)) == len(IDS)
    write_docs(firestore_client, {doc_id: employee(n) for n, doc_id in enumerate(IDS)})
    # Small pages and batches: the cursors and the IN lists meet these ids too.
    engine = SyncEngine(make_config(target_url, source={"page_size": 4}, target={"batch_size": 3}))
    counts = ok(engine.run(force=True))
    assert (counts.fetched, counts.inserted) == (len(IDS), len(IDS))
    stored = rows(engine)
    assert set(stored) == set(IDS)
    for n, doc_id in enumerate(IDS):
        assert stored[doc_id]["name"] == f"Employee {n}", repr(doc_id[:10])

    counts = ok(engine.run(force=True))
    assert (counts.unchanged, counts.written) == (len(IDS), 0)

    docs_ref(firestore_client, "emp ").delete()
    docs_ref(firestore_client, "a" * 1500).delete()
    docs_ref(firestore_client, "EMP").update({"salary": 1})
    counts = ok(engine.run(force=True))
    assert (counts.deleted, counts.updated) == (2, 1)
    stored = rows(engine)
    deleted = {i for i, r in stored.items() if r["deleted_at"] is not None}
    assert deleted == {"emp ", "a" * 1500}
    assert stored["EMP"]["salary"] == 1 and stored["emp"]["salary"] == 50_000 and stored["Emp"]["salary"] == 50_002
    updates = [a["document_id"] for a in audit(engine) if a["operation"] == "update"]
    assert updates == ["EMP"]
    engine.close()


# -- the sync lock ---------------------------------------------------------------------------


def test_a_held_lock_makes_sync_exit_3(make_config, target_url, firestore_client, tmp_path):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(3)})
    config = make_config(target_url)
    engine = SyncEngine(config)
    engine.db.ensure_schema()
    path = toml_for(tmp_path, config)
    lock = make_lock(engine.db.engine, config.target.table)
    assert lock.acquire()
    try:
        proc = run_cli("--config", path, "sync", "--force")
        assert proc.returncode == 3, (proc.returncode, proc.stderr)
        assert proc.stderr.startswith("empsync: skipped: the sync lock is held")
        assert "Traceback" not in proc.stderr
        proc = run_cli("--config", path, "sync", "--force", "--json")
        assert proc.returncode == 3
        out = json.loads(proc.stdout)
        assert out["status"] == "skipped" and "lock" in out["reason"]
        assert rows(engine) == {}
    finally:
        lock.release()
    proc = run_cli("--config", path, "sync", "--force", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["inserted"] == 3
    engine.close()


# -- schema changes --------------------------------------------------------------------------


def test_a_new_mapped_field_adds_its_column(make_config, target_url, firestore_client):
    write_docs(firestore_client, {f"e{i}": employee(i, nickname=f"nick{i}") for i in range(4)})
    engine = SyncEngine(make_config(target_url))
    ok(engine.run(force=True))
    engine.close()

    wider = make_config(target_url, fields={**EMPLOYEE_FIELDS, "nickname": {"type": "string", "max_length": 30}})
    engine = SyncEngine(wider)
    counts = ok(engine.run(force=True))
    assert counts.updated == 4
    columns = {c["name"] for c in inspect(engine.db.engine).get_columns(wider.target.table)}
    assert "nickname" in columns
    stored = rows(engine)
    assert [stored[f"e{i}"]["nickname"] for i in range(4)] == [f"nick{i}" for i in range(4)]
    nick = [(a["old_value"], a["new_value"]) for a in audit(engine) if a["field"] == "nickname"]
    assert sorted(nick) == [(None, f"nick{i}") for i in range(4)]
    assert ok(engine.run(force=True)).written == 0
    engine.close()


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"salary": {"type": "string"}}, ["salary", "type string"]),
        ({"name": {"type": "integer", "required": True}}, ["name", "type integer"]),
        ({"phone": {"type": "string", "max_length": 80}}, ["phone", "80", "widen"]),
    ],
)
def test_an_incompatible_schema_change_stops_with_exit_2(
    make_config, target_url, firestore_client, tmp_path, change, words
):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(3)})
    engine = SyncEngine(make_config(target_url))
    ok(engine.run(force=True))
    before = rows(engine)

    changed = make_config(target_url, fields={**EMPLOYEE_FIELDS, **change})
    proc = run_cli("--config", toml_for(tmp_path, changed), "sync", "--force")
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2 and "Traceback" not in proc.stderr
    for word in words:
        assert word in proc.stderr, (word, proc.stderr)
    assert "ALTER TABLE" in proc.stderr or "back" in proc.stderr  # it says how out
    assert rows(engine) == before
    engine.close()


# -- the command line's JSON ----------------------------------------------------------------

SYNC_JSON_KEYS = {
    "status",
    "reason",
    "forced",
    "dry_run",
    "fetched",
    "inserted",
    "updated",
    "deleted",
    "unchanged",
    "rejected",
    "firestore_reads",
    "duration_ms",
    "run_id",
}
STATUS_JSON_KEYS = {
    "enabled",
    "mode",
    "interval",
    "force_interval",
    "paused",
    "last_sync_at",
    "last_force_sync_at",
    "next_sync_at",
    "last_status",
    "rows",
    "source",
    "target",
}


def test_sync_json_has_the_fixed_fields(make_config, target_url, firestore_client, tmp_path):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(7)} | {"bad": employee(7, salary="x")})
    path = toml_for(tmp_path, make_config(target_url))

    proc = run_cli("--config", path, "sync", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) >= SYNC_JSON_KEYS
    assert (out["status"], out["reason"], out["forced"], out["dry_run"]) == ("ok", None, False, False)
    assert (out["fetched"], out["inserted"], out["updated"], out["deleted"], out["unchanged"], out["rejected"]) == (
        8,
        7,
        0,
        0,
        0,
        1,
    )
    assert out["firestore_reads"] == 8
    assert isinstance(out["duration_ms"], int) and out["duration_ms"] >= 0
    assert isinstance(out["run_id"], int)

    # Not due yet: skipped is a success, with the reason.
    proc = run_cli("--config", path, "sync", "--json")
    assert proc.returncode == 0, proc.stderr
    skipped = json.loads(proc.stdout)
    assert set(skipped) >= SYNC_JSON_KEYS
    assert skipped["status"] == "skipped" and "not due" in skipped["reason"]
    assert skipped["firestore_reads"] == 0 and skipped["run_id"] is None

    proc = run_cli("--config", path, "sync", "--force", "--json")
    assert proc.returncode == 0, proc.stderr
    forced = json.loads(proc.stdout)
    assert (forced["status"], forced["forced"], forced["unchanged"], forced["run_id"]) == (
        "ok",
        True,
        7,
        out["run_id"] + 1,
    )

    proc = run_cli("--config", path, "sync", "--force")
    assert proc.returncode == 0 and proc.stdout.startswith("force sync ok: 8 fetched")


def test_status_json_has_the_fixed_fields(make_config, target_url, firestore_client, tmp_path):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(4)})
    config = make_config(target_url)
    path = toml_for(tmp_path, config)

    proc = run_cli("--config", path, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    fresh = json.loads(proc.stdout)
    assert set(fresh) >= STATUS_JSON_KEYS
    assert fresh["last_sync_at"] is None and fresh["rows"] == 0

    assert run_cli("--config", path, "sync", "--force").returncode == 0
    proc = run_cli("--config", path, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    assert set(s) >= STATUS_JSON_KEYS
    assert (s["enabled"], s["mode"], s["interval"], s["force_interval"], s["paused"]) == (
        True,
        "poll",
        300,
        3600,
        False,
    )
    assert (s["last_status"], s["rows"]) == ("ok", 4)
    for key in ("last_sync_at", "last_force_sync_at", "next_sync_at"):
        assert ISO_UTC.match(s[key]), (key, s[key])
    last = datetime.fromisoformat(s["last_sync_at"])
    assert datetime.fromisoformat(s["next_sync_at"]) - last == timedelta(seconds=300)
    assert abs(datetime.now(UTC) - last) < timedelta(hours=1)  # a UTC time, not local
    assert s["source"]["project"] == config.source.project
    assert (s["source"]["database"], s["source"]["collection"]) == ("(default)", "employees")
    assert s["documents"] == 4
    if not target_url.startswith("sqlite"):
        password = re.search(r"://[^:]+:([^@]+)@", target_url).group(1)
        assert password not in proc.stdout and ":***@" in s["target"]
    else:
        assert s["target"] == target_url

    text = run_cli("--config", path, "status")
    assert text.returncode == 0 and "last status" in text.stdout and "ok" in text.stdout


def test_stats_changes_and_rejects_json(make_config, target_url, firestore_client, tmp_path):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(3)} | {"bad": employee(3, remote="no")})
    path = toml_for(tmp_path, make_config(target_url))
    assert run_cli("--config", path, "sync", "--force").returncode == 0
    docs_ref(firestore_client, "e0").update({"phone": "999", "updated_at": firestore.SERVER_TIMESTAMP})
    assert run_cli("--config", path, "sync", "--force").returncode == 0

    stats = json.loads(run_cli("--config", path, "stats", "--json").stdout)
    assert (stats["runs"], stats["inserted"], stats["updated"], stats["rejected"], stats["rows"]) == (2, 3, 1, 2, 3)
    assert stats["runs_by_status"] == {"ok": 2}
    assert stats["firestore_reads"] == 8 and stats["rejects_open"] == 1

    proc = run_cli("--config", path, "changes", "--limit", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    changes = json.loads(proc.stdout)
    assert len(changes) == 2
    assert {c["field"] for c in changes} == {"phone", "updated_at"}
    phone = next(c for c in changes if c["field"] == "phone")
    assert (phone["document_id"], phone["operation"], phone["old_value"], phone["new_value"]) == (
        "e0",
        "update",
        "+1-555-0000",
        "999",
    )
    assert phone["name"] == "Employee 0" and ISO_UTC.match(phone["changed_at"])
    everything = json.loads(run_cli("--config", path, "changes", "--limit", "100", "--json").stdout)
    assert [c["operation"] for c in everything].count("insert") == 3

    proc = run_cli("--config", path, "rejects", "--json")
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert [(r["document_id"], r["field"]) for r in found] == [("bad", "remote")]
    assert found[0]["reason"] == "remote: expected a boolean, got string 'no'"
    assert ISO_UTC.match(found[0]["rejected_at"])

    text = run_cli("--config", path, "rejects")
    assert text.returncode == 0 and "bad" in text.stdout and "remote:" in text.stdout
    bad_limit = run_cli("--config", path, "changes", "--limit", "0")
    assert bad_limit.returncode == 2 and "--limit" in bad_limit.stderr


def test_interval_persists_and_out_of_range_exits_2(make_config, target_url, tmp_path):
    path = toml_for(tmp_path, make_config(target_url, sync={"interval": 120}))

    proc = run_cli("--config", path, "interval", "45")
    assert proc.returncode == 0, proc.stderr
    engine = SyncEngine(make_config(target_url, sync={"interval": 120}))
    setting = engine.state.interval()
    assert (setting.seconds, setting.source) == (45, "database")

    for bad in ("9", "86401", "0", "-30", "abc", "1.5", "٣٠", "3_0", "9" * 5000):
        proc = run_cli("--config", path, "interval", bad)
        assert proc.returncode == 2, (bad, proc.stderr)
        assert "interval" in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) <= 2
    assert engine.state.interval().seconds == 45, "a refused value changes nothing"

    for edge in ("10", "86400"):
        assert run_cli("--config", path, "interval", edge).returncode == 0
        assert engine.state.interval().seconds == int(edge)

    proc = run_cli("--config", path, "interval", "--reset")
    assert proc.returncode == 0, proc.stderr
    assert (engine.state.interval().seconds, engine.state.interval().source) == (120, "file")
    assert run_cli("--config", path, "interval").returncode == 2
    engine.close()


def test_an_interval_from_the_database_drives_the_due_check(make_config, target_url, firestore_client):
    write_docs(firestore_client, {"e0": employee(0)})
    config = make_config(target_url)
    engine = SyncEngine(config)
    ok(engine.run(force=True))
    assert engine.run(when_due=True).status == "skipped"
    engine.state.set_interval(10)
    last = engine.state.get(StateKey.LAST_SYNC_AT)
    backdated = (datetime.fromisoformat(last) - timedelta(seconds=11)).isoformat()
    engine.state.set({StateKey.LAST_SYNC_AT: backdated})
    assert engine.run(when_due=True).status == "ok"
    engine.close()


# -- field paths, column names and collections that need quoting ---------------------------

ODD_FIELDS = {
    "first-name": {"type": "string", "required": True, "column": "first_name"},
    "home address.zip code": {"type": "string", "column": "zip"},
    "1st": {"type": "string", "column": "first"},
    "meta.updated": {"type": "datetime"},
    # Reserved words of MySQL, MariaDB or SQLite as column names.
    "order": {"type": "integer"},
    "group": {"type": "string"},
    "key": {"type": "string"},
    "offset": {"type": "integer"},
    "rank": {"type": "float"},
    "interval": {"type": "boolean"},
    "select": {"type": "json"},
    "row": {"type": "date"},
}


def test_quoted_paths_reserved_column_names_and_a_subcollection(make_config, target_url, firestore_client):
    collection = "companies/acme/staff"
    docs = {
        f"s{i}": {
            "first-name": f"Ann {i}",
            "home address": {"zip code": f"{1000 + i}"},
            "1st": "yes",
            "meta": {"updated": firestore.SERVER_TIMESTAMP},
            "order": i,
            "group": "g",
            "key": "k",
            "offset": -i,
            "rank": i / 2,
            "interval": i % 2 == 1,
            "select": {"a": [i]},
            "row": "2024-02-29",
            "secret": "never-leaves-firestore",
        }
        for i in range(6)
    }
    write_docs(firestore_client, docs, collection=collection)
    config = make_config(
        target_url,
        fields=ODD_FIELDS,
        source={"collection": collection, "updated_field": "meta.updated", "page_size": 4},
        target={"table": "order"},  # a reserved word as the table name too
    )
    engine = SyncEngine(config)
    counts = ok(engine.run(force=True))
    assert (counts.inserted, counts.rejected) == (6, 0)
    stored = rows(engine)
    s3 = stored["s3"]
    assert (s3["first_name"], s3["zip"], s3["first"], s3["order"], s3["offset"]) == ("Ann 3", "1003", "yes", 3, -3)
    assert (s3["rank"], s3["interval"], s3["select"], s3["row"]) == (1.5, True, '{"a":[3]}', date(2024, 2, 29))
    assert "secret" not in s3

    # The field mask: only mapped fields ever leave Firestore.
    page = next(iter(engine.source.all_pages()))
    assert all(set(d.data) <= {"first-name", "home address", "1st", "meta", *ODD_FIELDS} for d in page)
    assert all("secret" not in d.data for d in page)

    firestore_client.collection(collection).document("s2").update(
        {"order": 20, "meta.updated": firestore.SERVER_TIMESTAMP}
    )
    firestore_client.collection(collection).document("s4").delete()
    assert ok(engine.run()).updated == 1  # incremental on a nested updated_field
    counts = ok(engine.run(force=True))
    assert (counts.deleted, counts.written) == (1, 1)
    stored = rows(engine)
    assert stored["s2"]["order"] == 20 and stored["s4"]["deleted_at"] is not None
    engine.close()


def test_the_read_meter_counts_documents_and_empty_queries(make_config, target_url, firestore_client):
    engine = SyncEngine(make_config(target_url, source={"page_size": 50}))
    counts = ok(engine.run(force=True))
    assert (counts.fetched, counts.firestore_reads) == (0, 1), "an empty query is billed as one read"
    write_docs(firestore_client, {f"e{i:03d}": settled(i) for i in range(100)})
    # Two full pages: a cursor reader pays one more read for the empty query that
    # proves the end, a single stream does not. Either way, never a read more.
    assert ok(engine.run(force=True)).firestore_reads in (100, 101)
    engine.close()
    engine = SyncEngine(make_config(target_url, source={"page_size": 40}))
    assert ok(engine.run(force=True)).firestore_reads == 100  # 40 + 40 + 20: the short page ends it
    engine.close()


def test_disabled_or_paused_skips_normal_runs_with_exit_0(make_config, target_url, firestore_client, tmp_path):
    write_docs(firestore_client, {"e0": employee(0)})
    path = toml_for(tmp_path, make_config(target_url))

    proc = run_cli("--config", path, "sync", "--json", env={"FIRESTORE_REALTIME_ENABLED": "false"})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"] == "skipped" and "disabled" in out["reason"] and out["fetched"] == 0

    assert run_cli("--config", path, "pause").returncode == 0
    proc = run_cli("--config", path, "sync", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["status"] == "skipped"
    status = json.loads(run_cli("--config", path, "status", "--json").stdout)
    assert (status["paused"], status["next_sync_at"], status["rows"]) == (True, None, 0)

    assert run_cli("--config", path, "resume").returncode == 0
    proc = run_cli("--config", path, "sync", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["inserted"] == 1
