"""Logging set-up: one line per record, text or JSON, with secrets scrubbed.

Secrets (the target password, the API token) are registered once at start-up
and replaced by *** in every record, whatever code logged them.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime

_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    if value and len(value) >= 3:
        _secrets.add(value)


def scrub(text: str) -> str:
    for secret in _secrets:
        text = text.replace(secret, "***")
    return text


class ScrubFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            record.msg = scrub(record.getMessage())
            record.args = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = scrub(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"


def configure(level: int = logging.INFO, fmt: str = "text", stream=None) -> logging.Handler:
    """Send empsync's records to stderr; quiet the chatty libraries."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ScrubFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = logging.Formatter(TEXT_FORMAT, datefmt="%Y-%m-%dT%H:%M:%SZ")
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("google", "grpc", "urllib3", "sqlalchemy", "schedule"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    return handler


def secrets_of(config) -> None:
    """Register the secrets a configuration holds."""
    from sqlalchemy.engine import make_url

    try:
        register_secret(make_url(config.target.url).password)
    except Exception:  # noqa: BLE001 - a URL that does not parse has no password to hide
        pass
    register_secret(config.api.token)
