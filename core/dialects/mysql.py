"""MySQL and MariaDB through PyMySQL.

- Ids are VARBINARY: every character collation either folds case or ignores
  trailing spaces, and a 1,500-byte id in utf8mb4 does not fit an index.
- Times are DATETIME(6): plain DATETIME drops the microseconds.
- Sessions are strict and in UTC, so a bad value fails instead of being cut.
- PyMySQL puts the values into the statement's text, which the server takes
  only up to ``max_allowed_packet``: statements are split below it, and a row
  that alone is larger becomes a reject (the server would drop the connection).
- The sync lock is ``GET_LOCK`` on a connection of its own.
"""

from __future__ import annotations

import hashlib
import typing
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Table, cast, create_engine, event
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects.mysql.base import MySQLDialect
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry

from ..errors import TargetError
from ..lock import ConnectionLock, SyncLock
from .base import (
    MAX_ID_BYTES,
    Dialect,
    Limits,
    login_refused,
    no_database,
    permission_denied,
    unreachable,
)

SESSION = "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ENGINE_SUBSTITUTION', time_zone = '+00:00'"
UNREACHABLE = {2002, 2003, 2005, 2006, 2013, 2014, 2055}
# Bytes PyMySQL escapes with a backslash: each takes two in the statement.
_ESCAPED = ("\\", "'", '"', "\0", "\n", "\r", "\x1a")
PACKET_HEADER = 64  # the protocol's own bytes around a statement, with room to spare
MAX_PARAMS = 30_000  # the server's own limit is 65,535 placeholders; text statements have none, this bounds memory


class MySQLLock(ConnectionLock):
    TRY = "SELECT GET_LOCK(:n, 0)"
    HELD = "SELECT IS_USED_LOCK(:n) = CONNECTION_ID()"
    RELEASE = "SELECT RELEASE_LOCK(:n)"


def lock_name(engine: Engine, table: str) -> str:
    name = f"empsync:{engine.url.database or ''}.{table}"
    if len(name) > 64:  # MySQL's limit for lock names
        name = "empsync:" + hashlib.sha1(name.encode()).hexdigest()
    return name


class MySQL(Dialect):
    name = "MySQL/MariaDB"
    backends = ("mysql", "mariadb")
    drivers = ("pymysql",)
    driver_module = "pymysql"
    url_example = "mysql+pymysql://user:password@host/db"
    id_type = mysql.VARBINARY(MAX_ID_BYTES)
    timestamp_type = mysql.DATETIME(fsp=6)
    long_text_type = mysql.LONGTEXT()
    table_options = {"mysql_charset": "utf8mb4", "mysql_engine": "InnoDB"}
    limit_hint = " (raise the server's max_allowed_packet)"

    def create_engine(self, url: URL) -> Engine:
        engine = create_engine(
            url,
            pool_pre_ping=True,
            pool_recycle=1800,
            connect_args={"connect_timeout": 5, "read_timeout": 120, "write_timeout": 120, "charset": "utf8mb4"},
        )

        @event.listens_for(engine, "connect")
        def _session(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:  # PyMySQL ships no types
            with dbapi_conn.cursor() as cursor:
                cursor.execute(SESSION)

        return engine

    def id_to_db(self, doc_id: str) -> Any:
        return doc_id.encode("utf-8", "surrogatepass")

    def id_text(self, column: ColumnElement[Any]) -> ColumnElement[str]:
        return cast(column, mysql.CHAR(charset="utf8mb4"))

    def prefix_index(self, length: int) -> dict[str, Any]:
        return {"mysql_length": length}

    def statement(self, conn: Connection, table: Table, update: Sequence[str] | None) -> tuple[str, str]:
        if update is None:
            return "INSERT INTO", ""
        if not update:
            return "INSERT IGNORE INTO", ""
        dialect = typing.cast(MySQLDialect, conn.dialect)  # typed as any dialect; this one serves MySQL only
        quote = dialect.identifier_preparer.quote
        # MySQL 8.0.20+ deprecates VALUES(col) for a row alias; MariaDB knows only VALUES(col).
        version = dialect.server_version_info or ()
        if not dialect.is_mariadb and version >= (8, 0, 20):
            return "INSERT INTO", " AS new ON DUPLICATE KEY UPDATE " + ", ".join(
                f"{quote(c)} = new.{quote(c)}" for c in update
            )
        return "INSERT INTO", " ON DUPLICATE KEY UPDATE " + ", ".join(
            f"{quote(c)} = VALUES({quote(c)})" for c in update
        )

    def read_limits(self, conn: Connection) -> Limits:
        packet = int(conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar_one())
        return Limits(params=MAX_PARAMS, bytes=packet - PACKET_HEADER)

    def param_bytes(self, value: Any) -> int:
        kind = value.__class__
        if kind is str:  # the class, not isinstance: this runs for every value bound
            text: str = value
            n = len(text)
            if n < 4096:
                return 4 * n + 2  # quoted; at most 4 bytes a character, escapes included
            return len(text.encode("utf-8", "surrogatepass")) + sum(map(text.count, _ESCAPED)) + 2
        if kind is bytes:
            return 2 * len(value) + 10  # _binary'…', every byte escaped at worst
        return super().param_bytes(value)

    def make_lock(self, engine: Engine, table: str) -> SyncLock:
        name = lock_name(engine, table)
        return MySQLLock(engine, name, {"n": name})

    def error_text(self, exc: DBAPIError) -> str:
        args: tuple[Any, ...] = getattr(exc.orig, "args", ())
        return str(args[1]) if len(args) > 1 and isinstance(args[0], int) else super().error_text(exc)

    def describe_error(self, exc: DBAPIError, where: str, text: str) -> TargetError | None:
        args = getattr(exc.orig, "args", ())
        code = args[0] if args and isinstance(args[0], int) else None
        if code in UNREACHABLE or exc.connection_invalidated:
            return unreachable(where, text)
        if code == 1045:
            return login_refused(text)
        if code == 1049:
            return no_database(text, "CREATE DATABASE …")
        if code in (1044, 1142, 1227):
            return permission_denied(text, "grant the user SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER")
        if code in (1153, 1301):  # a packet or a value above max_allowed_packet
            return TargetError(
                f"a statement exceeds the server's max_allowed_packet: {text}",
                "raise max_allowed_packet on the server; the next run retries",
            )
        return None


DIALECT = MySQL()
