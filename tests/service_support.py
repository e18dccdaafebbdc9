"""Helpers for the service, API and headless tests: waiting, events, HTTP, subprocesses.

Every wait here polls against a deadline that is only an upper bound: a test
never asserts on how long something took, only that it happened in time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event as sa_event
from sqlalchemy import select

from core.config import Config
from core.engine import SyncEngine
from core.events import Event, SyncFailed, SyncFinished, SyncStarted
from core.service import SyncService

from .conftest import REPO

T = TypeVar("T")

# A text log line as --no-ui writes it; a traceback's lines follow indented.
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (DEBUG|INFO|WARNING|ERROR|CRITICAL) +\S")


def wait_for(check: Callable[[], T], timeout: float, what: str, every: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except AssertionError as exc:  # a check may assert to say why it is not there yet
            last = exc
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")
        time.sleep(every)


PILOT_DEADLINE_S = 60.0


async def until(pilot, condition: Callable[[], Any], what: str, deadline: float = PILOT_DEADLINE_S) -> Any:
    """Let a console (Pilot) run until ``condition()`` is truthy; fail naming ``what`` after a generous deadline."""
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


class Events:
    """Everything a service emits, recorded on its worker thread, read on the test's."""

    def __init__(self, service: SyncService) -> None:
        self._lock = threading.Lock()
        self.items: list[Event] = []
        self.unsubscribe = service.subscribe(self._record)

    def _record(self, event: Event) -> None:
        with self._lock:
            self.items.append(event)

    def all(self, kind: type | tuple[type, ...] = Event) -> list[Any]:
        with self._lock:
            return [e for e in self.items if isinstance(e, kind)]

    def finished(self, trigger: str | None = None, kind: str | None = None) -> list[Any]:
        return [
            e.result
            for e in self.all(SyncFinished)
            if (trigger is None or e.result.trigger == trigger) and (kind is None or e.result.kind == kind)
        ]

    def wait_finished(self, count: int = 1, timeout: float = 30, **match: str) -> list[Any]:
        return wait_for(
            lambda: (found := self.finished(**match)) and len(found) >= count and found,
            timeout,
            f"{count} finished run(s) {match or ''}",
        )

    def mark(self) -> int:
        with self._lock:
            return len(self.items)

    def since(self, mark: int, kind: type | tuple[type, ...] = Event) -> list[Any]:
        with self._lock:
            return [e for e in self.items[mark:] if isinstance(e, kind)]

    def assert_never_overlapped(self) -> None:
        """SyncStarted and SyncFinished/SyncFailed strictly alternate: one run at a time."""
        running = False
        for event in self.all((SyncStarted, SyncFinished, SyncFailed)):
            if isinstance(event, SyncStarted):
                assert not running, "a run started while another was running"
                running = True
            else:
                running = False


@contextmanager
def running(service: SyncService) -> Iterator[SyncService]:
    service.start()
    try:
        yield service
    finally:
        assert service.stop(15), "the worker did not stop"


def wait_leading(service: SyncService, timeout: float = 30) -> dict[str, Any]:
    return wait_for(lambda: service.snapshot().get("is_leader") and service.snapshot(), timeout, "leadership")


def mirror_rows(config: Config) -> dict[str, dict[str, Any]]:
    """The mirror table as {firestore_id: row}, read with a fresh engine."""
    engine = SyncEngine(config)
    try:
        engine.db.ensure_schema()
        with engine.db.connect() as conn:
            rows = conn.execute(select(engine.db.tables.mirror)).mappings().all()
        return {r[config.target.id_column]: dict(r) for r in rows}
    finally:
        engine.close()


def stored_state(config: Config) -> dict[str, str | None]:
    engine = SyncEngine(config)
    try:
        engine.db.ensure_schema()
        return engine.state.get_all()
    finally:
        engine.close()


def runs_table(config: Config) -> list[dict[str, Any]]:
    engine = SyncEngine(config)
    try:
        engine.db.ensure_schema()
        with engine.db.connect() as conn:
            return list(reversed(engine.state.recent_runs(conn, limit=1000)))
    finally:
        engine.close()


@contextmanager
def failing_writes(engine: SyncEngine, times: int) -> Iterator[list[str]]:
    """The next ``times`` writes to the mirror table fail as a dropped connection fails them (the driver's own error).

    A hook on the real engine, not a stand-in for the database: the statement
    is refused before it is sent, the way a connection lost mid-batch refuses it.
    """
    failed: list[str] = []
    table = re.escape(engine.config.target.table)
    pattern = re.compile(rf"^\s*(INSERT|UPDATE|DELETE)\b.*?\b[`\"]?{table}[`\"]?\s", re.I | re.S)
    dbapi = engine.db.engine.dialect.loaded_dbapi

    def hook(conn, cursor, statement, parameters, context, executemany) -> None:
        if len(failed) < times and pattern.match(statement[:200]):
            failed.append(statement[:60])
            raise dbapi.OperationalError(2013, "Lost connection to server during query (simulated)")

    sa_event.listen(engine.db.engine, "before_cursor_execute", hook)
    try:
        yield failed
    finally:
        sa_event.remove(engine.db.engine, "before_cursor_execute", hook)


# -- HTTP ---------------------------------------------------------------------------


def http(
    method: str,
    url: str,
    body: Any = None,
    *,
    token: str | None = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One request; returns (status, headers, JSON body or text)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None or method == "POST":  # the API refuses a POST that is not JSON (415)
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, got, payload = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, got, payload = exc.code, dict(exc.headers), exc.read()
    text = payload.decode()
    if got.get("Content-Type", "").startswith("application/json") and text:  # a HEAD's body is empty
        return status, got, json.loads(text)
    return status, got, text


def exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Raw bytes to the API on a fresh connection, half-closed after them; all it answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        try:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed before reading it all (413, 400)
            pass
        return read_all(conn)


def read_all(conn: socket.socket) -> bytes:
    """Until the server closes (or resets) the connection."""
    chunks = []
    try:
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


# -- `empsync --no-ui` as a real process ----------------------------------------------


class Headless:
    """``empsync --no-ui`` (``python -m tui``; or another long-running ``command``) with its stderr collected line by line."""

    def __init__(
        self, config_path: Path, *args: str, env: dict[str, str] | None = None, command: str = "--no-ui"
    ) -> None:
        full_env = {k: v for k, v in os.environ.items() if k not in ("FIRESTORE_EMULATOR_HOST", "EMPSYNC_CONFIG")}
        full_env.update(env or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tui", command, "--config", str(config_path), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=full_env,
        )
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def text(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_line(self, needle: str, timeout: float = 30, after: int = 0) -> str:
        def find() -> str | None:
            with self._lock:
                hit = next((line for line in self.lines[after:] if needle in line), None)
            if hit is None and self.process.poll() is not None:
                raise AssertionError(f"exited {self.process.returncode} before logging {needle!r}:\n{self.text()}")
            return hit

        try:
            return wait_for(find, timeout, f"log line {needle!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- stderr ---\n{self.text()}") from None

    def count(self) -> int:
        with self._lock:
            return len(self.lines)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self._reader.join(5)
        if self.process.stdout:
            self.process.stdout.close()
