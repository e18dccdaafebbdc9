"""Logging set-up: one line per record, text or JSON, with secrets scrubbed and terminals safe.

Secrets (the target password, the API token) are registered once at start-up
and replaced by *** in every record, whatever code logged them, traceback
included. Text lines escape control characters (a document id may hold any);
JSON lines stay exact. A library's error (google-api-core's broken stream
thread, say) is one WARNING line with its reason unless ``detail`` is asked
for (``-v`` or ``EMPSYNC_DEBUG=1``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from .safe import json_safe, terminal_safe
from .times import from_timestamp, iso_precise

_secrets: set[str] = set()

OWN_LOGGER = "empsync"
NOISY_LIBRARIES = ("google", "grpc", "urllib3", "sqlalchemy", "schedule")


def register_secret(value: str | None) -> None:
    if value and len(value) >= 3:
        _secrets.add(value)


def scrub(text: str) -> str:
    for secret in _secrets:
        text = text.replace(secret, "***")
    return text


def debug_requested() -> bool:
    return bool(os.environ.get("EMPSYNC_DEBUG"))


class ScrubFilter(logging.Filter):
    """Secrets out of the message, the traceback and the stack, before any formatter sees them."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            record.msg = scrub(record.getMessage())
            record.args = None
            if record.exc_info and not record.exc_text:
                record.exc_text = self._formatter.formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = scrub(record.exc_text)
            if record.stack_info:
                record.stack_info = scrub(record.stack_info)
        return True


def describe_exception(exc: BaseException) -> str:
    """An exception in one line: gRPC's status and details, else its type and first line."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and callable(details):
        try:
            return f"{getattr(code(), 'name', code())}: {details()}"
        except Exception:  # noqa: BLE001 - a half-made RPC error: fall back to its text
            pass
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class LibraryFilter(logging.Filter):
    """A library's record as one WARNING line with its reason: no traceback, no ERROR.

    Libraries log what they cannot handle with a traceback (a gRPC stream that
    broke), though empsync handles it and says so in its own words; the
    operator needs the reason, the developer (``-v``) the rest.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == OWN_LOGGER or record.name.startswith(OWN_LOGGER + "."):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        reason = describe_exception(exc) if exc is not None else None
        if reason is not None and isinstance(record.args, tuple):  # quoting the exception: quote its reason
            record.args = tuple(reason if arg is exc else arg for arg in record.args)
        try:
            message = record.getMessage().rstrip()  # a captured warning ends in a newline
        except Exception:  # noqa: BLE001 - a library's malformed format: its bare text
            message = str(record.msg)
        if reason is not None and reason not in message:
            message = f"{message} ({reason})"
        record.msg, record.args = message, None
        record.exc_info = record.exc_text = record.stack_info = None
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


def traceback_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    """The record's traceback and stack, as the stdlib would append them ("" for none)."""
    parts = []
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    if record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(formatter.formatStack(record.stack_info))
    return "\n".join(parts)


def record_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    """A record as a screen shows it, control characters escaped.

    The message stays on one line (a document id must not forge a line of its
    own); a traceback follows on lines of its own.
    """
    text = terminal_safe(record.getMessage())
    detail = traceback_text(formatter, record)
    return text + "\n" + terminal_safe(detail, multiline=True) if detail else text


class TextFormatter(logging.Formatter):
    """``time LEVEL message``; the message on one line, every control character escaped.

    A traceback follows indented, so a line that an exception's text forged
    can never pass for a record of its own: only records start at column 0.
    """

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT, datefmt="%Y-%m-%dT%H:%M:%SZ")
        self.converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        record.message = terminal_safe(record.getMessage())
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        detail = traceback_text(self, record)
        if not detail:
            return line
        return "\n".join([line, *("  " + part for part in terminal_safe(detail, multiline=True).split("\n"))])


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": iso_precise(from_timestamp(record.created), "milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        detail = traceback_text(self, record)
        if detail:
            entry["error"] = detail
        return json_safe(json.dumps(entry, ensure_ascii=False))


TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"


def add_filters(handler: logging.Handler, detail: bool) -> None:
    """What every handler of ours needs: libraries in one line (unless ``detail``), secrets scrubbed."""
    if not (detail or debug_requested()):
        handler.addFilter(LibraryFilter())
    handler.addFilter(ScrubFilter())


def configure(level: int = logging.INFO, fmt: str = "text", stream=None, detail: bool = False) -> logging.Handler:
    """Send empsync's records to stderr; quiet the chatty libraries."""
    handler = logging.StreamHandler(stream or sys.stderr)
    add_filters(handler, detail)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in NOISY_LIBRARIES:
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    logging.captureWarnings(True)  # a library's warning is a log line too, not raw text on stderr
    return handler


def secrets_of(config) -> None:
    """Register the secrets a configuration holds."""
    from sqlalchemy.engine import make_url

    try:
        register_secret(make_url(config.target.url).password)
    except Exception:  # noqa: BLE001 - a URL that does not parse has no password to hide
        pass
    register_secret(config.api.token)
    register_secret(config.api.webhook_secret)
    register_secret(config.notify.smtp_password)
    for url in config.notify.webhook_urls:  # a chat webhook's URL is its credential
        register_secret(url)
