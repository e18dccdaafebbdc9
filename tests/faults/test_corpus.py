"""A corpus of malformed documents mixed into thousands of valid ones.

tests/test_sync.py checks one malformed document per rule beside a few valid
ones. Here more than 40 malformed documents — every mapped field, every way
its type can be broken, one rule broken per document — are scattered among
``corpus_valid`` valid ones (random ids, so they land in different batches
and pages) and synced by ``empsync sync --force``: every malformed one must
become a reject whose reason names its field, every valid one a row. Then a
listening ``empsync --no-ui`` takes a second wave through the live path:
valid documents turned malformed (their rows stay as they were), rejected
ones repaired (their rejects clear), and new malformed ones.
"""

from __future__ import annotations

import json
import math
import signal
from datetime import UTC, datetime
from typing import Any

import pytest
from google.cloud.firestore_v1 import GeoPoint

from core.engine import SyncEngine

from ..conftest import employee, run_cli, write_toml
from ..service_support import Headless, mirror_rows, wait_for
from .checks import audit_report, wait_converged
from .support import LISTEN, SIZES, cli_verify, seed_docs, seeded

pytestmark = pytest.mark.integration

DELETE = object()  # the field is left out of the document
LONG_AGO = datetime(999, 6, 1, tzinfo=UTC)

# (field path as the reject names it, the bad value). One rule broken per entry.
BROKEN: list[tuple[str, Any]] = [
    ("name", DELETE),
    ("name", None),
    ("name", "n" * 201),
    ("name", {"first": "Ana"}),
    ("name", ["Ana"]),
    ("name", b"\x00\x01"),
    ("name", GeoPoint(38.7, -9.1)),
    ("name", datetime(2021, 3, 14, tzinfo=UTC)),
    ("email", "e" * 255),
    ("email", {"work": "a@example.com"}),
    ("email", ["a@example.com"]),
    ("phone", "1" * 41),
    ("phone", {"mobile": "1"}),
    ("department", "d" * 101),
    ("department", ["Sales"]),
    ("position", "p" * 101),
    ("position", {"title": "Lead"}),
    ("status", "s" * 21),
    ("status", [True]),
    ("salary", True),
    ("salary", 1.5),
    ("salary", "about fifty thousand"),
    ("salary", "9223372036854775808"),
    ("salary", "-9223372036854775809"),
    ("salary", math.nan),
    ("salary", math.inf),
    ("salary", {"amount": 1}),
    ("salary", ["1"]),
    ("salary", datetime(2021, 3, 14, tzinfo=UTC)),
    ("rating", math.nan),
    ("rating", math.inf),
    ("rating", -math.inf),
    ("rating", False),
    ("rating", "3.5"),
    ("rating", {"score": 3}),
    ("remote", "true"),
    ("remote", 1),
    ("remote", 0.0),
    ("remote", ["yes"]),
    ("hired_at", "03/14/2021"),
    ("hired_at", "2021-02-30"),
    ("hired_at", "2021-1-5"),
    ("hired_at", 20210314),
    ("hired_at", "0999-01-01"),
    ("hired_at", LONG_AGO),
    ("hired_at", True),
    ("bio", {"text": "hi"}),
    ("bio", ["hi"]),
    ("address.city", "c" * 101),
    ("address.city", {"name": "Lisbon"}),
    ("address.city", ["Lisbon"]),
    ("updated_at", "yesterday"),
    ("updated_at", 12345),
    ("updated_at", "2021-13-01T00:00:00"),
    ("updated_at", True),
    ("updated_at", LONG_AGO),
]
# The live path watches documents by updated_at: its wave keeps that one valid.
LIVE_BROKEN = [b for b in BROKEN if b[0] != "updated_at"]


def broken(i: int, path: str, value: Any) -> dict[str, Any]:
    data = employee(i)
    if path == "address.city":
        data["address"] = {"street": "Rua 1"} if value is DELETE else {"street": "Rua 1", "city": value}
    elif value is DELETE:
        del data[path]
    else:
        data[path] = value
    return data


def rejects(path) -> dict[str, dict[str, Any]]:
    """``empsync rejects --json``, by document id."""
    done = run_cli("--config", str(path), "rejects", "--json")
    assert done.returncode == 0, done.stderr
    return {r["document_id"]: r for r in json.loads(done.stdout)}


