"""PostgreSQL through psycopg 3.

- Ids are ``bytea``: the only type that holds every id Firestore accepts
  (U+0000 is valid in an id and ``text`` cannot hold it), compared byte for
  byte, with no collation to get wrong (case and trailing spaces kept, as
  MySQL's VARBINARY does); an index entry is the id's UTF-8 bytes, as with
  ``text``. ``convert_from(firestore_id, 'UTF8')`` reads one in psql.
- Times are ``timestamp without time zone`` (microseconds), naive UTC as on
  every target; sessions run in UTC with statement and lock timeouts.
- Upserts are ``INSERT … ON CONFLICT``, as SQLite's, with numbered ``$1``
  placeholders. psycopg binds values apart from the text, so a statement has
  no byte limit short of the protocol's gigabyte; it is split at 256 MB and
  by parameter count.
- A string holding U+0000 cannot be stored in ``text``: that document is a
  reject naming the field, rather than a batch that fails every run.
- The sync lock is a session advisory lock on a connection of its own, keyed
  by a stable 64-bit hash of the database and table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from sqlalchemy import ColumnElement, Text, case, create_engine, event, func, literal
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry

from ..errors import ConfigError, TargetError
from ..lock import ConnectionLock, SyncLock
from .base import DEFAULT_STATEMENT_BYTES, Dialect, Limits, login_refused, no_database, permission_denied, unreachable

# Committed, so that a rolled-back first transaction cannot undo them.
SESSION = "SET TIME ZONE 'UTC'; SET statement_timeout = '120s'; SET lock_timeout = '50s'"
MAX_PARAMS = 30_000  # below the protocol's 65,535 placeholders
GRANT_HINT = (
    "let the user create its tables: make it the database's owner, or GRANT USAGE, CREATE ON SCHEMA public; "
    "on tables another role made it needs SELECT, INSERT, UPDATE, DELETE and USAGE on their sequences"
)


class AdvisoryLock(ConnectionLock):
    TRY = "SELECT pg_try_advisory_lock(:key)::int"
    # A bigint key shows in pg_locks as its high and low 32 bits, in classid and objid.
    HELD = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted"
        " AND objsubid = 1 AND classid::bigint = :high AND objid::bigint = :low"
    )
    RELEASE = "SELECT pg_advisory_unlock(:key)"


def lock_key(database: str, table: str) -> int:
    """A stable signed 64-bit key for a table's lock, the same in every process and on every machine."""
    digest = hashlib.sha256(f"empsync:{database}.{table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgreSQL(Dialect):
    name = "PostgreSQL"
    backends = ("postgresql",)
    drivers = ("psycopg",)
    driver_module = "psycopg"
    url_example = "postgresql+psycopg://user:password@host/db"
    install_hint = "pip install 'empsync[postgresql]'"
    id_type = postgresql.BYTEA()

    def create_engine(self, url: URL) -> Engine:
        import psycopg

        engine = create_engine(
            url,
            pool_pre_ping=True,
            pool_recycle=1800,
            # PostgreSQL's own $1 placeholders, which psycopg's RawCursor sends as they are: its
            # default %s style is rewritten in Python for every long statement, most of an upsert's cost.
            paramstyle="numeric_dollar",
            connect_args={
                "cursor_factory": psycopg.RawCursor,
                "connect_timeout": 5,
                "application_name": "empsync",
                # A server that vanishes mid-query is noticed within a minute, not never.
                "keepalives": 1,
                "keepalives_idle": 30,
                "keepalives_interval": 10,
                "keepalives_count": 3,
            },
        )

        @event.listens_for(engine, "connect")
        def _session(dbapi_conn: psycopg.Connection[Any], _record: ConnectionPoolEntry) -> None:
            dbapi_conn.server_cursor_factory = psycopg.RawServerCursor  # streamed reads take $1 too
            dbapi_conn.execute(SESSION)
            dbapi_conn.commit()

        return engine

    def check_url(self, url: URL) -> None:
        super().check_url(url)
        if url.query:
            # psycopg passes any keyword on to libpq, which would refuse an unknown one only at connect.
            import psycopg

            try:
                psycopg.conninfo.make_conninfo("", **{k: str(v) for k, v in url.query.items()})
            except psycopg.ProgrammingError as exc:
                raise ConfigError(
                    "target.url", f"URL option: {exc}", "remove it, or see libpq's connection parameters"
                ) from None

    def id_to_db(self, doc_id: str) -> Any:
        return doc_id.encode("utf-8", "surrogatepass")

    def id_text(self, column: ColumnElement[Any]) -> ColumnElement[str]:
        # text cannot hold U+0000: such an id reads in escape form (its other characters as they are).
        has_nul = func.position(literal(b"\0", postgresql.BYTEA()).op("IN")(column)) > 0
        return case(
            (has_nul, func.encode(column, "escape", type_=Text())),
            else_=func.convert_from(column, "UTF8", type_=Text()),
        )

    def read_limits(self, conn: Connection) -> Limits:
        return Limits(params=MAX_PARAMS, bytes=DEFAULT_STATEMENT_BYTES)

    def unstorable(self, values: Mapping[str, Any]) -> tuple[str, str] | None:
        for column, value in values.items():
            if value.__class__ is str and "\0" in value:
                return column, "holds the character U+0000, which PostgreSQL text cannot store"
        return None

    def make_lock(self, engine: Engine, table: str) -> SyncLock:
        database = engine.url.database or ""
        key = lock_key(database, table)
        params = {"key": key, "high": (key >> 32) & 0xFFFFFFFF, "low": key & 0xFFFFFFFF}
        return AdvisoryLock(engine, f"empsync:{database}.{table} (advisory lock {key})", params)

    def error_text(self, exc: DBAPIError) -> str:
        text = super().error_text(exc)
        # libpq: 'connection failed: connection to server at "h", port 5432 failed: FATAL: password …'
        return text.rpartition("FATAL: ")[2] if "FATAL: " in text else text.removeprefix("connection failed: ")

    def describe_error(self, exc: DBAPIError, where: str, text: str) -> TargetError | None:
        # Errors at connect time carry no SQLSTATE: libpq's words are all there is.
        state = getattr(exc.orig, "sqlstate", None) or ""
        if state == "28P01" or "password authentication failed" in text:
            return login_refused(text)
        if state == "28000" or "no pg_hba.conf entry" in text or text.startswith('role "'):
            return login_refused(text)
        if state == "3D000" or (text.startswith('database "') and text.endswith("does not exist")):
            return no_database(text, "CREATE DATABASE … OWNER …")
        if state == "42501":
            return permission_denied(text, GRANT_HINT)
        connecting = not state and exc.orig.__class__.__name__ == "OperationalError"
        if state.startswith(("08", "57P")) or exc.connection_invalidated or connecting:
            return unreachable(where, text)
        return None


DIALECT = PostgreSQL()
