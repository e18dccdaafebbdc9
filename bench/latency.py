"""(e) Listen-mode latency: a write to the emulator until its row is visible in MariaDB.

empsync runs as it does in production, ``empsync --no-ui`` with ``[sync]
mode = "listen"`` in its own process. This process plays the mobile app
(one document update at a time, at a steady rate, to a pool of employees) and
times each write from the write call until the new value is visible in the
table, polling the row in a tight loop (0.5 ms apart) on a separate MariaDB connection.

Beside it, in the same run and for the very same writes, a bare
``on_snapshot`` listener (same collection, field mask and filter as
empsync's, no empsync code) times each write from the write call until its
callback sees the new value: the floor that the emulator's own streaming
sets. The overhead is the difference of the two, per percentile.

``python -m bench.latency`` starts private servers and prints one JSON object.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymysql
from sqlalchemy.engine import make_url

from core.source import make_client

from .harness import FIELDS, Servers, doc_id, say, unique
from .report import Goal, emit, percentiles, rounded

GOAL_P50_MS = 50.0
GOAL_P99_MS = 250.0
POOL = 50  # employees the "app" edits in turn
WARMUP = 10  # samples taken and thrown away before measuring
SAMPLE_TIMEOUT_S = 10.0
# Between two polls of the row: small against the figures, and it leaves the CPU to the
# servers and to empsync on a small machine (a spinning poller would slow what it measures).
POLL_PAUSE_S = 0.0005
REPO = Path(__file__).resolve().parent.parent


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, emulator_host: str, project: str, url: str) -> Path:
    """The sync.toml of the empsync under test: listen mode, polls only as a fallback."""
    sections: dict[str, dict[str, Any]] = {
        "source": {"project": project, "emulator_host": emulator_host, "updated_field": "updated_at", "timeout": 60},
        "target": {"url": url, "batch_size": 500},
        "sync": {"mode": "listen", "interval": 3600, "force_interval": 7 * 86_400},
    }
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    for field_path, spec in FIELDS.items():
        lines.append(f'[fields."{field_path}"]')
        lines += [f"{key} = {_toml_value(value)}" for key, value in spec.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class BareListener:
    """``on_snapshot`` with nothing behind it: notes when each (document, salary) arrives."""

    def __init__(self, client, field_paths: list[str], since: datetime) -> None:
        from google.cloud.firestore_v1.base_query import FieldFilter

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.seen: dict[tuple[str, int], float] = {}
        query = client.collection("employees").select(field_paths).where(filter=FieldFilter("updated_at", ">=", since))
        self.watch = query.on_snapshot(self._on_snapshot)

    def _on_snapshot(self, _docs, changes, _read_time) -> None:
        now = time.perf_counter()
        with self._cond:
            for change in changes:
                salary = (change.document.to_dict() or {}).get("salary")
                self.seen.setdefault((change.document.id, salary), now)
            self._cond.notify_all()

    def wait(self, key: tuple[str, int], timeout: float) -> float | None:
        deadline = time.perf_counter() + timeout
        with self._cond:
            while key not in self.seen:
                left = deadline - time.perf_counter()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self.seen[key]

    def close(self) -> None:
        self.watch.unsubscribe()


class Empsync:
    """``empsync --no-ui`` in its own process, its log in a file."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("FIRESTORE_EMULATOR_HOST", "EMPSYNC_CONFIG")}
        self.log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.log_path = log_path
        self.process = subprocess.Popen(
            [sys.executable, "-m", "core.cli", "--no-ui", "--config", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            cwd=REPO,
            env=env,
        )

    def check(self) -> None:
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"empsync --no-ui exited with {self.process.returncode}:\n{tail}")

    def listening(self) -> bool:
        return "Status: listening" in self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()


def _connect(url: str) -> pymysql.connections.Connection:
    u = make_url(url)
    return pymysql.connect(
        host=u.host, port=u.port, user=u.username, password=u.password, database=u.database, autocommit=True
    )


