"""The target database: engine set-up, the upsert statement, and errors in plain words.

This is the one place that knows MySQL/MariaDB from SQLite (besides the
column types in ``schema``): session settings, the upsert clause, and how each
driver reports an unreachable server or a wrong password.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from operator import itemgetter
from typing import Any

from sqlalchemy import Table, create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from .config import Config, mask_url
from .errors import TargetError
from .schema import Tables

# Keep multi-row statements under SQLite's and MySQL's placeholder limits.
MAX_PARAMS_PER_STATEMENT = 30_000

MYSQL_UNREACHABLE = {2002, 2003, 2005, 2006, 2013, 2014, 2055}
MYSQL_SESSION = "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ENGINE_SUBSTITUTION', time_zone = '+00:00'"


def is_mysql(engine_or_conn: Engine | Connection) -> bool:
    return engine_or_conn.dialect.name in ("mysql", "mariadb")


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _create_private(parsed.database, uri=bool(parsed.query.get("uri")))
        engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_session(dbapi_conn, _record) -> None:
            cursor = dbapi_conn.cursor()
            # WAL lets `empsync status` read while a sync writes.
            if parsed.database not in (None, "", ":memory:"):
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine

    engine = create_engine(
        parsed,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5, "read_timeout": 120, "write_timeout": 120, "charset": "utf8mb4"},
    )

    @event.listens_for(engine, "connect")
    def _mysql_session(dbapi_conn, _record) -> None:
        with dbapi_conn.cursor() as cursor:
            cursor.execute(MYSQL_SESSION)

    return engine


def _create_private(path: str | None, uri: bool) -> None:
    """Create a new SQLite file 0600: it holds employee records. Its -wal and -shm files take its mode."""
    if path in (None, "", ":memory:") or uri:
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass  # an existing database keeps the mode its owner gave it
    except OSError:
        pass  # a missing folder: SQLite's own error names it when connecting


def upsert(conn: Connection, table: Table, rows: Sequence[dict[str, Any]], update: Sequence[str]) -> None:
    """Insert rows, or set ``update`` columns on the ones whose key exists, in multi-row statements.

    Built by hand as one statement per chunk rather than left to the driver's
    executemany, which PyMySQL does not batch for every upsert form. The SQL
    text is ours too: SQLAlchemy's multi-row ``values()`` compiles every
    placeholder anew on every call, which cost more than the round trip.
    Every row must have the keys of the first.
    """
    _insert_many(conn, table, rows, _conflict_clause(conn, table, update), ignore=not update)


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Plain multi-row INSERTs (audit rows); every row must have the keys of the first."""
    _insert_many(conn, table, rows, "", ignore=False)


def _insert_many(conn: Connection, table: Table, rows: Sequence[dict[str, Any]], tail: str, ignore: bool) -> None:
    if not rows:
        return
    dialect = conn.dialect
    quote = dialect.identifier_preparer.quote
    columns = list(rows[0])
    processors = [table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns]
    mark = _placeholder(dialect.paramstyle)
    group = "(" + ", ".join([mark] * len(columns)) + ")"
    verb = "INSERT IGNORE INTO" if ignore and is_mysql(conn) else "INSERT INTO"
    head = f"{verb} {dialect.identifier_preparer.format_table(table)} ({', '.join(quote(c) for c in columns)}) VALUES "
    per_statement = max(1, MAX_PARAMS_PER_STATEMENT // len(columns))
    values_of = itemgetter(*columns) if len(columns) > 1 else lambda row: (row[columns[0]],)
    processed = [(i, process) for i, process in enumerate(processors) if process is not None]
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        params: list[Any] = []
        for row in chunk:
            values = values_of(row)
            if processed:
                values = list(values)
                for i, process in processed:
                    if values[i] is not None:
                        values[i] = process(values[i])
            params.extend(values)
        conn.exec_driver_sql(head + ", ".join([group] * len(chunk)) + tail, tuple(params))


def _placeholder(paramstyle: str) -> str:
    if paramstyle == "qmark":
        return "?"
    if paramstyle in ("format", "pyformat"):
        return "%s"
    raise TargetError(f"unsupported driver parameter style {paramstyle!r}")


def _conflict_clause(conn: Connection, table: Table, update: Sequence[str]) -> str:
    quote = conn.dialect.identifier_preparer.quote
    if is_mysql(conn):
        if not update:
            return ""  # INSERT IGNORE
        # MySQL 8.0.20+ deprecates VALUES(col) for a row alias; MariaDB knows only VALUES(col).
        version = conn.dialect.server_version_info or ()
        if not conn.dialect.is_mariadb and version >= (8, 0, 20):
            return " AS new ON DUPLICATE KEY UPDATE " + ", ".join(f"{quote(c)} = new.{quote(c)}" for c in update)
        return " ON DUPLICATE KEY UPDATE " + ", ".join(f"{quote(c)} = VALUES({quote(c)})" for c in update)
    key = ", ".join(quote(c.name) for c in table.primary_key.columns)
    if not update:
        return f" ON CONFLICT ({key}) DO NOTHING"
    return f" ON CONFLICT ({key}) DO UPDATE SET " + ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in update)


class Database:
    """An engine plus empsync's tables on it."""

    def __init__(self, config: Config, engine: Engine | None = None) -> None:
        self.config = config
        self.url_masked = mask_url(config.target.url)
        self.engine = engine or make_engine(config.target.url)
        self.tables = Tables(config)
        self._schema_ready = False

    def ensure_schema(self) -> None:
        if not self._schema_ready:
            with translate_errors(self.url_masked):
                self.tables.ensure(self.engine)
            self._schema_ready = True

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """One transaction, with driver errors turned into ``TargetError``."""
        with translate_errors(self.url_masked), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with translate_errors(self.url_masked), self.engine.connect() as conn:
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()


@contextmanager
def translate_errors(where: str) -> Iterator[None]:
    try:
        yield
    except DBAPIError as exc:
        raise describe_db_error(exc, where) from None
    except SQLAlchemyError as exc:
        # Never str(exc): SQLAlchemy appends the statement and its parameters.
        raise TargetError(f"database error on {where}: {type(exc).__name__}") from None


def describe_db_error(exc: DBAPIError, where: str) -> TargetError:
    orig = exc.orig
    args = getattr(orig, "args", ())
    code = args[0] if args and isinstance(args[0], int) else None
    text = str(args[1]) if len(args) > 1 else str(orig)
    if code in MYSQL_UNREACHABLE or exc.connection_invalidated:
        return TargetError(
            f"database unreachable: {where} ({text})", "start the server or fix [target] url; the next run retries"
        )
    if code == 1045:
        return TargetError(
            f"database refused the login: {text}", "check the user and password in [target] url or EMPSYNC_TARGET_URL"
        )
    if code == 1049:
        return TargetError(f"database does not exist: {text}", "create it (CREATE DATABASE …) or fix [target] url")
    if code in (1044, 1142, 1227):
        return TargetError(
            f"database permission denied: {text}", "grant the user SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER"
        )
    if "unable to open database file" in text:
        return TargetError(f"cannot open the SQLite file {where}", "check the folder exists and is writable")
    if "database is locked" in text:
        return TargetError(
            f"SQLite database is locked: {where}", "another process holds a long write; the next run retries"
        )
    return TargetError(f"database error on {where}: {text[:300]}")
