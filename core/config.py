"""sync.toml: loading, environment overrides and validation (its keys are a fixed contract, README).

Precedence is command line > environment > file > defaults. Every problem is a
``ConfigError`` that names the offending key, so ``empsync`` can exit 2 with a
message an operator can act on without reading code.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .conditions import Condition, load_conditions
from .errors import ConfigError
from .mapping import FieldSpec

# Validating patterns are used with fullmatch: ``$`` would also match before a final newline.
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# Firestore's limits for a field path: at most 1,500 bytes, no segment of the reserved __*__ form.
FIELD_PATH_MAX_BYTES = 1500
_RESERVED_SEGMENT = re.compile(r"__.*__", re.DOTALL)
_ASCII_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")  # 18 digits: more is out of every range
_EMULATOR_HOST = re.compile(r"[\w.\-\[\]:]+:[0-9]{1,5}", re.ASCII)
FIELD_TYPES = ("string", "text", "integer", "float", "boolean", "datetime", "date", "json")
DELETE_MODES = ("soft", "hard", "keep")
MODES = ("poll", "listen")
LISTEN_SCOPES = ("changes", "collection")
INTERVAL_MIN, INTERVAL_MAX = 10, 86_400

# Bookkeeping columns of the mirror table besides the id column (fixed names: scripts read them).
UPDATE_TIME_COLUMN = "firestore_update_time"
SYNCED_AT_COLUMN = "synced_at"
DELETED_AT_COLUMN = "deleted_at"
HASH_COLUMN = "content_hash"
BOOKKEEPING_COLUMNS = (UPDATE_TIME_COLUMN, SYNCED_AT_COLUMN, DELETED_AT_COLUMN, HASH_COLUMN)


@dataclass(frozen=True)
class SourceConfig:
    project: str = "demo-hr"
    database: str = "(default)"
    collection: str = "employees"
    credentials: str = ""
    emulator_host: str = ""
    updated_field: str = ""
    page_size: int = 2000
    # Seconds a Firestore call may keep retrying before the run fails.
    timeout: int = 60
    # The least margin a resume point keeps before the newest time seen; the measured commit lag widens it.
    watermark_margin_ms: int = 100
    # [[source.where]]: only documents meeting every condition are mirrored (core.conditions).
    where: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class TargetConfig:
    url: str = "sqlite:///employee_sync.db"
    table: str = "employees"
    id_column: str = "firestore_id"
    delete_mode: str = "soft"
    batch_size: int = 500
    # A run that would delete more than this fraction of the live rows deletes none (1.0: no guard).
    max_delete_fraction: float = 0.25


@dataclass(frozen=True)
class SyncConfig:
    enabled: bool = True
    interval: int = 300
    force_interval: int = 3600
    cache_timeout: int = 300
    mode: str = "poll"
    # What a listener watches with updated_field set: "changes" since the watermark (cheap
    # re-subscriptions; a deletion of an unchanged document waits for the force run) or the
    # whole "collection" (every deletion at once; each re-subscription reads every document).
    listen_scope: str = "changes"
    # Days of field-level history kept in empsync_changes; 0 keeps everything.
    audit_retention_days: int = 90
    # A verify that would cost more Firestore reads than this needs --yes.
    verify_max_reads: int = 50_000


@dataclass(frozen=True)
class ApiConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8765
    token: str = ""
    # With a token set, /metrics needs it too unless this is true (for a scraper that cannot send one).
    metrics_public: bool = False
    # Signs trigger requests (HMAC-SHA256) from a backend that holds no token (README: Signed triggers).
    webhook_secret: str = ""


@dataclass(frozen=True)
class NotifyConfig:
    """Who is told when syncing needs a person, and when (core/notify.py)."""

    webhook_urls: tuple[str, ...] = ()
    format: str = "json"
    smtp_url: str = ""
    email_to: tuple[str, ...] = ()
    email_from: str = ""
    failures_before_alert: int = 3
    lag_alert_seconds: int = 60
    # At most one message about new rejects per this many minutes; 0: none.
    reject_alert_minutes: int = 60
    # From EMPSYNC_SMTP_PASSWORD only: a password never sits in sync.toml.
    smtp_password: str = field(default="", repr=False)

    @property
    def receivers(self) -> int:
        return len(self.webhook_urls) + (1 if self.smtp_url and self.email_to else 0)


@dataclass(frozen=True)
class Config:
    source: SourceConfig = SourceConfig()
    target: TargetConfig = TargetConfig()
    sync: SyncConfig = SyncConfig()
    api: ApiConfig = ApiConfig()
    notify: NotifyConfig = NotifyConfig()
    fields: tuple[FieldSpec, ...] = ()
    path: str = ""
    # Where [sync] interval came from: "default", "file", "environment" or "command line".
    interval_source: str = "default"

    def field_by_column(self, column: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.column == column), None)

    @property
    def name_column(self) -> str | None:
        """The column that holds the employee's name, for display."""
        for candidate in ("name", "full_name", "display_name"):
            if self.field_by_column(candidate):
                return candidate
        return None