def reject_ids(config) -> set[str]:
    engine = SyncEngine(config)
    try:
        with engine.db.connect() as conn:
            return engine.state.reject_ids(conn)
    finally:
        engine.close()


def assert_named(found: dict[str, dict[str, Any]], expected: dict[str, str]) -> None:
    """Exactly the expected documents are rejected, each with a reason that names its field."""
    assert set(found) == set(expected), (sorted(set(found) ^ set(expected)))[:10]
    for doc_id, path in expected.items():
        assert found[doc_id]["field"] == path, (doc_id, found[doc_id])
        assert found[doc_id]["reason"].startswith(f"{path}: "), (doc_id, found[doc_id]["reason"])


def test_malformed_documents_among_thousands_of_valid_ones(
    emulator, project, make_config, mysql_url, firestore_client, tmp_path, processes
):
    assert len(BROKEN) >= 40
    rng = seeded("corpus")
    ids = rng.sample(range(10**8), SIZES.corpus_valid + len(BROKEN) + 2 * len(LIVE_BROKEN))
    name = [f"doc-{n:08d}" for n in ids]  # random ids: the malformed ones spread over every batch
    valid = {name[i]: employee(i) for i in range(SIZES.corpus_valid)}
    bad = {name[SIZES.corpus_valid + j]: (path, value) for j, (path, value) in enumerate(BROKEN)}
    seed_docs(emulator.host, project, {**valid, **{d: broken(7, p, v) for d, (p, v) in bad.items()}})

    config = make_config(mysql_url, sync=LISTEN, target={"batch_size": 200}, source={"page_size": 500})
    path = write_toml(tmp_path / "sync.toml", config)
    done = run_cli("--config", str(path), "sync", "--force", "--json", timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["fetched"], result["inserted"], result["rejected"]) == (len(valid) + len(bad), len(valid), len(bad))
    assert_named(rejects(path), {d: p for d, (p, _) in bad.items()})
    rows = mirror_rows(config)
    assert set(rows) == set(valid), "every valid document synced, no malformed one"
    report = cli_verify(path)
    assert (report["differences"], report["rejected"], report["rows"]) == (0, len(bad), len(valid)), report

    # The live path: a second wave while a service listens.
    proc = Headless(path)
    processes.append(proc)
    proc.wait_line("Status: listening", timeout=90)
    collection = firestore_client.collection("employees")
    spoiled = dict(zip(rng.sample(sorted(valid), len(LIVE_BROKEN)), LIVE_BROKEN, strict=True))
    repaired = rng.sample(sorted(bad), len(bad) // 2)
    fresh = {name[-1 - j]: b for j, b in enumerate(LIVE_BROKEN)}
    before = {d: rows[d] for d in spoiled}
    batch = firestore_client.batch()
    for doc_id, (field, value) in spoiled.items():
        batch.set(collection.document(doc_id), broken(7, field, value))
    for doc_id in repaired:
        batch.set(collection.document(doc_id), employee(9))
    for doc_id, (field, value) in fresh.items():
        batch.set(collection.document(doc_id), broken(8, field, value))
    batch.commit()

    expected = {d: p for d, (p, _) in bad.items() if d not in repaired}
    expected |= {d: p for d, (p, _) in {**spoiled, **fresh}.items()}
    wait_for(lambda: reject_ids(config) == set(expected), 90, "the second wave's rejects", 0.5)
    assert_named(rejects(path), expected)
    wait_converged(config, 60)
    rows = mirror_rows(config)
    for doc_id in repaired:
        assert rows[doc_id]["name"] == "Employee 9", doc_id
    for doc_id, row in before.items():
        assert {k: v for k, v in rows[doc_id].items() if k != "synced_at"} == {
            k: v for k, v in row.items() if k != "synced_at"
        }, f"{doc_id}: a document turned malformed keeps its row as it was"
    assert not set(fresh) & set(rows)
    report = cli_verify(path)
    assert (report["differences"], report["rejected"]) == (0, len(expected)), report
    proc.signal(signal.SIGTERM)
    assert proc.wait(15) == 0, proc.text()[-3000:]
    audit = audit_report(mysql_url)
    assert audit.replays == [] and audit.operations == {"insert": len(valid) + len(repaired)}, audit.to_json()
