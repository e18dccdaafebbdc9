"""The named sync lock: one sync at a time across processes and machines.

Each target's lock lives in its dialect module (``core.dialects``): a named
lock held by a dedicated connection on a server (MySQL's ``GET_LOCK``,
PostgreSQL's advisory lock), which dies with the process or the connection
(kill -9 included), or ``flock`` on a file beside an SQLite database, which
the kernel releases the same way. The kinds of lock are here; a table's lock
comes from ``core.dialects.make_lock``.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError


class SyncLock:
    """Non-blocking; ``acquire`` says whether it got the lock."""

    name: str

    def acquire(self) -> bool:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def still_held(self) -> bool:
        """Re-check: a lost connection means a lost lock."""
        raise NotImplementedError

    def __enter__(self) -> SyncLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class ConnectionLock(SyncLock):
    """A server's session lock, held by a connection of its own and gone with it.

    A subclass gives the three statements, each taking the lock's ``params``
    and answering 1 for yes: try to take it now, is it still ours, give it back.
    """

    TRY: str
    HELD: str
    RELEASE: str

    def __init__(self, engine: Engine, name: str, params: dict[str, Any]) -> None:
        self.engine = engine
        self.name = name
        self.params = params
        self._conn: Connection | None = None

    def acquire(self) -> bool:
        if self._conn is not None and self.still_held():
            return True
        self._drop()
        conn = self.engine.connect()
        try:
            got = conn.execute(text(self.TRY), self.params).scalar()
            conn.commit()
        except SQLAlchemyError:
            conn.close()
            raise
        if got == 1:
            self._conn = conn
            return True
        conn.close()
        return False

    def still_held(self) -> bool:
        if self._conn is None:
            return False
        try:
            held = self._conn.execute(text(self.HELD), self.params).scalar()
            self._conn.commit()
            return held == 1
        except SQLAlchemyError:
            self._drop()
            return False

    def release(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.execute(text(self.RELEASE), self.params)
            self._conn.commit()
        except SQLAlchemyError:
            pass  # the server drops the lock with the connection anyway
        self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.invalidate()  # never hand a lock-holding connection back to the pool
                self._conn.close()
            except SQLAlchemyError:
                pass
            self._conn = None


class FileLock(SyncLock):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)
        self._fd: int | None = None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)  # private, like the database beside it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def still_held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class ProcessLock(SyncLock):
    """For in-memory SQLite, which no other process can see anyway."""

    _locks: dict[str, threading.Lock] = {}

    def __init__(self, key: str) -> None:
        self.name = key
        self._lock = self._locks.setdefault(key, threading.Lock())
        self._held = False

    def acquire(self) -> bool:
        if not self._held:
            self._held = self._lock.acquire(blocking=False)
        return self._held

    def still_held(self) -> bool:
        return self._held

    def release(self) -> None:
        if self._held:
            self._lock.release()
            self._held = False


def file_lock(engine: Engine, table: str) -> SyncLock:
    """SQLite's: a file beside the database, or a lock in this process for an in-memory one."""
    database = make_url(engine.url).database
    if database in (None, "", ":memory:"):
        return ProcessLock(f"memory:{table}")
    # The file's real path: the same database reached through a symlink or a relative path is one lock.
    return FileLock(Path(f"{os.path.realpath(database)}.{table}.lock"))
