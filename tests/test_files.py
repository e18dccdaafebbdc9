"""The files empsync creates (their modes) and the SQLite lock's name (the database's real path).

The SQLite database, its -wal and -shm files and the lock file hold or sit
beside employee records: created 0600, whatever the umask; an existing file
keeps the mode its owner gave it. The lock is named from the database file's
real path, so a symlink or a relative path to the same file is the same lock.
"""

from __future__ import annotations

import os
import stat

from sqlalchemy import text

from core.db import make_engine
from core.dialects import make_lock


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def write_something(url: str) -> dict[str, int]:
    """Write through empsync's engine, take the lock; the modes of the files that exist meanwhile."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE IF NOT EXISTS t (x INTEGER)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
        with engine.connect() as conn:  # WAL: the -wal and -shm files exist while a connection is open
            conn.execute(text("SELECT COUNT(*) FROM t")).scalar()
            lock = make_lock(engine, "employees")
            assert lock.acquire()
            paths = [engine.url.database + suffix for suffix in ("", "-wal", "-shm")] + [lock.name]
            modes = {os.path.basename(p): mode(p) for p in paths}
            lock.release()
    finally:
        engine.dispose()
    return modes


def test_the_database_its_wal_and_shm_and_the_lock_are_created_0600(tmp_path):
    old = os.umask(0o022)  # the usual umask, which would leave them world-readable
    try:
        modes = write_something(f"sqlite:///{tmp_path / 'mirror.db'}")
    finally:
        os.umask(old)
    assert modes == {
        "mirror.db": 0o600,
        "mirror.db-wal": 0o600,
        "mirror.db-shm": 0o600,
        "mirror.db.employees.lock": 0o600,
    }, {k: oct(v) for k, v in modes.items()}


def test_an_existing_database_keeps_its_mode(tmp_path):
    db = tmp_path / "shared.db"
    db.touch()
    db.chmod(0o640)  # an operator's choice (a reporting group may read it)
    write_something(f"sqlite:///{db}")
    assert mode(db) == 0o640


def test_the_same_file_through_a_symlink_or_a_relative_path_is_the_same_lock(tmp_path, monkeypatch):
    real = tmp_path / "data" / "mirror.db"
    real.parent.mkdir()
    (tmp_path / "link.db").symlink_to(real)
    monkeypatch.chdir(tmp_path)
    engines = [make_engine(url) for url in (f"sqlite:///{real}", f"sqlite:///{tmp_path / 'link.db'}")]
    engines.append(make_engine("sqlite:///data/mirror.db"))
    try:
        first, *others = [make_lock(engine, "employees") for engine in engines]
        assert first.acquire()
        for other in others:
            assert other.name == first.name == f"{real}.employees.lock"
            assert not other.acquire(), f"{other.name}: a second lock on the same database"
        first.release()
        assert others[0].acquire()
        others[0].release()
    finally:
        for engine in engines:
            engine.dispose()
