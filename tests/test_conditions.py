"""Conditional sync's matching, held to the Firestore emulator's own answers, and its config checks."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import config as cfg
from core.conditions import OPS, Condition, matches
from core.errors import ConfigError

from .conftest import write_docs

T1 = datetime(2024, 1, 1, tzinfo=UTC)
T2 = datetime(2025, 6, 1, 12, 30, tzinfo=UTC)
# Values of every kind Firestore orders, edges included.
VALUES = [
    None, True, False, 0, 1, 1.0, -0.0, -2, 1.5, 2.0, math.inf, -math.inf, math.nan, 2**62,
    "", "a", "B", "é", "a b", "ab", "\U0001f600", T1, T2, b"x", b"", [1, "a"], ["a"], [], {"k": 1},
]  # fmt: skip
SCALARS = [v for v in VALUES if not isinstance(v, (list, dict)) and not (isinstance(v, float) and math.isnan(v))]


@pytest.mark.integration
def test_matching_agrees_with_the_emulator_for_every_operator_and_kind(firestore_client):
    """One document per value (and one without the field); each condition's query against ``matches``."""
    docs = {f"d{i}": {"v": value} for i, value in enumerate(VALUES)}
    docs["missing"] = {"other": 1}
    write_docs(firestore_client, docs)
    collection = firestore_client.collection("employees")
    disagreements = []
    for op in OPS:
        wanted = [[1, "a"], ["a", True], [T1, 2.0]] if op in ("in", "not-in") else SCALARS
        for value in wanted:
            if value is None and op not in ("==", "!="):
                continue  # Firestore refuses it (and TOML has no null: no configuration can say it)
            condition = Condition("v", op, tuple(value) if isinstance(value, list) else value)
            server = {s.id for s in collection.where(filter=condition.field_filter()).stream()}
            local = {doc_id for doc_id, data in docs.items() if matches([condition], data)}
            if server != local:
                disagreements.append(f"v {op} {value!r}: emulator {sorted(server)}, ours {sorted(local)}")
    assert not disagreements, "\n".join(disagreements)


def where(*tables: dict) -> cfg.Config:
    return cfg.from_dict({"source": {"where": list(tables)}, "fields": {"name": {}}})


def test_conditions_load_with_their_values():
    config = where(
        {"field": "status", "op": "in", "value": ["active", "on_leave"]},
        {"field": "address.city", "op": "==", "value": "Lisbon"},
        {"field": "hired_at", "op": ">=", "value": datetime(2020, 1, 1)},
    )
    status, city, hired = config.source.where
    assert status == Condition("status", "in", ("active", "on_leave"))
    assert city.parts == ("address", "city")
    assert hired.value.tzinfo is UTC  # a TOML local date-time is read as UTC


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ({"field": "status", "op": "like", "value": "a"}, "source.where[1].op", "unknown operator"),
        ({"field": "status", "op": "==", "value": "a", "x": 1}, "source.where[1].x", "unknown key"),
        ({"field": "status", "op": "=="}, "source.where[1].value", "missing"),
        ({"field": "a..b", "op": "==", "value": 1}, "source.where[1].field", "empty segment"),
        ({"field": "__name__", "op": "==", "value": 1}, "source.where[1].field", "reserves"),
        ({"field": "status", "op": "in", "value": []}, "source.where[1].value", "non-empty array"),
        ({"field": "status", "op": "in", "value": "active"}, "source.where[1].value", "non-empty array"),
        ({"field": "status", "op": "in", "value": list(range(31))}, "source.where[1].value", "at most 30"),
        ({"field": "status", "op": "==", "value": ["a"]}, "source.where[1].value", "not an array"),
        ({"field": "status", "op": "==", "value": {"a": 1}}, "source.where[1].value", "not a table"),
        ({"field": "hired", "op": ">", "value": datetime(2020, 1, 1).date()}, "source.where[1].value", "no date type"),
        ({"field": "x", "op": "==", "value": math.nan}, "source.where[1].value", "NaN"),
    ],
)
def test_a_bad_condition_exits_2_naming_its_key(table, key, words):
    with pytest.raises(ConfigError) as caught:
        where(table)
    assert caught.value.exit_code == 2
    assert key in caught.value.message and words in caught.value.message


def test_conditions_firestore_refuses_together_are_refused_at_load():
    with pytest.raises(ConfigError, match=r"source.where\[2\].op.*not-in"):
        where({"field": "a", "op": "!=", "value": 1}, {"field": "b", "op": "not-in", "value": [1]})
    with pytest.raises(ConfigError, match="one array-contains"):
        where({"field": "a", "op": "array-contains", "value": 1}, {"field": "b", "op": "array-contains", "value": 2})


def test_where_must_be_an_array_of_tables():
    with pytest.raises(ConfigError, match="source.where: must be an array of tables"):
        cfg.from_dict({"source": {"where": {"field": "a"}}, "fields": {"name": {}}})


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(OPS), st.sampled_from(SCALARS), st.sampled_from(VALUES + ["absent"]))
def test_not_meeting_a_condition_never_raises(op, value, stored):
    condition = Condition("v", op, (value,) if op in ("in", "not-in") else value)
    data = {} if stored == "absent" else {"v": stored}
    assert matches([condition], data) in (True, False)


