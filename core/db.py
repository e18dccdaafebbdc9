"""The target database: the engine, multi-row statements, and errors in plain words.

Nothing here knows which database it writes: what differs (session settings,
the upsert text, statement limits, error wording) is asked of the engine's
dialect in ``core.dialects``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from operator import itemgetter
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from . import dialects
from .config import Config, mask_url
from .dialects import Dialect
from .dialects.base import unreachable
from .errors import TargetError
from .schema import Tables


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    dialect = dialects.of(parsed)
    return dialect.create_engine(dialect.engine_url(parsed))


def upsert(conn: Connection, table: Table, rows: Sequence[dict[str, Any]], update: Sequence[str]) -> None:
    """Insert rows, or set ``update`` columns on the ones whose key exists, in multi-row statements.

    Built by hand as one statement per chunk rather than left to the driver's
    executemany, which PyMySQL does not batch for every upsert form. The SQL
    text is ours too: SQLAlchemy's multi-row ``values()`` compiles every
    placeholder anew on every call, which cost more than the round trip.
    An empty ``update`` skips the rows whose key exists. Every row must have
    the keys of the first.
    """
    _insert_many(conn, table, rows, update)


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Plain multi-row INSERTs (audit rows); every row must have the keys of the first."""
    _insert_many(conn, table, rows, None)


def _insert_many(conn: Connection, table: Table, rows: Sequence[dict[str, Any]], update: Sequence[str] | None) -> None:
    """Chunks under the connection's limits: so many parameters, so many bytes (MySQL's max_allowed_packet)."""
    if not rows:
        return
    dialect = conn.dialect
    ours = dialects.of(dialect)
    quote = dialect.identifier_preparer.quote
    columns = list(rows[0])
    processors = [table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns]
    verb, tail = ours.statement(conn, table, update)
    head = f"{verb} {dialect.identifier_preparer.format_table(table)} ({', '.join(quote(c) for c in columns)}) VALUES "
    limits = ours.limits(conn)
    per_statement = max(1, limits.params // len(columns))
    room = limits.bytes - len(head) - len(tail)
    size_of = ours.param_bytes
    values_of = itemgetter(*columns) if len(columns) > 1 else lambda row: (row[columns[0]],)
    processed = [(i, process) for i, process in enumerate(processors) if process is not None]

    group_bytes = 10 * len(columns) + 4  # "($123456, …), " at most
    params: list[Any] = []
    count = size = 0

    def flush() -> None:
        conn.exec_driver_sql(head + _values(dialect.paramstyle, len(columns), count) + tail, tuple(params))

    for row in rows:
        values = values_of(row)
        if processed:
            values = list(values)
            for i, process in processed:
                if values[i] is not None:
                    values[i] = process(values[i])
        row_size = group_bytes + sum(map(size_of, values))
        if row_size > room:
            raise _too_large(table, columns, values, row_size, room, ours)
        if count and (count == per_statement or size + row_size > room):
            flush()
            params, count, size = [], 0, 0
        params.extend(values)
        count += 1
        size += row_size
    flush()


def _too_large(
    table: Table, columns: list[str], values: Sequence[Any], size: int, room: int, ours: Dialect
) -> TargetError:
    """A row that no statement can carry: the store turns mirror rows like this into rejects first."""
    widest = max(range(len(columns)), key=lambda i: ours.param_bytes(values[i]))
    return TargetError(
        f"a row of {table.name} is too large to write: {size:,} bytes ({columns[widest]} the most) where one "
        f"statement on this server carries {max(room, 0):,}{ours.limit_hint}",
        "the next run retries",
    )


def _values(paramstyle: str, columns: int, rows: int) -> str:
    """The placeholders of a multi-row VALUES list, in the driver's style."""
    if paramstyle == "numeric_dollar":  # numbered: $1, $2, … (PostgreSQL's own; nothing to rewrite)
        return ", ".join(
            "(" + ", ".join(f"${n}" for n in range(row * columns + 1, row * columns + columns + 1)) + ")"
            for row in range(rows)
        )
    if paramstyle == "qmark":
        mark = "?"
    elif paramstyle in ("format", "pyformat"):
        mark = "%s"
    else:
        raise TargetError(f"unsupported driver parameter style {paramstyle!r}")
    return ", ".join(["(" + ", ".join([mark] * columns) + ")"] * rows)


class Database:
    """An engine plus empsync's tables on it."""

    def __init__(self, config: Config, engine: Engine | None = None) -> None:
        self.config = config
        self.url_masked = mask_url(config.target.url)
        self.engine = engine or make_engine(config.target.url)
        self.dialect = dialects.of(self.engine)
        self.tables = Tables(config)
        self._secret = make_url(config.target.url).password or ""
        self._schema_ready = False

    def ensure_schema(self) -> None:
        if not self._schema_ready:
            with self._translated():
                self.tables.ensure(self.engine)
            self._schema_ready = True

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """One transaction, with driver errors turned into ``TargetError``."""
        with self._translated(), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self._translated(), self.engine.connect() as conn:
            yield conn

    def _translated(self) -> AbstractContextManager[None]:
        return translate_errors(self.url_masked, self.dialect, self._secret)

    def dispose(self) -> None:
        self.engine.dispose()


@contextmanager
def translate_errors(where: str, dialect: Dialect, secret: str = "") -> Iterator[None]:
    try:
        yield
    except DBAPIError as exc:
        raise describe_db_error(exc, where, dialect, secret) from None
    except SQLAlchemyError as exc:
        # Never str(exc): SQLAlchemy appends the statement and its parameters.
        raise TargetError(f"database error on {where}: {type(exc).__name__}") from None


def describe_db_error(exc: DBAPIError, where: str, dialect: Dialect, secret: str = "") -> TargetError:
    text = dialect.error_text(exc)
    if len(secret) > 2:  # no driver here echoes the password; should one ever do, it stays hidden
        text = text.replace(secret, "***")
    found = dialect.describe_error(exc, where, text)
    if found is not None:
        return found
    if exc.connection_invalidated:
        return unreachable(where, text)
    return TargetError(f"database error on {where}: {text[:300]}")
