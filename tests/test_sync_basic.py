"""The sync run end to end against the real emulator, on SQLite and MariaDB."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from core.engine import SyncEngine

from .conftest import employee, write_docs

pytestmark = pytest.mark.integration


def test_first_run_inserts_every_valid_document(make_config, target_url, firestore_client):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(250)})
    engine = SyncEngine(make_config(target_url))
    result = engine.run(force=True)
    assert result.status == "ok", result.reason
    assert (result.counts.fetched, result.counts.inserted, result.counts.rejected) == (250, 250, 0)
    with engine.db.connect() as conn:
        rows = conn.execute(select(engine.db.tables.mirror)).mappings().all()
    assert len(rows) == 250
    row = next(r for r in rows if r["firestore_id"] == "e7")
    assert row["name"] == "Employee 7" and row["salary"] == 50_007 and row["city"] == "Lisbon"
    assert row["remote"] is False and row["skills"] == '["python","sql"]'
    assert "password_hash" not in row
    again = engine.run(force=True)
    assert again.counts.written == 0 and again.counts.unchanged == 250
    engine.close()
