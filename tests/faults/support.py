"""Machinery of the fault suite: sizes, seeded randomness, real processes, a steady writer, servers to break.

Sizes: ``EMPSYNC_FAULTS_SIZE=full`` (``make faults``) gives the full sizes;
anything else the reduced CI ones. ``EMPSYNC_FAULTS_SEED`` replays the random
moments of a failed run (every case prints the seed it used).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

import pymysql
from sqlalchemy import create_engine, text

from core import config as cfg
from core.emulator import Emulator
from core.source import make_client

from ..conftest import REPO, employee, run_cli
from ..servers import export_emulator
from ..service_support import http, wait_for

FULL = os.environ.get("EMPSYNC_FAULTS_SIZE", "").strip().lower() == "full"


@dataclass(frozen=True)
class Sizes:
    force_docs: int  # the large force run killed at random moments
    force_kills: int
    listen_docs: int  # the collection under the steady write load
    listen_kills: int
    write_rate: float  # documents written per second by the steady load
    outages: int  # MariaDB stopped and restarted mid-run
    outage_docs: int
    connection_kills: int  # rounds of KILL CONNECTION mid-batch
    emulator_restarts: int
    leader_kills: int
    corpus_valid: int  # valid documents beside the malformed corpus
    api_requests: int


# CI keeps under 20 minutes: each kind of fault at least once, the repetitions in `make faults`.
CI_SIZES = Sizes(
    force_docs=3_000,
    force_kills=2,
    listen_docs=300,
    listen_kills=2,
    write_rate=60.0,
    outages=2,
    outage_docs=2_000,
    connection_kills=3,
    emulator_restarts=1,
    leader_kills=2,
    corpus_valid=3_000,
    api_requests=200,
)
FULL_SIZES = Sizes(
    force_docs=20_000,
    force_kills=10,
    listen_docs=2_000,
    listen_kills=10,
    write_rate=100.0,
    outages=5,
    outage_docs=10_000,
    connection_kills=10,
    emulator_restarts=5,
    leader_kills=10,
    corpus_valid=10_000,
    api_requests=1_000,
)
SIZES = FULL_SIZES if FULL else CI_SIZES

PAST = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
LISTEN = {"mode": "listen", "interval": 10, "force_interval": 7 * 86_400}


def seeded(case: str) -> random.Random:
    """The case's random source; prints its seed so a failure can be replayed."""
    seed = int(os.environ.get("EMPSYNC_FAULTS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"{case}: EMPSYNC_FAULTS_SEED={seed}")
    return random.Random(f"{seed}:{case}")


def doc_id(i: int) -> str:
    return f"e{i:06d}"


def settled(i: int, **extra: Any) -> dict[str, Any]:
    """An employee whose content does not change when written again (no server timestamp)."""
    return employee(i, updated_at=PAST, **extra)


def client_for(host: str, project: str):
    return make_client(cfg.from_dict({"source": {"project": project, "emulator_host": host}, "fields": {"name": {}}}))


def seed_docs(host: str, project: str, docs: dict[str, dict[str, Any]], workers: int = 4) -> None:
    """Write documents in 500-write batch commits, a few in parallel."""
    client = client_for(host, project)
    collection = client.collection("employees")
    items = list(docs.items())

    def commit(start: int) -> None:
        batch = client.batch()
        for key, data in items[start : start + 500]:
            batch.set(collection.document(key), data)
        batch.commit()

    try:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(commit, range(0, len(items), 500)))
    finally:
        client.close()


def force_sync(config_path: Path) -> dict[str, Any]:
    """``empsync sync --force --json``, which must succeed."""
    done = run_cli("--config", str(config_path), "sync", "--force", "--json", timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(done.stdout)


def cli_verify(config_path: Path) -> dict[str, Any]:
    """``empsync verify --json --yes``: the end check of every case."""
    done = run_cli("verify", "--json", "--yes", "--config", str(config_path), timeout=600)
    assert done.returncode in (0, 1) and done.stdout.strip(), f"verify exited {done.returncode}: {done.stderr[-2000:]}"
    report = json.loads(done.stdout)
    assert (done.returncode == 0) == (report["differences"] == 0), report
    return report


# -- the target database, read the way an operator would ------------------------------


class Db:
    """Plain SQL on the target (SQLite or MariaDB), one pooled engine."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, pool_pre_ping=True)

    def rows(self, sql: str, **params: Any) -> list[Any]:
        try:
            with self.engine.connect() as conn:
                return list(conn.execute(text(sql), params))
        except Exception:  # noqa: BLE001 - callers poll: a table not created yet or a server away is "not yet"
            return []

    def scalar(self, sql: str, **params: Any) -> Any:
        found = self.rows(sql, **params)
        return found[0][0] if found else None

    def last_run(self, pid: int, kind: str | None = None) -> Any:
        """The newest run row of a process: (id, kind, status, fetched, inserted, started_at, finished_at)."""
        where = " AND kind = :kind" if kind else ""
        found = self.rows(
            "SELECT id, kind, status, fetched, inserted, started_at, finished_at FROM empsync_runs "
            f"WHERE pid = :pid{where} ORDER BY id DESC LIMIT 1",
            pid=pid,
            kind=kind,
        )
        return found[0] if found else None

    def runs(self) -> list[Any]:
        return self.rows(
            "SELECT id, kind, status, pid, started_at, finished_at, fetched, message FROM empsync_runs ORDER BY id"
        )

    def count(self, table: str, where: str = "1=1") -> int:
        return int(self.scalar(f"SELECT COUNT(*) FROM {table} WHERE {where}") or 0)

    def close(self) -> None:
        self.engine.dispose()


def wait_running(db: Db, proc, kind: str, at_least: float, timeout: float = 120, after_id: int = 0) -> Any:
    """Until ``proc``'s newest ``kind`` run (newer than run ``after_id``) is running past ``at_least`` documents."""

    def check():
        if proc.process.poll() is not None:
            raise RuntimeError(f"exited {proc.process.returncode}:\n{proc.text()[-3000:]}")
        run = db.last_run(proc.pid, kind)
        return run is not None and run.id > after_id and run.status == "running" and run.fetched >= at_least and run

    return wait_for(check, timeout, f"a running {kind} run of pid {proc.pid} past {at_least:.0f} documents", 0.005)


# -- the mobile app's steady write load ---------------------------------------------


class Paced:
    """A thread calling ``write()`` at a steady pace, ``period`` seconds apart; pausable between writes."""

    def __init__(self, period: float, name: str) -> None:
        self.period = period
        self._stop = threading.Event()
        self._resume = threading.Event()
        self._resume.set()
        self._busy = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def pause(self) -> None:
        """Stop writing; returns once no write is in flight."""
        self._resume.clear()
        with self._busy:
            pass

    def resume(self) -> None:
        self._resume.set()

    def stop(self) -> None:
        self._stop.set()
        self._resume.set()
        self._thread.join(30)

    def write(self) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            if not self._resume.wait(0.2):
                next_at = time.monotonic()
                continue
            with self._busy:
                if self._resume.is_set() and not self._stop.is_set():
                    self.write()
            # Steady on average, but no burst to make up for a stall longer than a second.
            next_at = max(next_at + self.period, time.monotonic() - 1.0)
            self._stop.wait(max(0.0, next_at - time.monotonic()))


class Writer(Paced):
    """Batch commits at a steady rate: updates of known documents, and some new ones.

    Every update writes a salary taken from one counter, so no field ever gets
    the same value twice: any two identical audit rows are a replay. Writes that
    fail (the emulator is down) are counted and skipped; the truth at the end is
    Firestore itself, which verify reads.
    """

    def __init__(
        self,
        host: str,
        project: str,
        ids: list[str],
        rate: float,
        rng: random.Random,
        per_commit: int = 5,
        new_share: float = 0.2,
    ) -> None:
        super().__init__(per_commit / rate, "fault-writer")
        self.client = client_for(host, project)
        self.collection = self.client.collection("employees")
        self.ids = list(ids)
        self.rate, self.per_commit, self.new_share = rate, per_commit, new_share
        self.rng = rng
        self.counter = 1_000_000
        self.new = 0
        self.committed = self.failed = 0
        self.errors: list[str] = []

    def stop(self) -> None:
        if self._stop.is_set():
            return
        super().stop()
        self.client.close()

    def write(self) -> None:
        from google.cloud import firestore

        batch = self.client.batch()
        fresh = []
        for _ in range(self.per_commit):
            self.counter += 1
            if self.rng.random() < self.new_share or not self.ids:
                self.new += 1
                key = f"w{self.new:06d}"
                batch.set(self.collection.document(key), employee(self.counter, salary=self.counter))
                fresh.append(key)
            else:
                key = self.rng.choice(self.ids)
                batch.update(
                    self.collection.document(key),
                    {"salary": self.counter, "updated_at": firestore.SERVER_TIMESTAMP},
                )
        try:
            batch.commit(retry=None, timeout=5)
            self.committed += self.per_commit
            self.ids.extend(fresh)
        except Exception as exc:  # noqa: BLE001 - the emulator is away: skip, as an app offline would
            self.failed += 1
            self.errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
            self._stop.wait(0.2)


# -- servers to break --------------------------------------------------------------


class PersistentEmulator(Emulator):
    """An emulator that keeps its data across a restart: export, stop, start with ``--import-data``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.import_from: str | None = None

    def start(self, timeout: float = 60.0) -> PersistentEmulator:
        if self.import_from is None:
            return super().start(timeout)
        import core.emulator as module

        command = module.emulator_command
        module.emulator_command = lambda: [*command(), "--import-data", self.import_from]
        try:
            return super().start(timeout)
        finally:
            module.emulator_command = command

    def export(self, project: str, folder: Path) -> str:
        """The emulator's own export of a project; the next start imports it."""
        self.import_from = export_emulator(self.host, project, folder)
        return self.import_from


def connections(root, database: str) -> list[int]:
    """Ids of the server connections on ``database`` (but the asking one)."""
    with root.cursor() as c:
        c.execute("SELECT id FROM information_schema.processlist WHERE db = %s AND id <> CONNECTION_ID()", (database,))
        return [int(r[0]) for r in c.fetchall()]


class MidBatch:
    """Hold a run's next batch just before its commit: rows and audit rows written, not committed.

    A batch's last statement before COMMIT updates its run row (the counters).
    A root transaction holding that row ``FOR UPDATE`` makes the batch wait
    there, so a kill -9 then is surely in the middle of a batch. ``release``
    lets it go (or, once the process is dead, only ends the hold).
    """

    def __init__(self, server, database: str, run_id: int) -> None:
        self.server, self.database = server, database
        self.hold = server.root()
        self.hold.autocommit(False)
        with self.hold.cursor() as c:
            c.execute(f"SELECT id FROM `{database}`.empsync_runs WHERE id = %s FOR UPDATE", (run_id,))

    def wait_blocked(self, timeout: float = 60) -> int:
        """Until a connection on the database waits on the run row; returns its id."""
        watcher = self.server.root()

        def blocked():
            with watcher.cursor() as c:
                c.execute(
                    "SELECT id FROM information_schema.processlist WHERE db = %s AND info LIKE 'UPDATE empsync_runs%%'",
                    (self.database,),
                )
                found = c.fetchall()
            return found and int(found[0][0])

        try:
            return wait_for(blocked, timeout, "a batch waiting to commit", 0.01)
        finally:
            watcher.close()

    def release(self) -> None:
        try:
            self.hold.rollback()
        finally:
            self.hold.close()

    def abandon(self) -> None:
        """End the hold whatever became of the server (stopped, it took the hold with it)."""
        try:
            self.release()
        except pymysql.MySQLError:
            pass


def kill_connections(root, ids: list[int]) -> int:
    killed = 0
    with root.cursor() as c:
        for conn_id in ids:
            try:
                c.execute(f"KILL CONNECTION {int(conn_id)}")
                killed += 1
            except Exception:  # noqa: BLE001 - it ended on its own in the meantime
                pass
    return killed


def overlapping_runs(runs) -> list[tuple[int, int]]:
    """Pairs of runs by different processes whose times overlap: two syncs at once.

    A run killed with its process is closed (finished_at) by the next leader
    when it takes the lock, so a kill -9 leaves no overlap; a process that kept
    syncing after it lost the lock shows as one.
    """
    far = datetime.max
    found = []
    for i, a in enumerate(runs):
        for b in runs[i + 1 :]:
            if a.pid != b.pid and a.started_at < (b.finished_at or far) and b.started_at < (a.finished_at or far):
                found.append((a.id, b.id))
    return found


# -- the control API ---------------------------------------------------------------------

TOKEN = "faults-token-5d2b"


def with_api(config: cfg.Config, port: int) -> cfg.Config:
    return dataclasses.replace(
        config, api=dataclasses.replace(config.api, enabled=True, host="127.0.0.1", port=port, token=TOKEN)
    )


def api(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request to a service's API, or (0, None) when it does not answer."""
    try:
        code, _, payload = http(method, f"http://127.0.0.1:{port}/api/realtime-sync/{path}", body, token=TOKEN)
    except OSError:
        return 0, None
    return code, payload


# -- processes -------------------------------------------------------------------------


def one_shot(config_path: Path, *args: str) -> subprocess.Popen:
    """``empsync --config PATH ARGS`` started in the background (stdout and stderr to a pipe)."""
    env = {k: v for k, v in os.environ.items() if k not in ("FIRESTORE_EMULATOR_HOST", "EMPSYNC_CONFIG")}
    return subprocess.Popen(
        [sys.executable, "-m", "core.cli", "--config", str(config_path), *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def alive_check(*procs) -> Callable[[], None]:
    """For waits: raise at once if one of the services died."""

    def check() -> None:
        for proc in procs:
            if proc.process.poll() is not None:
                raise AssertionError(f"pid {proc.pid} exited {proc.process.returncode}:\n{proc.text()[-3000:]}")

    return check
