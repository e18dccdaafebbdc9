"""Servers, configurations and seeding shared by the benchmarks.

The emulator, MariaDB and PostgreSQL are started once per bench run, on free
loopback ports with their data in temporary folders; each benchmark isolates
itself in its own Firestore project id and its own database.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import config as cfg
from core.demo import DEMO_FIELDS
from core.emulator import Emulator
from core.source import make_client
from tests.servers import MariaDB, PostgreSQL

# The employee collection of the repository's sync.toml (as the demo maps it), plus two more types.
FIELDS: dict[str, dict[str, Any]] = {**DEMO_FIELDS, "rating": {"type": "float"}, "remote": {"type": "boolean"}}

SEED_BATCH = 500  # Firestore's limit of writes per commit
SEED_WORKERS = 8


def say(message: str) -> None:
    """Progress goes to stderr; stdout carries only the JSON results."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def employee(i: int, version: int = 0) -> dict[str, Any]:
    """One employee document; ``version`` > 0 changes salary and status, as an edit in the app would."""
    from google.cloud import firestore

    return {
        "name": f"Employee {i}",
        "email": f"employee{i}@example.com",
        "phone": f"+1-555-{i % 10_000:04d}",
        "department": ("Engineering", "Sales", "HR", "Finance")[i % 4],
        "position": "Engineer",
        "status": ("active", "on_leave")[version % 2],
        "salary": 50_000 + i + 1_000 * version,
        "rating": 3.5,
        "remote": i % 2 == 0,
        "hired_at": "2020-01-15",
        "address": {"city": "Lisbon", "street": "Rua 1"},
        "skills": ["python", "sql"],
        "password_hash": "never-leaves-firestore",
        "updated_at": firestore.SERVER_TIMESTAMP,
    }


def doc_id(i: int) -> str:
    return f"emp{i:07d}"


def make_config(
    emulator_host: str, project: str, url: str, page_size: int = 2_000, updated_field: str = "updated_at", **target: Any
) -> cfg.Config:
    """The bench's sync configuration: the employee fields, incremental by updated_at."""
    return cfg.from_dict(
        {
            "source": {
                "project": project,
                "emulator_host": emulator_host,
                "updated_field": updated_field,
                "page_size": page_size,
                "timeout": 120,
            },
            "target": {"url": url, **target},
            "fields": FIELDS,
        }
    )


# The database servers the benchmarks that compare targets run on, MariaDB first (the product's own).
TARGETS = ("mariadb", "postgresql")


@dataclass
class Servers:
    emulator: Emulator
    mariadb: MariaDB
    postgresql: PostgreSQL

    def database(self, prefix: str, target: str = "mariadb") -> str:
        """A fresh database's SQLAlchemy URL, on MariaDB unless told."""
        server = self.mariadb if target == "mariadb" else self.postgresql
        name = server.create_database(unique(prefix).replace("-", "_"))
        return server.url(name)

    def config(self, project: str, url: str, **target: Any) -> cfg.Config:
        return make_config(self.emulator.host, project, url, **target)

    def seed(self, project: str, count: int) -> float:
        """Write ``count`` employees into a project with parallel batch commits; returns seconds taken."""
        client = make_client(self.config(project, "sqlite://"))
        started = time.perf_counter()
        collection = client.collection("employees")

        def commit(start: int) -> None:
            batch = client.batch()
            for i in range(start, min(start + SEED_BATCH, count)):
                batch.set(collection.document(doc_id(i)), employee(i))
            batch.commit()

        try:
            with ThreadPoolExecutor(SEED_WORKERS) as pool:
                list(pool.map(commit, range(0, count, SEED_BATCH)))
        finally:
            client.close()
        return time.perf_counter() - started


@contextmanager
def servers() -> Iterator[Servers]:
    """A private emulator, MariaDB and PostgreSQL for the whole bench run, removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="empsync-bench-"))
    (base / "mariadb").mkdir()
    say("starting the Firestore emulator, MariaDB and PostgreSQL")
    emulator = Emulator(log_path=base / "emulator.log")
    mariadb = MariaDB(base / "mariadb")
    postgresql = PostgreSQL(base / "postgresql")
    try:
        emulator.start()
        mariadb.start()
        postgresql.start()
        yield Servers(emulator, mariadb, postgresql)
    finally:
        postgresql.destroy()
        mariadb.stop()
        emulator.stop()
        shutil.rmtree(base, ignore_errors=True)
