"""Faults of one sync run: servers down, a wrong password, an emulator dying mid-run, kill -9.

Every expected failure is exit 1 with one or two clear lines and no traceback,
never shows the target's password, leaves no partial batch, and the next run
completes the work. Real servers only: the shared emulator and MariaDB, plus a
private emulator for the test that stops one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, event, func, select, text

from core import config as cfg
from core.dialects import make_lock
from core.emulator import Emulator, free_port
from core.engine import SyncEngine
from core.errors import EmpsyncError
from core.source import make_client
from core.state import StateKey

from .conftest import IN_CI, REPO, employee, run_cli, write_docs, write_toml
from .servers import PASSWORD

pytestmark = pytest.mark.integration

PAST = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
WRONG_PASSWORD = "Wr0ng-Pass-4567"


def settled(i: int, **extra: Any) -> dict[str, Any]:
    """An employee whose content is the same however often it is written (no server timestamp)."""
    return employee(i, updated_at=PAST, **extra)


def assert_clear_failure(proc: subprocess.CompletedProcess, *needles: str, code: int = 1) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout[-500:], proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, proc.stderr
    assert lines[0].startswith("empsync: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in proc.stderr + proc.stdout
    return lines[0]


def assert_no_secret(proc: subprocess.CompletedProcess, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in proc.stdout and secret not in proc.stderr, secret


def scalar(url: str, sql: str) -> Any:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar()
    finally:
        engine.dispose()


# -- the target database ---------------------------------------------------------------


def test_mariadb_unreachable_is_exit_1_with_one_clear_line(make_config, tmp_path):
    url = f"mysql+pymysql://empsync:{PASSWORD}@127.0.0.1:{free_port()}/hr"
    path = str(write_toml(tmp_path / "sync.toml", make_config(url)))
    for args in (("sync",), ("sync", "--force"), ("status",), ("changes",), ("interval", "60")):
        proc = run_cli("--config", path, *args)
        line = assert_clear_failure(proc, "database unreachable")
        assert ":***@127.0.0.1" in line
        assert_no_secret(proc, PASSWORD)
    # Logging at full volume and JSON output keep the secret too.
    proc = run_cli("--config", path, "-v", "sync", "--force")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert_no_secret(proc, PASSWORD)
    proc = run_cli("--config", path, "sync", "--force", "--json")
    assert proc.returncode == 1 and '"status": "failed"' in proc.stdout and "database unreachable" in proc.stdout
    assert_no_secret(proc, PASSWORD)


def test_mariadb_wrong_password_is_exit_1_and_never_printed(make_config, mariadb, mysql_url, tmp_path):
    url = mysql_url.replace(f":{PASSWORD}@", f":{WRONG_PASSWORD}@")
    assert WRONG_PASSWORD in url
    path = str(write_toml(tmp_path / "sync.toml", make_config(url)))
    for args in (("sync", "--force"), ("-v", "sync", "--force"), ("status",), ("rejects", "--json")):
        proc = run_cli("--config", path, *args)
        assert proc.returncode == 1, proc.stderr
        assert "database refused the login" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert_no_secret(proc, WRONG_PASSWORD, PASSWORD)
    assert_clear_failure(run_cli("--config", path, "sync", "--force"), "refused the login")
    # Given by environment, so the password sits in no file, it stays hidden as well.
    env_path = str(write_toml(tmp_path / "env.toml", make_config("sqlite:///unused.db")))
    proc = run_cli("--config", env_path, "sync", "--force", env={"EMPSYNC_TARGET_URL": url})
    assert_clear_failure(proc, "refused the login")
    assert_no_secret(proc, WRONG_PASSWORD)


class ConnectionKiller:
    """Kill the very connection about to run a statement on the runs table (one holding ``needle``), ``times`` times.

    The statement then fails as it does when MariaDB restarts or a connection
    is cut mid-run: "Lost connection to MySQL server during query".
    """

    def __init__(self, engine: SyncEngine, root, needle: str, times: int) -> None:
        self.engine, self.root, self.needle, self.armed, self.killed = engine, root, needle, times, 0
        event.listen(engine.db.engine, "before_cursor_execute", self._hook)

    def _hook(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if self.armed and statement.lstrip().startswith("UPDATE empsync_runs") and self.needle in statement:
            self.armed -= 1
            self.killed += 1
            with self.root.cursor() as c:
                c.execute(f"KILL CONNECTION {int(cursor.connection.thread_id())}")

    def remove(self) -> None:
        event.remove(self.engine.db.engine, "before_cursor_execute", self._hook)


@pytest.mark.parametrize(
    "needle",
    [pytest.param("", id="the-batch-and-its-end"), pytest.param("finished_at", id="the-end-of-a-complete-run")],
)
def test_a_run_whose_end_could_not_be_written_is_recorded_by_the_next_run(
    make_config, mariadb, mysql_url, firestore_client, needle
):
    """A leader keeps the lock, so nothing else closes its rows: the row must not stay 'running'."""
    kills = 2  # the write and, for a complete run, its retry at once
    write_docs(firestore_client, {f"e{i:03d}": settled(i) for i in range(20)})
    engine = SyncEngine(make_config(mysql_url, target={"batch_size": 5}))
    engine.db.ensure_schema()
    lock = make_lock(engine.db.engine, engine.config.target.table)
    assert lock.acquire()
    root = mariadb.root()
    killer = ConnectionKiller(engine, root, needle, kills)
    try:
        first = engine.run(force=True, trigger="schedule", lock=lock)
        assert killer.killed == kills
        assert first.status == "failed" and "Lost connection" in first.reason, first.reason
        with engine.db.connect() as conn:
            assert engine.state.last_run(conn)["status"] == "running", "the fault left the row unwritten"

        second = engine.run(force=True, trigger="schedule", lock=lock)
        assert second.status == "ok", second.reason
        t = engine.db.tables.runs
        with engine.db.connect() as conn:
            rows = {r.id: r for r in conn.execute(select(t).order_by(t.c.id))}
    finally:
        killer.remove()
        root.close()
        lock.release()
        engine.close()
    ended = rows[first.run_id]
    assert (ended.status, ended.finished_at is not None) == ("failed", True)
    assert "Lost connection" in ended.message
    assert ended.inserted == first.counts.inserted  # the counters of what the run did commit
    assert rows[second.run_id].status == "ok"
    assert [r.status for r in rows.values()] == ["failed", "ok"]


# -- Firestore -----------------------------------------------------------------------------


def test_firestore_unreachable_is_exit_1_with_one_clear_line(make_config, target_url, tmp_path):
    closed = f"127.0.0.1:{free_port()}"
    config = make_config(target_url, source={"emulator_host": closed, "timeout": 2})
    path = str(write_toml(tmp_path / "sync.toml", config))
    proc = run_cli("--config", path, "sync", "--force")
    line = assert_clear_failure(proc, "unreachable", closed)
    assert "the next run retries" in proc.stderr
    assert_no_secret(proc, PASSWORD)
    assert "(project " in line

    engine = SyncEngine(config)
    with engine.db.connect() as conn:
        run = engine.state.last_run(conn)
        rows = conn.execute(select(func.count()).select_from(engine.db.tables.mirror)).scalar_one()
    assert (run["status"], rows) == ("failed", 0)
    assert "unreachable" in run["message"]
    assert engine.state.get(StateKey.LAST_STATUS) == "failed"
    # status answers from the database while Firestore is away.
    status = run_cli("--config", path, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert '"last_status": "failed"' in status.stdout
    engine.close()


# -- an emulator that stops in the middle of a run -------------------------------------------


@pytest.fixture(scope="module")
def private_emulator(tmp_path_factory):
    """An emulator of this module's own, so stopping it leaves the shared one up."""
    emu = Emulator(log_path=tmp_path_factory.mktemp("private-emulator") / "emulator.log")
    try:
        emu.start()
    except (EmpsyncError, OSError) as exc:
        if IN_CI:
            pytest.fail(f"Firestore emulator unavailable: {exc}", pytrace=False)
        pytest.skip(f"Firestore emulator unavailable: {exc}")
    yield emu
    emu.stop()


