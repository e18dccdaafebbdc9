"""Shared fixtures: one real emulator, one real MariaDB and one real PostgreSQL per test session.

Tests isolate themselves inside them: each gets its own Firestore project id
and its own database, so nothing needs cleaning up. With CI=true a server
that cannot start fails the run; elsewhere its tests are skipped with the
reason.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from core import config as cfg
from core.demo import DEMO_FIELDS
from core.errors import EmpsyncError
from core.source import make_client

from .servers import MariaDB, PostgreSQL, ServerMissing, start_emulator

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO = Path(__file__).resolve().parent.parent

# The repository's employee mapping (as the demo uses it), plus the types it lacks.
EMPLOYEE_FIELDS: dict[str, dict[str, Any]] = {
    **DEMO_FIELDS,
    "rating": {"type": "float"},
    "remote": {"type": "boolean"},
    "bio": {"type": "text"},
}


def _unavailable(what: str, exc: Exception) -> None:
    message = f"{what} unavailable: {exc}"
    if IN_CI:
        pytest.fail(message + " (CI=true: a missing server is a failure)", pytrace=False)
    pytest.skip(message)


def started(server):
    """A test server started, or the test failed (CI) or skipped with the reason."""
    try:
        return server.start()
    except (ServerMissing, OSError, subprocess.SubprocessError) as exc:
        _unavailable(type(server).__name__, exc)


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    try:
        emu = start_emulator(tmp_path_factory.mktemp("emulator"))
    except (EmpsyncError, OSError) as exc:
        _unavailable("Firestore emulator", exc)
    yield emu
    emu.stop()


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory):
    server = started(MariaDB(tmp_path_factory.mktemp("mariadb")))
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def postgres():
    server = started(PostgreSQL())
    yield server
    server.destroy()


@pytest.fixture
def processes():
    """Subprocesses a test started (``service_support.Headless``); any still running at the end is killed."""
    started: list = []
    yield started
    for process in started:
        process.close()


@pytest.fixture
def project() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def mysql_url(mariadb, project) -> str:
    return mariadb.url(mariadb.create_database(project.replace("-", "_")))


@pytest.fixture
def postgresql_url(postgres, project) -> str:
    return postgres.url(postgres.create_database(project.replace("-", "_")))


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mirror.db'}"


TARGET_URLS = {"sqlite": "sqlite_url", "mariadb": "mysql_url", "postgresql": "postgresql_url"}


@pytest.fixture(params=list(TARGET_URLS))
def target_url(request) -> str:
    """Runs the test once per target: the embedded default and each server empsync writes."""
    return request.getfixturevalue(TARGET_URLS[request.param])


SERVERS = {"mariadb": "mysql_url", "postgresql": "postgresql_url"}


@pytest.fixture(params=list(SERVERS))
def server_url(request) -> str:
    """Runs the test once per database server: for what SQLite has no part in (a lock on a server)."""
    return request.getfixturevalue(SERVERS[request.param])


@pytest.fixture
def make_config(emulator, project) -> Callable[..., cfg.Config]:
    """A Config for this test's project on the shared emulator; keyword sections override."""

    def build(url: str, fields: dict[str, dict[str, Any]] | None = None, **sections: dict[str, Any]) -> cfg.Config:
        raw: dict[str, Any] = {
            "source": {
                "project": project,
                "emulator_host": emulator.host,
                "updated_field": "updated_at",
                "timeout": 20,
            },
            # Deletion tests delete much of a small collection; the guard has tests of its own.
            "target": {"url": url, "batch_size": 100, "max_delete_fraction": 1.0},
            "fields": fields or EMPLOYEE_FIELDS,
        }
        for name, values in sections.items():
            raw.setdefault(name, {}).update(values)
        return cfg.from_dict(raw)

    return build


@pytest.fixture
def firestore_client(emulator, project):
    """A plain client for the test's own writes to the emulator."""
    config = cfg.from_dict({"source": {"project": project, "emulator_host": emulator.host}, "fields": {"name": {}}})
    client = make_client(config)
    yield client
    client.close()


def write_docs(client, docs: dict[str, dict[str, Any]], collection: str = "employees") -> None:
    col = client.collection(collection)
    batch = client.batch()
    for n, (doc_id, data) in enumerate(docs.items(), 1):
        batch.set(col.document(doc_id), data)
        if n % 400 == 0:
            batch.commit()
            batch = client.batch()
    batch.commit()


def employee(i: int, **extra: Any) -> dict[str, Any]:
    from google.cloud import firestore

    data = {
        "name": f"Employee {i}",
        "email": f"employee{i}@example.com",
        "phone": f"+1-555-{i:04d}",
        "department": ["Engineering", "Sales", "HR", "Finance"][i % 4],
        "position": "Engineer",
        "status": "active",
        "salary": 50_000 + i,
        "rating": 3.5,
        "remote": i % 2 == 0,
        "hired_at": "2020-01-15",
        "address": {"city": "Lisbon", "street": "Rua 1"},
        "skills": ["python", "sql"],
        "password_hash": "never-leaves-firestore",
        "updated_at": firestore.SERVER_TIMESTAMP,
    }
    data.update(extra)
    return data


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """``empsync ...`` (``python -m tui``, the script's entry) as a real subprocess, the way cron and scripts run it."""
    full_env = {k: v for k, v in os.environ.items() if k != "FIRESTORE_EMULATOR_HOST"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "tui", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or REPO,
        timeout=timeout,
    )


def write_toml(path: Path, config: cfg.Config) -> Path:
    """The TOML file for a Config, for subprocess tests."""
    lines = []
    for section in ("source", "target", "sync", "api", "notify"):
        lines.append(f"[{section}]")
        for key, value in vars(getattr(config, section)).items():
            if key != "where" and f"{section}.{key}" not in cfg.ENV_ONLY:
                lines.append(f"{key} = {_toml(value)}")
    for condition in config.source.where:
        lines.append("[[source.where]]")
        lines.append(f"field = {_toml(condition.field)}")
        lines.append(f"op = {_toml(condition.op)}")
        lines.append(f"value = {_toml(condition.value)}")
    for spec in config.fields:
        lines.append(f'[fields."{spec.path}"]')
        lines.append(f'type = "{spec.type}"')
        lines.append(f'column = "{spec.column}"')
        lines.append(f"required = {_toml(spec.required)}")
        if spec.type == "string":
            lines.append(f"max_length = {spec.max_length}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture(autouse=True)
def _logging_as_found():
    """Leave the root logger as the test found it.

    A command run in-process (``cli.main``) configures logging for a process,
    as it should: its own handler, the root at CRITICAL for a quiet one-shot.
    Left in place, that silences every later test's log records.
    """
    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    yield
    root.setLevel(level)
    for handler in root.handlers[:]:
        if handler not in handlers and type(handler).__module__ != "_pytest.logging":
            root.removeHandler(handler)
    logging.captureWarnings(False)