SECTIONS: dict[str, type] = {
    "source": SourceConfig,
    "target": TargetConfig,
    "sync": SyncConfig,
    "api": ApiConfig,
    "notify": NotifyConfig,
}
FIELD_KEYS = {"type", "required", "max_length", "column"}

# Environment variables and the key each overrides (the first three are the seed's).
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "FIRESTORE_REALTIME_ENABLED": ("sync", "enabled"),
    "EMPLOYEE_SYNC_INTERVAL": ("sync", "interval"),
    "FIRESTORE_CACHE_TIMEOUT": ("sync", "cache_timeout"),
    "EMPSYNC_TARGET_URL": ("target", "url"),
    "EMPSYNC_API_TOKEN": ("api", "token"),
    "FIRESTORE_EMULATOR_HOST": ("source", "emulator_host"),
    "EMPSYNC_WEBHOOK_SECRET": ("api", "webhook_secret"),
    "EMPSYNC_SMTP_PASSWORD": ("notify", "smtp_password"),
}
# Keys only the environment may set: secrets that must not sit in a file.
ENV_ONLY = {"notify.smtp_password": "EMPSYNC_SMTP_PASSWORD"}

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}


def config_path(cli_path: str | None, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(cli_path or env.get("EMPSYNC_CONFIG") or "sync.toml")


def load(
    cli_path: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Read, merge and validate the configuration.

    ``overrides`` holds command-line values as ``{"target.url": ...}``.
    """
    env = os.environ if env is None else env
    path = config_path(cli_path, env)
    if path.exists():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), f"not valid TOML ({exc})") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                str(path),
                f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})",
                "save it as UTF-8",
            ) from None
        except OSError as exc:
            raise ConfigError(str(path), f"cannot be read ({exc.strerror})") from None
    elif cli_path or env.get("EMPSYNC_CONFIG"):
        raise ConfigError(str(path), "file not found", "pass --config PATH to an existing sync.toml")
    else:
        raw = {}
    return from_dict(raw, env=env, overrides=overrides, path=str(path))


def from_dict(
    raw: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    path: str = "",
) -> Config:
    env = {} if env is None else env
    unknown = set(raw) - set(SECTIONS) - {"fields"}
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(key, "unknown section", f"known sections: {', '.join([*SECTIONS, 'fields'])}")

    sections: dict[str, Any] = {}
    interval_source = "default"
    # Where an overridden value came from, so a range error names what the operator set.
    origins: dict[str, str] = {}
    for name, cls in SECTIONS.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(name, "must be a table, like [" + name + "]")
        values: dict[str, Any] = {}
        for key, value in table.items():
            if f"{name}.{key}" in ENV_ONLY:
                var = ENV_ONLY[f"{name}.{key}"]
                raise ConfigError(f"{name}.{key}", "is read from the environment only", f"set {var} instead")
            if (name, key) == ("source", "where"):
                values[key] = load_conditions(value, field_path_problem)
                continue
            values[key] = _check_type(cls, f"{name}.{key}", key, value)
        if name == "sync" and "interval" in values:
            interval_source = "file"
        for var, (section, key) in ENV_OVERRIDES.items():
            if section == name and env.get(var, "") != "":
                values[key] = _from_env(cls, var, key, env[var])
                origins[f"{name}.{key}"] = var
                if key == "interval":
                    interval_source = "environment"
        for dotted, value in (overrides or {}).items():
            section, _, key = dotted.partition(".")
            if section == name and value is not None:
                values[key] = _check_type(cls, dotted, key, value)
                origins[dotted] = "the command line"
                if key == "interval":
                    interval_source = "command line"
        sections[name] = cls(**values)

    specs = _load_fields(raw.get("fields", {}))
    config = Config(**sections, fields=specs, path=path, interval_source=interval_source)
    try:
        validate(config)
    except ConfigError as exc:
        origin = origins.get(exc.key)
        if origin is None:
            raise
        raise ConfigError(f"{exc.key} (set by {origin})", exc.problem, exc.hint) from None
    return config


def _check_type(cls: type, dotted: str, key: str, value: Any) -> Any:
    known = {f.name: f for f in fields(cls)}
    if key not in known:
        raise ConfigError(dotted, "unknown key", f"known keys: {', '.join(known)}")
    expected = type(known[key].default)
    if expected is tuple:  # a list of strings (TOML arrays)
        if not isinstance(value, list):
            raise ConfigError(dotted, f"must be a list of strings, not {_type_word(type(value))}")
        for n, item in enumerate(value):
            if not isinstance(item, str):
                raise ConfigError(f"{dotted}[{n}]", f"must be a string, not {_type_word(type(item))}")
        return tuple(value)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # 1 means 1.0
    if expected is int and isinstance(value, bool) or not isinstance(value, expected):
        raise ConfigError(dotted, f"must be {_type_word(expected)}, not {_type_word(type(value))}")
    return value


def _from_env(cls: type, var: str, key: str, text: str) -> Any:
    expected = type({f.name: f for f in fields(cls)}[key].default)
    if expected is bool:
        word = text.strip().lower()
        if word in TRUE_WORDS | FALSE_WORDS:
            return word in TRUE_WORDS
        raise ConfigError(var, f"must be true or false, not {text!r}")
    if expected is int:
        # ASCII digits only, as the mapping reads integers: int() would take "٣٠" and "3_0".
        if not _ASCII_INTEGER.fullmatch(text.strip()):
            raise ConfigError(var, f"must be a whole number (ASCII digits), not {text[:40]!r}")
        return int(text.strip())
    return text


def _type_word(t: type) -> str:
    return {bool: "true or false", int: "a whole number", str: "a string", float: "a number"}.get(
        t, "a table" if t is dict else "a list" if t is list else t.__name__
    )


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def field_key(path: str) -> str:
    """A field's key as written in sync.toml: ``fields.name`` or ``fields."address.city"``."""
    return f"fields.{path}" if _BARE_KEY.fullmatch(path) else f'fields."{path}"'


def field_path_problem(path: str) -> str | None:
    """Why Firestore would refuse ``path`` (dot-separated segments) as a field path, or None."""
    if not path:
        return "is empty"
    if len(path.encode("utf-8", "surrogatepass")) > FIELD_PATH_MAX_BYTES:
        return f"is longer than Firestore's {FIELD_PATH_MAX_BYTES:,} bytes for a field path"
    for segment in path.split("."):
        if segment == "":
            return f"{path!r} has an empty segment (two dots, or a dot at an end)"
        if _RESERVED_SEGMENT.fullmatch(segment):
            return f"{path!r} has the segment {segment!r}: Firestore reserves names of the form __name__"
    return None


def document_id_problem(doc_id: Any) -> str | None:
    """Why ``doc_id`` cannot be a Firestore document id, or None."""
    if not isinstance(doc_id, str) or not doc_id:
        return "an id must be non-empty text"
    if "/" in doc_id:
        return f"{doc_id[:40]!r} holds a /, which no document id can"
    if doc_id in (".", ".."):
        return f"{doc_id!r} is not a document id"
    if _RESERVED_SEGMENT.fullmatch(doc_id):
        return f"{doc_id[:40]!r}: Firestore reserves ids of the form __name__"
    try:
        size = len(doc_id.encode("utf-8"))
    except UnicodeEncodeError:
        return f"{doc_id[:40]!r} is not valid Unicode text"
    if size > FIELD_PATH_MAX_BYTES:
        return f"an id of {size:,} bytes is longer than Firestore's {FIELD_PATH_MAX_BYTES:,}"
    return None


def check_document_ids(key: str, ids: Iterable[Any]) -> list[str]:
    """Distinct valid document ids, in order; ``ConfigError`` naming ``key`` for the first bad one."""
    wanted: dict[str, None] = {}
    for doc_id in ids:
        if problem := document_id_problem(doc_id):
            raise ConfigError(key, problem)
        wanted[doc_id] = None
    if not wanted:
        raise ConfigError(key, "no document ids given")
    return list(wanted)


def _load_fields(raw: Any) -> tuple[FieldSpec, ...]:
    if not isinstance(raw, dict):
        raise ConfigError("fields", "must be tables, like [fields.name]")
    specs = []
    for path, table in raw.items():
        key = field_key(path)
        if not isinstance(table, dict):
            raise ConfigError(key, "must be a table with at least type = ...")
        unknown = set(table) - FIELD_KEYS
        if unknown:
            raise ConfigError(
                f"{key}.{sorted(unknown)[0]}", "unknown key", f"known keys: {', '.join(sorted(FIELD_KEYS))}"
            )
        type_name = table.get("type", "string")
        if type_name not in FIELD_TYPES:
            raise ConfigError(f"{key}.type", f"unknown type {type_name!r}", f"types: {', '.join(FIELD_TYPES)}")
        required = table.get("required", False)
        if not isinstance(required, bool):
            raise ConfigError(f"{key}.required", "must be true or false")
        max_length = table.get("max_length", 255)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or not 1 <= max_length <= 16_383:
            raise ConfigError(f"{key}.max_length", "must be a whole number from 1 to 16383")
        if "max_length" in table and type_name != "string":
            raise ConfigError(f"{key}.max_length", f"applies to type string only, not {type_name}")
        if problem := field_path_problem(path):
            raise ConfigError(key, f"field path {problem}")
        column = table.get("column", path.replace(".", "_"))
        if not isinstance(column, str) or not IDENTIFIER.fullmatch(column):
            raise ConfigError(
                f"{key}.column" if "column" in table else key,
                f"column name {column!r} is not an identifier (letters, digits, _; at most 64)",
                'set column = "..." to a plain name' if "column" not in table else "",
            )
        specs.append(FieldSpec(path=path, type=type_name, column=column, required=required, max_length=max_length))
    return tuple(specs)


def validate(config: Config) -> None:
    s, t, y, a = config.source, config.target, config.sync, config.api
    for key, name in (("target.table", t.table), ("target.id_column", t.id_column)):
        if not IDENTIFIER.fullmatch(name):
            raise ConfigError(key, f"{name!r} is not an identifier (letters, digits, _; at most 64)")
    if t.table.lower().startswith("empsync_"):
        raise ConfigError("target.table", "the empsync_ prefix is reserved for empsync's own tables")
    if not s.project:
        raise ConfigError("source.project", "must not be empty")
    segments = s.collection.split("/")
    if "" in segments or len(segments) % 2 == 0:
        raise ConfigError("source.collection", f"{s.collection!r} is not a collection path (like employees)")
    if s.credentials and not Path(s.credentials).expanduser().is_file():
        raise ConfigError("source.credentials", f"file not found: {s.credentials}")
    if s.emulator_host and not _EMULATOR_HOST.fullmatch(s.emulator_host):
        raise ConfigError("source.emulator_host", f"must be host:port, not {s.emulator_host!r}")
    _bounded("source.page_size", s.page_size, 1, 10_000)
    _bounded("source.timeout", s.timeout, 1, 3600)
    _bounded("target.batch_size", t.batch_size, 1, 10_000)
    if not 0.0 <= t.max_delete_fraction <= 1.0:
        raise ConfigError("target.max_delete_fraction", f"must be from 0 to 1 (got {t.max_delete_fraction:g})")
    _bounded("source.watermark_margin_ms", s.watermark_margin_ms, 0, 60_000)
    if t.delete_mode not in DELETE_MODES:
        raise ConfigError("target.delete_mode", f"must be one of {', '.join(DELETE_MODES)}, not {t.delete_mode!r}")
    check_interval(y.interval, "sync.interval")
    _bounded("sync.force_interval", y.force_interval, INTERVAL_MIN, 7 * 86_400)
    _bounded("sync.cache_timeout", y.cache_timeout, 0, 86_400)
    _bounded("sync.audit_retention_days", y.audit_retention_days, 0, 36_500)
    _bounded("sync.verify_max_reads", y.verify_max_reads, 0, 10**9)
    if y.mode not in MODES:
        raise ConfigError("sync.mode", f"must be poll or listen, not {y.mode!r}")
    if y.listen_scope not in LISTEN_SCOPES:
        raise ConfigError("sync.listen_scope", f"must be changes or collection, not {y.listen_scope!r}")
    _bounded("api.port", a.port, 0, 65_535)
    check_target_url(t.url)
    check_notify(config.notify)

    if not config.fields:
        raise ConfigError("fields", "no fields are mapped", "add at least one [fields.NAME] table")
    reserved = {t.id_column.lower(), *BOOKKEEPING_COLUMNS}
    seen: dict[str, str] = {}
    for spec in config.fields:
        col = spec.column.lower()
        key = field_key(spec.path)
        if col in reserved:
            raise ConfigError(key, f"column {spec.column!r} clashes with a bookkeeping column", "set column = ...")
        if col in seen:
            raise ConfigError(key, f"column {spec.column!r} is also used by {field_key(seen[col])}")
        seen[col] = spec.path
    if s.updated_field and (problem := field_path_problem(s.updated_field)):
        raise ConfigError("source.updated_field", problem)
    if s.updated_field:
        mapped = next((f for f in config.fields if f.path == s.updated_field), None)
        if mapped and mapped.type != "datetime":
            raise ConfigError(
                "source.updated_field",
                f"{s.updated_field!r} is mapped as {mapped.type}; it must be a timestamp (type datetime)",
            )


def check_interval(value: int, key: str = "interval") -> int:
    _bounded(key, value, INTERVAL_MIN, INTERVAL_MAX)
    return value


def _bounded(key: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ConfigError(key, f"must be from {low:,} to {high:,} (got {value:,})")


def check_target_url(url: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError("target.url", f"not a database URL: {mask_url(url)}") from None
    backend = parsed.get_backend_name()
    if backend != "sqlite" and "@" in (parsed.host or "") + (parsed.database or ""):
        # An unencoded @ in the password ends it early and leaves the rest in the
        # host, where error messages and the masked URL would print it.
        raise ConfigError(
            "target.url", "the user name or password holds an unencoded @", "percent-encode it: @ becomes %40"
        )
    from .dialects import for_backend, supported

    dialect = for_backend(backend)
    if dialect is None:
        raise ConfigError("target.url", f"unsupported database {backend!r}", f"use {supported()}")
    dialect.check_url(parsed)
    if parsed.query:
        check_url_options(dialect.engine_url(parsed))


def check_url_options(parsed) -> None:
    """Refuse URL options (``?connect_timeout=abc``, ``?foo=bar``) the driver would choke on at connect.

    The dialect turns the query into the driver's keyword arguments, as it will
    when connecting: a value it cannot convert, an option it ignores (it would
    only warn) or one the driver's connect() does not take is a config error now.
    """
    import inspect
    import warnings

    from sqlalchemy.exc import SAWarning

    dialect_class = parsed.get_dialect()
    dialect = dialect_class(dbapi=dialect_class.import_dbapi())
    driver = parsed.get_driver_name()
    hint = "remove it, or see the driver's documentation for its options"
    _, baseline = dialect.create_connect_args(parsed.set(query={}))
    try:
        parameters = inspect.signature(dialect.dbapi.connect).parameters.values()
        accepted = {p.name for p in parameters}
        if any(p.kind is p.VAR_KEYWORD for p in parameters):
            accepted = None  # a driver that passes anything on (it checks for itself)
    except (TypeError, ValueError):  # a built-in without a signature (sqlite3): the dialect's word is all
        accepted = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SAWarning)  # options valid only together are checked whole below
        for key, value in parsed.query.items():
            try:
                _, params = dialect.create_connect_args(parsed.set(query={key: value}))
            except (ValueError, TypeError) as exc:
                raise ConfigError("target.url", f"URL option {key}: bad value ({exc})", hint) from None
            unknown = sorted(set(params) - set(baseline) - (accepted or set(params)))
            if unknown:
                raise ConfigError("target.url", f"URL option {key} is not an option of the {driver} driver", hint)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SAWarning)
        try:
            dialect.create_connect_args(parsed)
        except SAWarning as exc:  # "Query string argument(s) 'foo' are not accepted …; <the way out>"
            problem, _, way_out = str(exc).partition(";")
            raise ConfigError("target.url", problem.strip(), way_out.strip() or hint) from None


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, safe to print and log."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        # Unparsable (say one slash too few): hide everything up to the last @.
        return re.sub(r"^([A-Za-z][A-Za-z0-9+.\-]*:/*)?.*@", lambda m: (m.group(1) or "") + "***@", url)


# -- [notify] ------------------------------------------------------------------

NOTIFY_FORMATS = ("json", "slack")
SMTP_SCHEMES = {"smtp": 25, "smtps": 465}
MAX_URL = 2048
_ADDRESS = re.compile(
    r"[^@\s<>()\[\],;:\"]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*"
)


@dataclass(frozen=True)
class SmtpEndpoint:
    scheme: str  # smtp (STARTTLS where offered) | smtps (TLS from the start)
    host: str
    port: int
    user: str


def parse_smtp_url(url: str, key: str = "notify.smtp_url") -> SmtpEndpoint:
    """``smtps://user@host:465`` or ``smtp://host:25``; a password here is refused (it would sit in a file)."""
    from urllib.parse import unquote, urlsplit

    if len(url) > MAX_URL or not url.isprintable() or " " in url:
        raise ConfigError(key, "is not a URL (spaces, control characters, or too long)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(key, "has a port that is not a number from 0 to 65535") from None
    # The URL itself is never quoted back: it may hold the password this refuses.
    if parts.password is not None:
        raise ConfigError(key, "holds a password", "put it in EMPSYNC_SMTP_PASSWORD and write smtps://user@host:465")
    if parts.scheme not in SMTP_SCHEMES:
        raise ConfigError(key, "must start smtp:// or smtps://", "like smtps://user@host:465")
    if not parts.hostname:
        raise ConfigError(key, "names no host", "like smtps://user@host:465")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(key, "has a path or query; only smtp[s]://[user@]host[:port] is understood")
    return SmtpEndpoint(parts.scheme, parts.hostname, port or SMTP_SCHEMES[parts.scheme], unquote(parts.username or ""))


def check_http_url(url: str, key: str) -> None:
    from urllib.parse import urlsplit

    if len(url) > MAX_URL or not url.isprintable() or " " in url:
        raise ConfigError(key, "is not a URL (spaces, control characters, or too long)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        raise ConfigError(key, "is not a URL (a bad port or bracket)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(key, "must be an http:// or https:// URL with a host", "like https://hooks.example.com/...")


def check_address(address: str, key: str) -> None:
    """A plain mailbox, user@domain: no display name, and never a line break (header injection)."""
    if not _ADDRESS.fullmatch(address):
        raise ConfigError(key, f"{address[:100]!r} is not an e-mail address (user@example.com)")


def check_notify(n: NotifyConfig) -> None:
    if n.format not in NOTIFY_FORMATS:
        raise ConfigError("notify.format", f"must be json or slack, not {n.format!r}")
    for i, url in enumerate(n.webhook_urls):
        check_http_url(url, f"notify.webhook_urls[{i}]")
    if len(set(n.webhook_urls)) != len(n.webhook_urls):
        raise ConfigError("notify.webhook_urls", "lists a URL twice")
    if n.smtp_url:
        parse_smtp_url(n.smtp_url)
    for i, address in enumerate(n.email_to):
        check_address(address, f"notify.email_to[{i}]")
    if n.email_from:
        check_address(n.email_from, "notify.email_from")
    if n.smtp_url and not n.email_to:
        raise ConfigError("notify.email_to", "is empty, but smtp_url is set", 'list who gets mail: ["ops@example.com"]')
    if n.email_to and not n.smtp_url:
        raise ConfigError("notify.smtp_url", "is empty, but email_to lists addresses", "like smtps://user@host:465")
    if n.email_to and not n.email_from:
        raise ConfigError(
            "notify.email_from", "is empty, but email_to lists addresses", "the sender, like empsync@example.com"
        )
    _bounded("notify.failures_before_alert", n.failures_before_alert, 1, 1000)
    _bounded("notify.lag_alert_seconds", n.lag_alert_seconds, 1, 86_400)
    _bounded("notify.reject_alert_minutes", n.reject_alert_minutes, 0, 7 * 24 * 60)
