"""What differs between the target databases, each against its real server.

Statement size limits (large documents on MariaDB's max_allowed_packet),
PostgreSQL's errors in plain words, its driver missing, and the sync lock of
each server lost with its connection. The sync semantics themselves run on
every target in test_sync.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import bindparam, event, select, text

from core import config as cfg
from core.db import Database, make_engine, upsert
from core.dialects import MODULES, Limits, for_backend, make_lock
from core.dialects.base import _LIMITS_KEY
from core.dialects.postgresql import lock_key
from core.emulator import free_port
from core.engine import SyncEngine
from core.errors import TargetError

from .conftest import employee, run_cli, started, write_docs, write_toml
from .servers import PASSWORD, MariaDB
from .service_support import wait_for
from .test_faults_core import WRONG_PASSWORD, assert_clear_failure, assert_no_secret
from .test_sync import ok, rows

BIG = 950_000  # characters of a text field: 20 of them are above MariaDB's default 16 MB packet
KEY_OF_HR_EMPLOYEES = -5_666_023_484_773_039_975  # lock_key("hr", "employees") since the first release


def write_one_by_one(client, docs: dict[str, dict[str, Any]]) -> None:
    """Large documents one commit each: the emulator takes at most 10 MB a request."""
    for doc_id, data in docs.items():
        write_docs(client, {doc_id: data})


# -- statement sizes -----------------------------------------------------------------------


@pytest.mark.integration
def test_large_documents_are_split_across_statements_and_all_land(make_config, target_url, firestore_client):
    big = {f"big{i:02d}": employee(i, bio=chr(ord("a") + i) * BIG) for i in range(20)}
    small = {f"small{i:02d}": employee(100 + i) for i in range(30)}
    write_one_by_one(firestore_client, big)
    write_docs(firestore_client, small)
    engine = SyncEngine(make_config(target_url, target={"batch_size": 100}))
    if engine.db.dialect.name == "MySQL/MariaDB":
        with engine.db.connect() as conn:
            packet = conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar()
        assert packet < 20 * BIG, "the batch must exceed the server's packet for this test to mean anything"

    counts = ok(engine.run(force=True))
    assert (counts.inserted, counts.rejected) == (50, 0)
    stored = rows(engine)
    assert set(stored) == set(big) | set(small)
    assert all(stored[doc_id]["bio"] == data["bio"] for doc_id, data in big.items())

    # Updates carry the new values, and their audit rows the old and the new: larger still.
    write_one_by_one(firestore_client, {doc_id: {**data, "bio": data["bio"].upper()} for doc_id, data in big.items()})
    counts = ok(engine.run())
    assert (counts.updated, counts.rejected) == (20, 0)
    stored = rows(engine)
    assert all(stored[doc_id]["bio"] == data["bio"].upper() for doc_id, data in big.items())
    changes = engine.db.tables.changes
    with engine.db.connect() as conn:
        audited = conn.execute(select(changes.c.old_value, changes.c.new_value).where(changes.c.field == "bio")).all()
    assert len(audited) == 20 and all(len(old) == len(new) == BIG for old, new in audited)
    engine.close()


@pytest.fixture
def small_packet_mariadb(tmp_path):
    server = started(MariaDB(tmp_path / "small-packet", settings=("--max-allowed-packet=256K",)))
    yield server
    server.destroy()


@pytest.mark.integration
def test_a_row_too_large_for_the_server_is_a_reject_naming_the_field(
    make_config, small_packet_mariadb, firestore_client
):
    server = small_packet_mariadb
    url = server.url(server.create_database("packet"))
    docs = {f"e{i}": employee(i) for i in range(10)}
    docs["fits"] = employee(10, bio="f" * 150_000)
    docs["too-big"] = employee(11, bio="t" * 300_000)
    write_docs(firestore_client, docs)
    engine = SyncEngine(make_config(url, target={"batch_size": 100}))

    counts = ok(engine.run(force=True))
    assert (counts.inserted, counts.rejected) == (11, 1)
    assert set(rows(engine)) == set(docs) - {"too-big"}
    (reject,) = engine.state.rejects()
    assert (reject["document_id"], reject["field"]) == ("too-big", "bio")
    assert "too large to write" in reject["reason"] and "max_allowed_packet" in reject["reason"]

    # The row of an update fits, but its audit row (the old and the new text) does not:
    # a reject too, and the previous good row stays.
    write_docs(firestore_client, {"fits": employee(10, bio="g" * 150_000), "e0": employee(0, name="Renamed")})
    counts = ok(engine.run(force=True))
    assert (counts.updated, counts.rejected) == (1, 2)
    stored = rows(engine)
    assert stored["fits"]["bio"] == "f" * 150_000 and stored["e0"]["name"] == "Renamed"
    assert {r["document_id"]: r["field"] for r in engine.state.rejects()} == {"too-big": "bio", "fits": "bio"}

    # Smaller again: it lands and its reject clears.
    write_docs(firestore_client, {"too-big": employee(11, bio="s" * 1000)})
    counts = ok(engine.run(force=True))
    assert counts.inserted == 1 and "too-big" in rows(engine)
    assert {r["document_id"] for r in engine.state.rejects()} == {"fits"}
    engine.close()


def _inserts(engine) -> list[tuple[str, tuple]]:
    """Each INSERT the engine runs, with its parameters."""
    seen: list[tuple[str, tuple]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _record(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.startswith("INSERT INTO"):
            seen.append((statement, parameters))

    return seen


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=60),
    params=st.integers(1, 40),
    room=st.integers(13_000, 40_000),
)
def test_statements_stay_under_both_limits_and_keep_every_row(sizes, params, room):
    """Real SQLite with small limits put in place: every row lands, no statement carries more than allowed."""
    db = Database(cfg.from_dict({"target": {"url": "sqlite://"}, "fields": {"name": {}}}))
    db.ensure_schema()
    table, sqlite = db.tables.state, db.dialect
    seen = _inserts(db.engine)
    rows_ = [{"key": f"k{i}", "value": "é" * n, "updated_at": datetime(2024, 1, 1)} for i, n in enumerate(sizes)]
    with db.begin() as conn:
        conn.info[_LIMITS_KEY] = Limits(params=params, bytes=room)
        upsert(conn, table, rows_, ["value"])
    with db.connect() as conn:
        stored = dict(conn.execute(select(table.c.key, table.c.value)).all())
    db.dispose()
    assert stored == {r["key"]: r["value"] for r in rows_}
    assert sum(len(p) for _, p in seen) == 3 * len(rows_)
    for statement, parameters in seen:
        assert len(parameters) // 3 <= max(1, params // 3)
        assert len(statement) + sum(map(sqlite.param_bytes, parameters)) <= room


def test_a_row_no_statement_can_carry_fails_naming_the_table_before_anything_is_sent():
    db = Database(cfg.from_dict({"target": {"url": "sqlite://"}, "fields": {"name": {}}}))
    db.ensure_schema()
    seen = _inserts(db.engine)
    with pytest.raises(TargetError) as info, db.begin() as conn:
        conn.info[_LIMITS_KEY] = Limits(params=1000, bytes=5000)
        upsert(
            conn,
            db.tables.state,
            [
                {"key": "small", "value": "x", "updated_at": datetime(2024, 1, 1)},
                {"key": "big", "value": "x" * 2000, "updated_at": datetime(2024, 1, 1)},
            ],
            ["value"],
        )
    assert "empsync_state" in info.value.message and "value the most" in info.value.message
    assert seen == []
    db.dispose()


@pytest.mark.integration
def test_postgresql_takes_numbered_placeholders_in_plain_and_streamed_reads(make_config, postgresql_url):
    db = Database(make_config(postgresql_url))
    db.ensure_schema()
    state = db.tables.state
    rows_ = [{"key": f"k{i}", "value": str(i), "updated_at": datetime(2024, 1, 1)} for i in range(30)]
    with db.begin() as conn:
        upsert(conn, state, rows_, ["value"])
    query = select(state.c.value).where(state.c.key != bindparam("skip")).order_by(state.c.key)
    with db.connect() as conn:
        plain = conn.execute(query, {"skip": "k0"}).scalars().all()
        streamed = list(conn.execution_options(yield_per=7).execute(query, {"skip": "k0"}).scalars())
    assert plain == streamed and len(plain) == 29
    db.dispose()


# -- PostgreSQL's errors in plain words -----------------------------------------------------


@pytest.mark.integration
def test_postgresql_errors_are_plain_words_and_never_show_the_password(
    make_config, postgres, postgresql_url, project, tmp_path
):
    def failing(url: str, *needles: str, hint: str = "") -> None:
        path = str(write_toml(tmp_path / "sync.toml", make_config(url)))
        proc = run_cli("--config", path, "sync", "--force")
        line = assert_clear_failure(proc, *needles)
        assert ":***@127.0.0.1" in line or "://" not in line
        assert hint in proc.stderr
        assert_no_secret(proc, PASSWORD, WRONG_PASSWORD)

    failing(postgresql_url.replace(f":{PASSWORD}@", f":{WRONG_PASSWORD}@"), "database refused the login")
    failing(postgresql_url.rsplit("/", 1)[0] + "/no_such_db", "database does not exist", '"no_such_db"')
    failing(
        f"postgresql+psycopg://empsync:{PASSWORD}@127.0.0.1:{free_port()}/x",
        "database unreachable",
        "Connection refused",
    )
    # A user that may connect but not create tables: the grant it lacks, in words.
    postgres.query(f"CREATE ROLE nogrants_{project[2:]} LOGIN PASSWORD '{PASSWORD}'")
    database = postgres.create_database(f"owned_{project[2:]}", owner="postgres")
    url = postgres.url(database, user=f"nogrants_{project[2:]}")
    failing(url, "database permission denied", "permission denied for schema public", hint="CREATE ON SCHEMA")


def test_a_postgresql_url_without_its_driver_exits_2_with_the_install_hint(tmp_path):
    # A stand-in package that fails to import as a missing psycopg does.
    (tmp_path / "psycopg").mkdir()
    (tmp_path / "psycopg" / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'psycopg'\")\n")
    (tmp_path / "sync.toml").write_text(
        '[target]\nurl = "postgresql+psycopg://u:Hunter2pw@127.0.0.1/hr"\n[fields.name]\ntype = "string"\n'
    )
    proc = run_cli("--config", str(tmp_path / "sync.toml"), "sync", env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "target.url" in proc.stderr and "psycopg" in proc.stderr
    assert "pip install 'empsync[postgresql]'" in proc.stderr
    assert "Hunter2pw" not in proc.stderr and "Traceback" not in proc.stderr


# -- the sync lock of each server ---------------------------------------------------------------


def test_the_postgresql_lock_key_is_stable():
    # Changing how the key is made would let an old and a new empsync sync one table at once.
    assert lock_key("hr", "employees") == KEY_OF_HR_EMPLOYEES
    assert lock_key("hr", "employees_2") != KEY_OF_HR_EMPLOYEES


@pytest.mark.integration
@pytest.mark.parametrize("server", ["mariadb", "postgresql"])
def test_a_server_lock_is_exclusive_and_lost_with_its_connection(request, server):
    url = request.getfixturevalue("mysql_url" if server == "mariadb" else "postgresql_url")
    admin = request.getfixturevalue("mariadb" if server == "mariadb" else "postgres")
    first, second = make_engine(url), make_engine(url)  # as empsync makes them: PostgreSQL's $1 style
    try:
        mine, theirs = make_lock(first, "employees"), make_lock(second, "employees")
        assert mine.acquire() and mine.still_held()
        assert not theirs.acquire(), "a second holder"
        assert make_lock(second, "other_table").acquire(), "another table has its own lock"
        pid = mine._conn.execute(
            text("SELECT CONNECTION_ID()" if server == "mariadb" else "SELECT pg_backend_pid()")
        ).scalar()
        mine._conn.commit()
        if server == "mariadb":
            admin.query(f"KILL {int(pid)}")
        else:
            admin.query("SELECT pg_terminate_backend(%s)", pid)
        assert not mine.still_held(), "a lock whose connection was killed is lost"
        # The server ends a killed session a moment later: only then is its lock free.
        wait_for(theirs.acquire, 20, "the lock free for the next holder", every=0.2)
        assert not mine.acquire()
        theirs.release()
        assert mine.acquire()
        mine.release()
    finally:
        first.dispose()
        second.dispose()


def test_every_backend_name_finds_the_dialect_that_serves_it():
    for backend in MODULES:
        assert backend in for_backend(backend).backends
    assert for_backend("oracle") is None
