"""Fixtures of the fault suite: private servers for the cases that stop them, and clean-up of processes.

The session's shared emulator and MariaDB (tests/conftest.py) serve every case
that only breaks empsync; a case that stops a server gets its own, so the rest
of the suite never sees the outage.
"""

from __future__ import annotations

import subprocess

import pytest

from core.emulator import free_port
from core.errors import EmpsyncError

from ..conftest import IN_CI
from ..servers import MariaDB, ServerMissing
from .support import FULL, SIZES, PersistentEmulator


def pytest_report_header(config) -> str:
    return f"fault suite sizes: {'full' if FULL else 'reduced (EMPSYNC_FAULTS_SIZE=full for the issue sizes)'}: {SIZES}"


def _unavailable(what: str, exc: Exception) -> None:
    if IN_CI:
        pytest.fail(f"{what} unavailable: {exc} (CI=true: a missing server is a failure)", pytrace=False)
    pytest.skip(f"{what} unavailable: {exc}")


@pytest.fixture
def own_mariadb(tmp_path):
    """A MariaDB of this test's own, free to be stopped, killed and restarted."""
    server = MariaDB(tmp_path / "own-mariadb")
    try:
        server.start()
    except (ServerMissing, OSError, subprocess.SubprocessError) as exc:
        _unavailable("MariaDB", exc)
    yield server
    server.destroy()


@pytest.fixture
def own_emulator(tmp_path):
    """An emulator of this test's own on a fixed port, which keeps its data across restarts."""
    emu = PersistentEmulator(port=free_port(), log_path=tmp_path / "own-emulator.log")
    try:
        emu.start()
    except (EmpsyncError, OSError) as exc:
        _unavailable("Firestore emulator", exc)
    yield emu
    emu.stop()