def _wait(check, timeout: float, what: str, guard=None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if guard is not None:
            guard()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def run(servers: Servers, samples: int = 500, rate: float = 10.0) -> dict[str, Any]:
    """Measure ``samples`` writes at ``rate`` a second; returns the JSON-ready result."""
    from google.cloud import firestore

    project = unique("bench-latency")
    url = servers.database("latency")
    servers.seed(project, POOL)
    work = Path(tempfile.mkdtemp(prefix="empsync-latency-"))
    config_path = write_config(work / "sync.toml", servers.emulator.host, project, url)
    client_config = servers.config(project, "sqlite://")
    app = make_client(client_config)  # the mobile app's writes
    bare_client = make_client(client_config)  # the bare listener's own connection, as empsync has its own
    field_paths = [*FIELDS]
    say(f"latency: empsync --no-ui in listen mode; {samples} writes at {rate:g}/s, bare listener beside it")
    empsync = Empsync(config_path, work / "empsync.log")
    db = _connect(url)
    bare = BareListener(bare_client, field_paths, datetime.now(UTC) - timedelta(seconds=1))
    # The poller releases the GIL on every round trip; a short switch interval keeps the bare
    # listener's callback thread from waiting out the default 5 ms behind it.
    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    end_to_end: list[float] = []
    bare_ms: list[float] = []
    acked_ms: list[float] = []
    lost = 0
    try:
        with db.cursor() as cursor:

            def rows() -> int:
                try:
                    cursor.execute("SELECT COUNT(*) FROM employees")
                except pymysql.err.ProgrammingError:  # the table is not there yet
                    return 0
                return int(cursor.fetchone()[0])

            _wait(lambda: rows() >= POOL and empsync.listening(), 120, "empsync to sync and listen", empsync.check)
            collection = app.collection("employees")
            period = 1.0 / rate
            started = time.perf_counter()
            total = WARMUP + samples
            for i in range(total):
                slot = started + i * period
                delay = slot - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                target, value = doc_id(i % POOL), 10_000_000 + i
                t0 = time.perf_counter()
                collection.document(target).update({"salary": value, "updated_at": firestore.SERVER_TIMESTAMP})
                t_ack = time.perf_counter()
                seen = None
                while time.perf_counter() - t0 < SAMPLE_TIMEOUT_S:
                    cursor.execute("SELECT salary FROM employees WHERE firestore_id = %s", (target,))
                    row = cursor.fetchone()
                    if row is not None and row[0] == value:
                        seen = time.perf_counter()
                        break
                    time.sleep(POLL_PAUSE_S)
                heard = bare.wait((target, value), SAMPLE_TIMEOUT_S)
                if i < WARMUP:
                    continue
                if seen is None or heard is None:
                    lost += 1
                    continue
                end_to_end.append((seen - t0) * 1000)
                bare_ms.append((heard - t0) * 1000)
                acked_ms.append((t_ack - t0) * 1000)
            elapsed = time.perf_counter() - started
            empsync.check()
    finally:
        sys.setswitchinterval(switch)
        bare.close()
        db.close()
        empsync.stop()
        app.close()
        bare_client.close()
    if len(end_to_end) < max(2, samples // 2):
        raise RuntimeError(f"latency: only {len(end_to_end)} of {samples} samples arrived (see {empsync.log_path})")
    shutil.rmtree(work, ignore_errors=True)  # kept when something failed, for its log
    e2e, floor = percentiles(end_to_end), percentiles(bare_ms)
    return {
        "benchmark": "latency",
        "target": "mariadb",
        "samples": len(end_to_end),
        "lost": lost,
        "rate_per_s": rounded((WARMUP + samples) / elapsed, 2),
        "end_to_end_ms": e2e,
        "bare_listener_ms": floor,
        "write_call_ms": percentiles(acked_ms),
        "overhead_ms": {k: rounded(e2e[k] - floor[k], 2) for k in ("p50", "p90", "p99")},
        "goals": {"p50_ms": GOAL_P50_MS, "p99_ms": GOAL_P99_MS},
        "passed": e2e["p50"] <= GOAL_P50_MS and e2e["p99"] <= GOAL_P99_MS,
    }


def goals(result: dict[str, Any]) -> list[Goal]:
    e2e = result["end_to_end_ms"]
    return [
        Goal("latency", "write to row visible in MariaDB, p50", e2e["p50"], "<=", GOAL_P50_MS, " ms"),
        Goal("latency", "write to row visible in MariaDB, p99", e2e["p99"], "<=", GOAL_P99_MS, " ms"),
    ]


def runner(servers: Servers, sizes) -> tuple[dict[str, Any], list[Goal]]:
    """The ``bench`` registry's shape: (Servers, Sizes) -> (result, goals)."""
    result = run(servers, samples=sizes.latency_samples)
    return result, goals(result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=500, help="measured writes (default 500)")
    parser.add_argument("--rate", type=float, default=10.0, help="writes a second (default 10)")
    args = parser.parse_args(argv)
    from .harness import servers

    with servers() as running:
        result = run(running, samples=args.samples, rate=args.rate)
    emit(result)
    for goal in goals(result):
        say(f"{'PASS' if goal.passed else 'MISS'} {goal.what}: {goal.figure} ms (goal {goal.op} {goal.target:g} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
