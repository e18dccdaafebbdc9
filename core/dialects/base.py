"""What a target database must provide, and the defaults most of them share.

A dialect module subclasses ``Dialect`` and is listed in ``core.dialects.MODULES``
under each SQLAlchemy backend name it serves. It must provide:

- ``name``, ``backends``, ``drivers``, ``driver_module``, ``url_example``,
  ``install_hint``: the URLs it takes; the first driver is used when a URL
  names none, and the hint says how to install a missing driver (``check_url``);
- ``create_engine(url)``: the engine and the settings of each new session
  (UTC, strictness, timeouts);
- ``id_type`` and ``id_to_db``: how document ids are stored, so that case,
  trailing spaces and 1,500-byte ids stay distinct, and ``id_text`` how one
  reads as text where it is searched; ``timestamp_type``,
  ``long_text_type``, ``serial_id_type``, ``table_options`` and
  ``prefix_index`` where its column types or DDL differ from the defaults;
- ``statement``: the verb and tail of a multi-row insert, upsert or
  insert-ignore (``ON CONFLICT`` here, which SQLite and PostgreSQL share);
- ``read_limits`` and ``param_bytes``: the most one statement may carry, in
  parameters and bytes (read once per connection), and what one value adds;
  ``limit_hint`` says how to raise the byte limit, where a server has one;
- ``unstorable``: a value of a row it cannot hold, and why;
- ``make_lock``: the sync lock, checked by ``still_held()`` before each commit;
- ``error_text`` and ``describe_error``: a driver error in plain words
  (refused connection, wrong password, missing database, missing grant).

Then tests/servers.py starts a throwaway server of it and tests/conftest.py
adds it as a ``target_url`` parameter, which runs the integration suites on it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import ColumnElement, String, Table, type_coerce
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import TypeEngine

from ..errors import ConfigError, TargetError
from ..lock import SyncLock

# Firestore's limit, and so the widest id any target must keep exact.
MAX_ID_BYTES = 1500
# Where a server sets no byte limit of its own: what one statement may carry, to bound memory.
DEFAULT_STATEMENT_BYTES = 256 * 1024 * 1024
_LIMITS_KEY = "empsync.statement_limits"


@dataclass(frozen=True)
class Limits:
    """The most one statement may carry on a connection: placeholders, and bytes, its text included."""

    params: int
    bytes: int


class Dialect:
    name: ClassVar[str]
    backends: ClassVar[tuple[str, ...]]
    drivers: ClassVar[tuple[str, ...]]
    driver_module: ClassVar[str]  # what to import to know the first driver is installed
    url_example: ClassVar[str]
    install_hint: ClassVar[str] = ""
    limit_hint: ClassVar[str] = ""  # how to raise the statement size limit, after "carries N bytes"

    id_type: ClassVar[TypeEngine[Any]] = String(MAX_ID_BYTES)  # text, or bytes where ids compare as bytes
    # None: SQLAlchemy's own type does (DateTime keeps microseconds, Text, BigInteger).
    timestamp_type: ClassVar[TypeEngine[datetime] | None] = None
    long_text_type: ClassVar[TypeEngine[str] | None] = None
    serial_id_type: ClassVar[TypeEngine[int] | None] = None
    table_options: ClassVar[Mapping[str, Any]] = {}

    # -- URLs and engines ------------------------------------------------------

    def check_url(self, url: URL) -> None:
        """Refuse a driver empsync does not use, or one that is not installed (exit 2, naming the fix)."""
        driver = driver_named(url)
        if driver is not None and driver not in self.drivers:
            raise ConfigError(
                "target.url",
                f"driver {driver!r} is not supported for {self.name}",
                f"use {self.url_example}",
            )
        try:
            importlib.import_module(self.driver_module)
        except ImportError:
            raise ConfigError(
                "target.url",
                f"{self.name} needs the {self.driver_module} driver, which is not installed",
                self.install_hint,
            ) from None

    def engine_url(self, url: URL) -> URL:
        """The URL with its driver named: one that names none gets ours, not SQLAlchemy's default."""
        if driver_named(url) is None:
            return url.set(drivername=f"{url.get_backend_name()}+{self.drivers[0]}")
        return url

    def create_engine(self, url: URL) -> Engine:
        raise NotImplementedError

    # -- column types ----------------------------------------------------------

    def id_to_db(self, doc_id: str) -> Any:
        """A document id as its column takes it (binary columns take its UTF-8 bytes)."""
        return doc_id

    def id_text(self, column: ColumnElement[Any]) -> ColumnElement[str]:
        """A document id column read as text, for matching by text (in any case) rather than byte for byte."""
        return type_coerce(column, String())

    def prefix_index(self, length: int) -> dict[str, Any]:
        """Options of an index on the first ``length`` characters of a column, where the database has them."""
        return {}

    # -- statements ------------------------------------------------------------

    def statement(self, conn: Connection, table: Table, update: Sequence[str] | None) -> tuple[str, str]:
        """The verb and the tail of a multi-row INSERT.

        ``update`` None: a plain insert; empty: skip rows whose key exists;
        else set those columns on them.
        """
        if update is None:
            return "INSERT INTO", ""
        quote = conn.dialect.identifier_preparer.quote
        key = ", ".join(quote(c.name) for c in table.primary_key.columns)
        if not update:
            return "INSERT INTO", f" ON CONFLICT ({key}) DO NOTHING"
        sets = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in update)
        return "INSERT INTO", f" ON CONFLICT ({key}) DO UPDATE SET {sets}"

    def limits(self, conn: Connection) -> Limits:
        """The statement limits of this connection, read from the server once per connection."""
        info = conn.info
        found = info.get(_LIMITS_KEY)
        if found is None:
            found = info[_LIMITS_KEY] = self.read_limits(conn)
        return found

    def read_limits(self, conn: Connection) -> Limits:
        raise NotImplementedError

    def param_bytes(self, value: Any) -> int:
        """An upper bound of what one bound parameter adds to a statement, in bytes."""
        if value is None:
            return 4
        kind = value.__class__
        if kind is str:
            n = len(value)
            # Up to 4 bytes a character; past a few KB it pays to count exactly.
            return 4 * n if n < 4096 else len(value.encode("utf-8", "surrogatepass"))
        if kind is bytes:
            return len(value)
        return 32  # numbers, booleans, dates and times

    def unstorable(self, values: Mapping[str, Any]) -> tuple[str, str] | None:
        """A column of a row whose value this database cannot hold, and why; None when it can hold them all."""
        return None

    # -- the sync lock ---------------------------------------------------------

    def make_lock(self, engine: Engine, table: str) -> SyncLock:
        raise NotImplementedError

    # -- errors ----------------------------------------------------------------

    def error_text(self, exc: DBAPIError) -> str:
        """The driver's own message, on one line (never SQLAlchemy's, which appends the parameters)."""
        return " ".join(str(exc.orig).split())

    def describe_error(self, exc: DBAPIError, where: str, text: str) -> TargetError | None:
        """A driver error in plain words, or None for the generic wording."""
        return None


def driver_named(url: URL) -> str | None:
    """The driver a URL names (``mysql+pymysql``), or None (``mysql``)."""
    _, plus, driver = url.drivername.partition("+")
    return driver if plus else None


# The wording every server shares; each dialect decides which of its errors is which.


def unreachable(where: str, text: str) -> TargetError:
    return TargetError(
        f"database unreachable: {where} ({text})", "start the server or fix [target] url; the next run retries"
    )


def login_refused(text: str) -> TargetError:
    return TargetError(
        f"database refused the login: {text}", "check the user and password in [target] url or EMPSYNC_TARGET_URL"
    )


def no_database(text: str, create: str) -> TargetError:
    return TargetError(f"database does not exist: {text}", f"create it ({create}) or fix [target] url")


def permission_denied(text: str, grant: str) -> TargetError:
    return TargetError(f"database permission denied: {text}", grant)
