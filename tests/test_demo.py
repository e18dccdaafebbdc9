"""`empsync demo`: a fresh machine to a live, syncing mirror in one command."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.demo import demo_environment
from core.service import SyncService

from .conftest import REPO

pytestmark = pytest.mark.integration


def wait_for(check, timeout: float, what: str, every: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def query(db: Path, sql: str) -> list[tuple]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        conn.close()


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_headless_demo_seeds_syncs_edits_rejects_and_leaves_nothing_running(tmp_path, emulator):
    # `emulator` only proves the CLI's emulator can start here; the demo starts its own.
    db = tmp_path / "demo.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "core.cli", "demo", "--no-ui", "--employees", "60", "--pace", "0.05"],
        cwd=REPO,
        env={**os.environ, "EMPSYNC_TARGET_URL": f"sqlite:///{db}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # The seeded employees arrive…
        wait_for(
            # (No row at all while the file exists but its tables are still being created.)
            lambda: (query(db, "SELECT COUNT(*) FROM employees") or [(0,)])[0][0] >= 60,
            90,
            "seed",
        )
        # …then the simulated app's edits, and its invalid documents become rejects with reasons.
        wait_for(
            lambda: (query(db, "SELECT COUNT(*) FROM empsync_changes WHERE operation = 'update'") or [(0,)])[0][0] > 5,
            90,
            "edits",
        )
        rejects = wait_for(lambda: query(db, "SELECT document_id, field, reason FROM empsync_rejects"), 120, "a reject")
        assert all(reason.startswith(f"{field}:") for _, field, reason in rejects)
        below = descendants(proc.pid)
        assert below, "the demo started its emulator as a child"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out[-2000:]
    assert "demo stopped" in out
    wait_for(lambda: not any(alive(p) for p in below), 15, "the emulator to exit")


async def test_demo_console_shows_changes_arriving(emulator, tmp_path):
    from tui.app import EmpsyncApp

    async def drive(config) -> None:
        service = SyncService(config)
        app = EmpsyncApp(service, config)
        async with app.run_test(size=(120, 36)) as pilot:
            table = app.query_one("#changes-table")
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and table.row_count < 5:
                await pilot.pause(0.25)
            assert table.row_count >= 5, "changes flow into Recent changes"
            await pilot.press("q")
            await pilot.pause(1)
        assert not service.alive

    target = f"sqlite:///{tmp_path / 'demo.db'}"
    with demo_environment(40, emulator_host=emulator.host, target_url=target, pace_s=0.05) as demo:
        await drive(demo.config)
