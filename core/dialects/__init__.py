"""The target databases empsync writes, one module each, picked by SQLAlchemy's backend name.

Everything that differs between SQLite, MySQL/MariaDB and PostgreSQL lives in
its module: engine set-up and session settings, the id column type, the
upsert text, the statement size limits, the sync lock and the error wording
(``base.py`` lists what a module must provide). The engine, the store and the
state never ask which database they write: they ask this registry for the
dialect of their engine or connection and call it.
"""

from __future__ import annotations

import importlib
from typing import Any

from sqlalchemy.engine import URL, Engine

from ..lock import SyncLock
from .base import Dialect, Limits

__all__ = ["Dialect", "Limits", "MODULES", "for_backend", "make_lock", "of", "registered", "supported"]

# SQLAlchemy backend name -> the module here that serves it.
MODULES = {"sqlite": "sqlite", "mysql": "mysql", "mariadb": "mysql", "postgresql": "postgresql"}

_loaded: dict[str, Dialect] = {}


def for_backend(backend: str) -> Dialect | None:
    """The dialect serving a backend name (``mysql``), or None when empsync does not support it."""
    found = _loaded.get(backend)
    if found is None:
        module = MODULES.get(backend)
        if module is None:
            return None
        found = _loaded[backend] = importlib.import_module(f"{__name__}.{module}").DIALECT
    return found


def of(bind: Any) -> Dialect:
    """The dialect of an Engine, a Connection, a SQLAlchemy dialect or a URL."""
    name = bind.get_backend_name() if isinstance(bind, URL) else getattr(bind, "dialect", bind).name
    found = _loaded.get(name) or for_backend(name)
    if found is None:
        raise LookupError(f"no empsync dialect for {name!r}")
    return found


def make_lock(engine: Engine, table: str) -> SyncLock:
    """The sync lock for a table, of the kind its database has."""
    return of(engine).make_lock(engine, table)


def registered() -> list[Dialect]:
    """Every dialect, once each."""
    return list({id(d): d for d in map(for_backend, MODULES)}.values())


def supported() -> str:
    """The URL forms empsync takes, for messages."""
    return ", ".join(d.url_example for d in registered())
