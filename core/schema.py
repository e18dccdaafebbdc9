"""The tables empsync owns and the column types behind them.

Where a database stores a kind of column its own way (document ids compared
byte for byte, timestamps with microseconds, long text), its dialect module
in ``core.dialects`` says how; the types here ask it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    text,
)
from sqlalchemy.engine import Dialect as SADialect
from sqlalchemy.engine import Engine
from sqlalchemy.schema import DefaultClause
from sqlalchemy.sql import sqltypes
from sqlalchemy.types import TypeDecorator, TypeEngine

from . import dialects
from .config import (
    DELETED_AT_COLUMN,
    HASH_COLUMN,
    SYNCED_AT_COLUMN,
    UPDATE_TIME_COLUMN,
    Config,
)
from .dialects.base import MAX_ID_BYTES
from .errors import SchemaError
from .mapping import FieldSpec

T = TypeVar("T")


class DocumentId(TypeDecorator[str]):
    """A Firestore document id, compared byte for byte on every database."""

    impl = String(MAX_ID_BYTES)
    cache_ok = True

    def load_dialect_impl(self, dialect: SADialect) -> TypeEngine[Any]:
        return dialect.type_descriptor(dialects.of(dialect).id_type)

    def process_bind_param(self, value: str | None, dialect: SADialect) -> Any:
        return None if value is None else dialects.of(dialect).id_to_db(value)

    def process_result_value(self, value: Any, dialect: SADialect) -> str | None:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value).decode("utf-8", "surrogatepass")
        return cast(str | None, value)


def _per_dialect(default: TypeEngine[T], kind: str) -> TypeEngine[T]:
    """``default``, or the type each dialect gives for this kind of column where it differs."""
    chosen = default
    for dialect in dialects.registered():
        own = getattr(dialect, kind)
        if own is not None:
            chosen = chosen.with_variant(own, *dialect.backends)
    return chosen


def Timestamp() -> TypeEngine[datetime]:  # noqa: N802 - reads like the type it makes
    """Naive UTC datetimes with microseconds."""
    return _per_dialect(DateTime(), "timestamp_type")


def LongText() -> TypeEngine[str]:  # noqa: N802
    return _per_dialect(Text(), "long_text_type")


def column_type(spec: FieldSpec) -> TypeEngine[Any]:
    makers: dict[str, Callable[[], TypeEngine[Any]]] = {
        "string": lambda: String(spec.max_length),
        "text": LongText,
        "integer": BigInteger,
        "float": Double,
        "boolean": Boolean,
        "datetime": Timestamp,
        "date": Date,
        "json": LongText,
    }
    return makers[spec.type]()


# Which reflected column types each field type can live in.
COMPATIBLE: dict[str, tuple[type, ...]] = {
    "string": (sqltypes.String,),
    "text": (sqltypes.String,),
    "json": (sqltypes.String,),
    "integer": (sqltypes.Integer,),
    "float": (sqltypes.Float, sqltypes.Numeric),
    "boolean": (sqltypes.Boolean, sqltypes.Integer),  # MySQL reflects BOOLEAN as TINYINT(1)
    "datetime": (sqltypes.DateTime,),
    "date": (sqltypes.Date,),
}

# Each dialect's table options (MySQL: utf8mb4, InnoDB); a database ignores the others'.
TABLE_OPTIONS = {k: v for dialect in dialects.registered() for k, v in dialect.table_options.items()}

BigId = _per_dialect(BigInteger(), "serial_id_type")


def prefix_index(length: int) -> dict[str, Any]:
    """Index options that keep only a prefix of a column, where a database has them."""
    return {k: v for dialect in dialects.registered() for k, v in dialect.prefix_index(length).items()}


class Tables:
    """The mirror table built from the configuration, plus empsync's own tables."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.metadata = MetaData()
        target = config.target
        self.mirror = Table(
            target.table,
            self.metadata,
            Column(target.id_column, DocumentId(), primary_key=True),
            *(Column(spec.column, column_type(spec), nullable=True) for spec in config.fields),
            Column(UPDATE_TIME_COLUMN, Timestamp(), nullable=True),
            Column(SYNCED_AT_COLUMN, Timestamp(), nullable=False),
            Column(DELETED_AT_COLUMN, Timestamp(), nullable=True),
            Column(HASH_COLUMN, String(32), nullable=False),
            **TABLE_OPTIONS,
        )
        self.runs = Table(
            "empsync_runs",
            self.metadata,
            Column("id", BigId, primary_key=True, autoincrement=True),
            Column("started_at", Timestamp(), nullable=False),
            Column("finished_at", Timestamp()),
            Column("kind", String(16), nullable=False),  # normal | force | listen
            Column("trigger", String(32), nullable=False),  # cli | schedule | api | console | ...
            Column("status", String(16), nullable=False),  # running | ok | failed | interrupted
            Column("fetched", Integer, nullable=False, default=0),
            Column("inserted", Integer, nullable=False, default=0),
            Column("updated", Integer, nullable=False, default=0),
            Column("restored", Integer, nullable=False, default=0),
            Column("deleted", Integer, nullable=False, default=0),
            Column("unchanged", Integer, nullable=False, default=0),
            Column("stale", Integer, nullable=False, default=0),
            Column("repaired", Integer, nullable=False, default=0, server_default="0"),
            Column("rejected", Integer, nullable=False, default=0),
            Column("firestore_reads", Integer, nullable=False, default=0),
            Column("naive_reads", Integer, nullable=False, default=0),
            Column("duration_ms", Integer),
            Column("message", Text),
            Column("host", String(255)),
            Column("pid", Integer),
            Column("target_table", String(64)),  # the mirror table it wrote (a rollback keeps to it)
            Index("ix_empsync_runs_started", "started_at"),
            **TABLE_OPTIONS,
        )
        self.changes = Table(
            "empsync_changes",
            self.metadata,
            Column("id", BigId, primary_key=True, autoincrement=True),
            Column("run_id", BigInteger, nullable=True),
            Column("changed_at", Timestamp(), nullable=False),
            Column("document_id", DocumentId(), nullable=False),
            Column("operation", String(16), nullable=False),
            Column("field", String(64)),
            Column("old_value", LongText()),
            Column("new_value", LongText()),
            # A prefix is enough to find a document's history; a 1,500-byte key
            # would make every audit insert pay for a wide index entry.
            Index("ix_empsync_changes_document", "document_id", **prefix_index(64)),
            Index("ix_empsync_changes_changed_at", "changed_at"),
            **TABLE_OPTIONS,
        )
        self.rejects = Table(
            "empsync_rejects",
            self.metadata,
            Column("document_id", DocumentId(), primary_key=True),
            Column("run_id", BigInteger),
            Column("rejected_at", Timestamp(), nullable=False),
            Column("field", String(1500)),
            Column("reason", Text, nullable=False),
            Column("firestore_update_time", Timestamp()),
            **TABLE_OPTIONS,
        )
        self.holds = Table(
            "empsync_holds",
            self.metadata,
            Column("document_id", DocumentId(), primary_key=True),
            Column("run_id", BigInteger),  # the rollback that holds it
            Column("held_at", Timestamp(), nullable=False),
            **TABLE_OPTIONS,
        )
        # Listen mode's write-to-row lag, per hour and listen session: that hour's percentiles.
        self.lag = Table(
            "empsync_lag",
            self.metadata,
            Column("hour", Timestamp(), primary_key=True),
            Column("run_id", BigInteger, primary_key=True, autoincrement=False),
            Column("samples", Integer, nullable=False),
            Column("p50_ms", Integer, nullable=False),
            Column("p95_ms", Integer, nullable=False),
            Column("max_ms", Integer, nullable=False),
            **TABLE_OPTIONS,
        )
        self.state = Table(
            "empsync_state",
            self.metadata,
            Column("key", String(64), primary_key=True),
            Column("value", Text),
            Column("updated_at", Timestamp(), nullable=False),
            **TABLE_OPTIONS,
        )
        # Runs asked of the leading service by other processes (core/requests.py).
        self.requests = Table(
            "empsync_requests",
            self.metadata,
            Column("id", BigId, primary_key=True, autoincrement=True),
            Column("kind", String(16), nullable=False),  # normal | force | ids | rollback; open to more
            Column("payload", LongText()),  # JSON: the kind's arguments (allow_mass_delete, ...)
            Column("trigger", String(32), nullable=False),  # the face that asked: console | cli | api
            Column("requested_by", String(255), nullable=False),  # host:pid
            Column("requested_at", Timestamp(), nullable=False),
            Column("status", String(16), nullable=False),  # queued | claimed | running | done | failed | expired
            Column("claimed_by", String(255)),
            Column("claimed_at", Timestamp()),
            Column("run_id", BigInteger),
            Column("exit_code", Integer),
            Column("result", LongText()),  # JSON: the run's result, as `empsync sync --json` prints it
            Column("finished_at", Timestamp()),
            Index("ix_empsync_requests_status", "status", "id"),
            **TABLE_OPTIONS,
        )
        # The leader's recent log lines, for the consoles of other processes (core/presence.py).
        self.log = Table(
            "empsync_log",
            self.metadata,
            Column("id", BigId, primary_key=True, autoincrement=True),
            Column("at", Timestamp(), nullable=False),
            Column("service", String(255), nullable=False),  # host:pid of the process that logged it
            Column("level", String(16), nullable=False),
            Column("logger", String(100), nullable=False),
            Column("text", Text, nullable=False),
            **TABLE_OPTIONS,
        )

    @property
    def id(self) -> Column[Any]:
        return self.mirror.c[self.config.target.id_column]

    @property
    def mapped_columns(self) -> list[str]:
        return [spec.column for spec in self.config.fields]

    def ensure(self, engine: Engine) -> None:
        """Create what is missing; add new mapped columns; refuse incompatible ones."""
        self.metadata.create_all(engine, checkfirst=True)
        existing = {c["name"].lower(): c for c in inspect(engine).get_columns(self.mirror.name)}
        id_column = existing.get(self.config.target.id_column.lower())
        if id_column is None:
            raise SchemaError(
                f"table {self.mirror.name} exists without the id column {self.config.target.id_column}",
                "point [target] table at a new table, or set [target] id_column to its key column",
            )
        missing = []
        for spec in self.config.fields:
            found = existing.get(spec.column.lower())
            if found is None:
                missing.append(self.mirror.c[spec.column])
            else:
                _check_compatible(self.mirror.name, spec, found["type"])
        for name in (UPDATE_TIME_COLUMN, SYNCED_AT_COLUMN, DELETED_AT_COLUMN, HASH_COLUMN):
            if name not in existing:
                raise SchemaError(
                    f"table {self.mirror.name} lacks the bookkeeping column {name}: it was not made by empsync",
                    "point [target] table at a new table name",
                )
        _add_columns(engine, self.mirror, missing)
        # empsync's own tables gain columns across versions (runs.repaired); each new one has a default.
        inspector = inspect(engine)
        for table in (self.runs,):
            have = {c["name"].lower() for c in inspector.get_columns(table.name)}
            _add_columns(engine, table, [c for c in table.columns if c.name.lower() not in have])