def seed(host: str, project: str, docs: dict[str, dict[str, Any]]) -> None:
    client = make_client(cfg.from_dict({"source": {"project": project, "emulator_host": host}, "fields": {"name": {}}}))
    try:
        write_docs(client, docs)
    finally:
        client.close()


def start_sync(path: str, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "FIRESTORE_EMULATOR_HOST"}
    return subprocess.Popen(
        [sys.executable, "-m", "core.cli", "--config", path, "sync", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(check: Callable[[], bool], proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    """Poll the database (not the clock) until ``check`` holds, while the run is still going."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the sync ended (rc {proc.returncode}) before {what}: {err[-1500:]}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def progress(url: str) -> Callable[[], int]:
    """Rows inserted so far by the running run, as its committed counters say."""
    engine = create_engine(url)

    def read() -> int:
        try:
            with engine.connect() as conn:
                got = conn.execute(text("SELECT MAX(inserted) FROM empsync_runs WHERE status = 'running'")).scalar()
        except Exception:  # noqa: BLE001 - the tables may not exist yet
            return 0
        return int(got or 0)

    read.engine = engine  # type: ignore[attr-defined]
    return read


def test_emulator_stopping_mid_run_fails_cleanly_and_the_rerun_completes(
    private_emulator, make_config, mysql_url, tmp_path
):
    """The fault is Firestore's, on one target: how each target survives a run cut short is the kill tests'."""
    target_url = mysql_url
    total, batch = 2000, 50
    project = f"stop-{uuid.uuid4().hex[:10]}"
    # 10 MB in all: more than gRPC buffers, so the one stream still needs the emulator when it stops.
    docs = {f"e{i:05d}": settled(i, bio="x" * 5_000) for i in range(total)}
    seed(private_emulator.host, project, docs)
    config = make_config(
        target_url,
        source={"project": project, "emulator_host": private_emulator.host, "page_size": batch, "timeout": 3},
        target={"batch_size": batch},
    )
    path = str(write_toml(tmp_path / "sync.toml", config))

    inserted = progress(target_url)
    proc = start_sync(path, "--force")
    try:
        wait_until(lambda: inserted() >= 5 * batch, proc, "five batches were committed")
        # Freeze the run so the emulator is surely gone before it reads on.
        os.kill(proc.pid, signal.SIGSTOP)
        private_emulator.stop(kill=True)
        os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        inserted.engine.dispose()
    failed = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert_clear_failure(failed, "unreachable")

    engine = SyncEngine(config)
    with engine.db.connect() as conn:
        run = engine.state.last_run(conn)
        stored = conn.execute(select(func.count()).select_from(engine.db.tables.mirror)).scalar_one()
        audited = conn.execute(select(func.count()).select_from(engine.db.tables.changes)).scalar_one()
    assert run["status"] == "failed" and "unreachable" in run["message"]
    # No partial batch: what is in the table is whole batches, each with its audit
    # rows and counted by the run in the same transaction.
    assert 5 * batch <= stored < total
    assert stored % batch == 0
    assert run["inserted"] == stored == audited
    engine.close()

    private_emulator.start()  # same port; its data was in memory, so seed again
    seed(private_emulator.host, project, docs)
    proc2 = run_cli("--config", path, "sync", "--force", "--json")
    assert proc2.returncode == 0, proc2.stderr
    out2 = json.loads(proc2.stdout)
    assert (out2["status"], out2["inserted"], out2["unchanged"]) == ("ok", total - stored, stored)

    engine = SyncEngine(config)
    with engine.db.connect() as conn:
        ids = [r[0] for r in conn.execute(select(engine.db.tables.mirror.c.firestore_id))]
        inserts = Counter(
            r[0]
            for r in conn.execute(
                select(engine.db.tables.changes.c.document_id).where(engine.db.tables.changes.c.operation == "insert")
            )
        )
    assert sorted(ids) == sorted(docs)
    assert set(inserts) == set(docs) and max(inserts.values()) == 1
    engine.close()


# -- kill -9 in the middle of a large run -------------------------------------------------

KILL_DOCS = 20_000


@pytest.fixture(scope="module")
def big_collection(emulator) -> tuple[str, dict[str, int]]:
    """A project on the shared emulator with KILL_DOCS employees, and their salaries as Firestore holds them."""
    project = f"big-{uuid.uuid4().hex[:10]}"
    seed(emulator.host, project, {f"e{i:05d}": settled(i) for i in range(KILL_DOCS)})
    client = make_client(
        cfg.from_dict({"source": {"project": project, "emulator_host": emulator.host}, "fields": {"name": {}}})
    )
    try:
        truth = {s.id: s.get("salary") for s in client.collection("employees").select(["salary"]).stream()}
    finally:
        client.close()
    assert len(truth) == KILL_DOCS
    return project, truth


def test_kill_9_mid_run_then_a_rerun_leaves_the_table_equal_to_firestore(
    big_collection, make_config, target_url, tmp_path
):
    project, truth = big_collection
    batch = 100
    config = make_config(target_url, source={"project": project, "page_size": 500}, target={"batch_size": batch})
    path = str(write_toml(tmp_path / "sync.toml", config))

    inserted = progress(target_url)
    proc = start_sync(path, "--force")
    try:
        wait_until(lambda: inserted() >= 30 * batch, proc, "thirty batches were committed")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        inserted.engine.dispose()
    assert proc.returncode == -signal.SIGKILL

    engine = SyncEngine(config)
    m, changes = engine.db.tables.mirror, engine.db.tables.changes
    with engine.db.connect() as conn:
        killed = engine.state.last_run(conn)
        committed = conn.execute(select(func.count()).select_from(m)).scalar_one()
        audited = conn.execute(select(func.count()).select_from(changes)).scalar_one()
    assert killed["status"] == "running"  # nobody was left to close it
    assert 30 * batch <= committed < KILL_DOCS, "killed in the middle"
    assert committed % batch == 0 and killed["inserted"] == committed == audited
    engine.close()

    rerun = run_cli("--config", path, "sync", "--force", "--json", timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    out = json.loads(rerun.stdout)
    assert (out["status"], out["inserted"], out["unchanged"], out["deleted"]) == (
        "ok",
        KILL_DOCS - committed,
        committed,
        0,
    )

    engine = SyncEngine(config)
    with engine.db.connect() as conn:
        stored = {r[0]: r[1] for r in conn.execute(select(m.c.firestore_id, m.c.salary))}
        live = conn.execute(select(func.count()).select_from(m).where(m.c.deleted_at.is_(None))).scalar_one()
        total_rows = conn.execute(select(func.count()).select_from(m)).scalar_one()
        audit_rows = list(conn.execute(select(changes.c.document_id, changes.c.operation)))
        runs = list(conn.execute(text("SELECT id, status FROM empsync_runs ORDER BY id")))
    assert stored == truth, "the table equals Firestore"
    assert total_rows == live == KILL_DOCS, "no duplicate or deleted rows"
    per_doc = Counter(audit_rows)
    assert len(audit_rows) == KILL_DOCS and set(per_doc) == {(i, "insert") for i in truth}
    assert max(per_doc.values()) == 1, "no duplicate audit rows"
    assert [status for _, status in runs] == ["interrupted", "ok"]
    engine.close()