def test_a_missing_composite_index_is_one_line_with_the_link_to_create_it():
    from google.api_core import exceptions as gexc

    from core.source import describe_source_error

    link = "https://console.firebase.google.com/v1/r/project/hr/firestore/indexes?create_composite=ClNwcm9qZWN0cy9ocg"
    exc = gexc.FailedPrecondition(f"The query requires an index. You can create it here: {link}")
    error = describe_source_error(exc, "Firestore (project hr, collection employees)")
    assert error is not None and error.exit_code == 1
    assert "needs a composite index" in error.message
    assert link in error.hint and "[[source.where]]" in error.hint
    other = describe_source_error(gexc.FailedPrecondition("The transaction is stale"), "Firestore")
    assert other is not None and "composite index" not in other.message


# -- against the real servers -----------------------------------------------------------------

ACTIVE = [{"field": "status", "op": "in", "value": ["active", "on_leave"]}]


def live_ids(config) -> set[str]:
    from .service_support import mirror_rows

    return {i for i, r in mirror_rows(config).items() if r["deleted_at"] is None}


@pytest.mark.integration
def test_a_force_run_reads_only_matching_documents(make_config, target_url, firestore_client):
    from core.engine import SyncEngine

    from .conftest import employee

    docs = {f"a{i}": employee(i) for i in range(4)} | {f"x{i}": employee(i, status="inactive") for i in range(6)}
    write_docs(firestore_client, docs)
    config = make_config(target_url, source={"where": ACTIVE})
    engine = SyncEngine(config)
    try:
        result = engine.run(force=True)
    finally:
        engine.close()
    assert result.status == "ok" and result.counts.inserted == 4
    assert result.counts.firestore_reads == 4  # the six outside the conditions were never billed
    assert live_ids(config) == {"a0", "a1", "a2", "a3"}


@pytest.mark.integration
def test_a_document_leaving_the_conditions_leaves_the_table_at_the_next_normal_run(
    make_config, target_url, firestore_client
):
    from google.cloud import firestore

    from core.engine import SyncEngine

    from .conftest import employee

    write_docs(firestore_client, {"stays": employee(1), "leaves": employee(2), "joins": employee(3, status="inactive")})
    config = make_config(target_url, source={"where": ACTIVE})
    engine = SyncEngine(config)
    try:
        assert engine.run(force=True).counts.inserted == 2
        ref = firestore_client.collection("employees").document
        ref("leaves").update({"status": "inactive", "updated_at": firestore.SERVER_TIMESTAMP})
        ref("joins").update({"status": "on_leave", "updated_at": firestore.SERVER_TIMESTAMP})
        result = engine.run()
        assert result.status == "ok" and result.incremental
        assert (result.counts.inserted, result.counts.deleted) == (1, 1)
    finally:
        engine.close()
    assert live_ids(config) == {"stays", "joins"}


@pytest.mark.integration
def test_changing_the_conditions_makes_the_next_normal_run_a_full_read(make_config, target_url, firestore_client):
    from core.engine import SyncEngine

    from .conftest import employee

    write_docs(firestore_client, {"a": employee(1), "b": employee(2, status="on_leave")})
    narrow = make_config(target_url, source={"where": [{"field": "status", "op": "==", "value": "active"}]})
    engine = SyncEngine(narrow)
    try:
        engine.run(force=True)
        assert engine.run().incremental
    finally:
        engine.close()
    wider = make_config(target_url, source={"where": ACTIVE})
    engine = SyncEngine(wider)
    try:
        result = engine.run()
    finally:
        engine.close()
    assert not result.incremental and result.counts.inserted == 1
    assert live_ids(wider) == {"a", "b"}


@pytest.mark.integration
def test_a_listener_removes_a_document_that_stops_meeting_the_conditions(make_config, target_url, firestore_client):
    from google.cloud import firestore

    from core.service import SyncService

    from .conftest import employee
    from .service_support import wait_for

    write_docs(firestore_client, {"stays": employee(1), "leaves": employee(2)})
    for scope in ("changes", "collection"):
        config = make_config(
            target_url,
            source={"where": ACTIVE},
            sync={"mode": "listen", "listen_scope": scope, "interval": 10, "force_interval": 7 * 86_400},
        )
        service = SyncService(config)
        service.start()
        try:
            wait_for(lambda s=service: s.snapshot().get("listen_state") == "listening", 60, "the listener")
            wait_for(lambda c=config: {"stays", "leaves"} <= live_ids(c), 30, "the rows")
            ref = firestore_client.collection("employees").document("leaves")
            ref.update({"status": "inactive", "updated_at": firestore.SERVER_TIMESTAMP})
            wait_for(lambda c=config: live_ids(c) == {"stays"}, 30, f"the row to leave ({scope} scope)")
            ref.update({"status": "active", "updated_at": firestore.SERVER_TIMESTAMP})
            wait_for(lambda c=config: live_ids(c) == {"stays", "leaves"}, 30, f"the row to come back ({scope})")
        finally:
            assert service.stop(15)