def _add_columns(engine: Engine, table: Table, columns: list[Column[Any]]) -> None:
    if not columns:
        return
    preparer = engine.dialect.identifier_preparer
    with engine.begin() as conn:
        for column in columns:
            ddl = column.type.compile(dialect=engine.dialect)
            default = column.server_default
            tail = f"NOT NULL DEFAULT {default.arg}" if isinstance(default, DefaultClause) else "NULL"
            conn.execute(
                text(
                    f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {preparer.format_column(column)} {ddl} {tail}"
                )
            )


def _check_compatible(table: str, spec: FieldSpec, reflected: TypeEngine[Any]) -> None:
    if not isinstance(reflected, COMPATIBLE[spec.type]):
        raise SchemaError(
            f"column {table}.{spec.column} is {reflected} but fields.{spec.path} is type {spec.type}",
            "change the field's type back, or migrate the column by hand (ALTER TABLE)",
        )
    length = getattr(reflected, "length", None)
    if spec.type == "string" and length is not None and length < spec.max_length:
        raise SchemaError(
            f"column {table}.{spec.column} holds {length} characters but fields.{spec.path} allows {spec.max_length}",
            f"widen it (ALTER TABLE {table} MODIFY {spec.column} VARCHAR({spec.max_length})) or lower max_length",
        )
