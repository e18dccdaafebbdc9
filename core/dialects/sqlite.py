"""SQLite, the embedded default: a file beside the service, locked with flock.

Its default BINARY collation already compares ids byte for byte, so they are
plain text. WAL lets ``empsync status`` read while a sync writes.
"""

from __future__ import annotations

import os
import sqlite3
from typing import cast

from sqlalchemy import Integer, create_engine, event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry

from ..errors import TargetError
from ..lock import SyncLock, file_lock
from .base import DEFAULT_STATEMENT_BYTES, Dialect, Limits


class SQLite(Dialect):
    name = "SQLite"
    backends = ("sqlite",)
    drivers = ("pysqlite",)
    driver_module = "sqlite3"
    url_example = "sqlite:///path/to/mirror.db"
    serial_id_type = Integer()  # SQLite autoincrements INTEGER PRIMARY KEY only

    def create_engine(self, url: URL) -> Engine:
        in_memory = url.database in (None, "", ":memory:")
        if url.database and not in_memory and not url.query.get("uri"):
            _create_private(url.database)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _session(dbapi_conn: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
            cursor = dbapi_conn.cursor()
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine

    def read_limits(self, conn: Connection) -> Limits:
        # The build's own placeholder limit (32,766 since 3.32, 999 before); values are bound, not in the text.
        # SQLAlchemy types the driver's connection as the generic DB-API; pysqlite's is sqlite3's own.
        raw = cast(sqlite3.Connection, conn.connection.dbapi_connection)
        params = raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        return Limits(params=params, bytes=min(DEFAULT_STATEMENT_BYTES, raw.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)))

    def make_lock(self, engine: Engine, table: str) -> SyncLock:
        return file_lock(engine, table)

    def describe_error(self, exc: DBAPIError, where: str, text: str) -> TargetError | None:
        if "unable to open database file" in text:
            return TargetError(f"cannot open the SQLite file {where}", "check the folder exists and is writable")
        if "database is locked" in text:
            return TargetError(
                f"SQLite database is locked: {where}", "another process holds a long write; the next run retries"
            )
        return None


def _create_private(path: str) -> None:
    """Create a new SQLite file 0600: it holds employee records. Its -wal and -shm files take its mode."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass  # an existing database keeps the mode its owner gave it
    except OSError:
        pass  # a missing folder: SQLite's own error names it when connecting


DIALECT = SQLite()
