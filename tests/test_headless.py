"""``empsync --no-ui`` as a real process: its log lines, its stops, its API.

SIGTERM and SIGINT exit 0 within 10 s and free the lock; two services on one
MariaDB database elect exactly one leader, and kill -9 of the leader hands
over to the other, which syncs a change made after the kill; text and JSON
log lines carry the seed's messages; the headless path never loads Textual.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from core import config as cfg
from core.db import make_engine
from core.dialects import make_lock
from core.emulator import free_port

from .conftest import REPO, employee, run_cli, write_docs, write_toml
from .service_support import TEXT_LINE, Headless, http, mirror_rows, runs_table, stored_state, wait_for

pytestmark = pytest.mark.integration

TOKEN = "headless-token-7c1e"
PREFIX = "/api/realtime-sync"
SEED_MESSAGES = (
    "Starting employee sync",
    "Retrieved minimal data for",
    "Employee updated:",
    "Employee sync completed:",
)


def with_api(config: cfg.Config, port: int) -> cfg.Config:
    return dataclasses.replace(
        config, api=dataclasses.replace(config.api, enabled=True, host="127.0.0.1", port=port, token=TOKEN)
    )


def lock_is_free(config: cfg.Config) -> bool:
    """Take the sync lock the way a service would, and give it back."""
    engine = make_engine(config.target.url)
    try:
        lock = make_lock(engine, config.target.table)
        got = lock.acquire()
        lock.release()
        return got
    finally:
        engine.dispose()


def api_status(port: int) -> dict:
    code, _, body = http("GET", f"http://127.0.0.1:{port}{PREFIX}/status", token=TOKEN)
    assert code == 200, body
    return body


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_or_sighup_exits_0_within_10_s_and_frees_the_lock(
    stop, make_config, mysql_url, firestore_client, tmp_path, processes
):
    # SIGHUP: a closed SSH session or terminal, or a supervisor's reload, gets the same clean stop.
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(3)})
    config = make_config(mysql_url, sync={"interval": 300, "force_interval": 3600})
    process = Headless(write_toml(tmp_path / "sync.toml", config))
    processes.append(process)
    process.wait_line("Employee sync completed")
    assert not lock_is_free(config), "the running service holds the lock"
    assert stored_state(config)["leader"] == f"{socket.gethostname()}:{process.pid}"

    process.signal(stop)
    assert process.wait(10) == 0, process.text()
    log = process.text()
    assert f"Received {stop.name}" in log and "Released the sync lock" in log
    assert lock_is_free(config), "the lock is still held after the service exited"
    assert "leader" not in stored_state(config), "a clean stop forgets the leader"
    assert all(r["status"] == "ok" for r in runs_table(config))

    # Text format by default, one line per record, with the seed's messages and counts.
    for line in process.lines:
        assert TEXT_LINE.match(line), line
    assert "Starting employee sync (force, full read)" in log
    assert "Retrieved minimal data for 3 employees" in log
    assert re.search(r"Employee sync completed: 3 fetched, 3 inserted, 0 updated, 0 deleted", log)


def test_sigint_mid_run_abandons_the_batch_cleanly(make_config, sqlite_url, firestore_client, tmp_path, processes):
    write_docs(firestore_client, {f"e{i:04d}": employee(i) for i in range(1500)})
    config = make_config(sqlite_url, sync={"interval": 300, "force_interval": 3600})
    config = dataclasses.replace(config, target=dataclasses.replace(config.target, batch_size=50))
    process = Headless(write_toml(tmp_path / "sync.toml", config))
    processes.append(process)
    process.wait_line("Status: syncing")
    process.signal(signal.SIGINT)
    assert process.wait(10) == 0, process.text()
    assert "Received SIGINT" in process.text()
    assert lock_is_free(config)
    runs = runs_table(config)
    assert runs and runs[-1]["status"] in ("ok", "interrupted"), runs
    assert len(mirror_rows(config)) % 50 == 0, "a partial batch was committed"
    # The next process carries on from the last commit.
    finished = run_cli("sync", "--force", "--json", "--config", str(tmp_path / "sync.toml"))
    assert finished.returncode == 0, finished.stderr
    assert len(mirror_rows(config)) == 1500


def test_a_one_shot_sync_hit_by_sigint_says_so_marks_its_run_and_exits_130(
    make_config, sqlite_url, firestore_client, tmp_path
):
    write_docs(firestore_client, {f"e{i:04d}": employee(i) for i in range(1500)})
    config = make_config(sqlite_url)
    config = dataclasses.replace(config, target=dataclasses.replace(config.target, batch_size=20))
    path = write_toml(tmp_path / "sync.toml", config)
    env = {k: v for k, v in os.environ.items() if k not in ("FIRESTORE_EMULATOR_HOST", "EMPSYNC_CONFIG")}
    process = subprocess.Popen(
        [sys.executable, "-m", "core.cli", "--config", str(path), "sync", "--force"],
        cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(
            lambda: process.poll() is None and (runs := runs_table(config)) and runs[-1]["status"] == "running",
            60,
            "the one-shot run to start",
        )
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, (out, err)
    lines = err.strip().splitlines()
    assert lines[0].startswith("empsync: interrupted by SIGINT") and len(lines) <= 2 and "Traceback" not in err, err
    run = runs_table(config)[-1]
    assert run["status"] == "interrupted" and run["finished_at"] is not None, run
    assert lock_is_free(config)
    assert len(mirror_rows(config)) % 20 == 0, "a partial batch was committed"


def test_json_logs_disabled_by_environment_manual_runs_and_seed_messages(
    make_config, mysql_url, firestore_client, tmp_path, processes
):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(3)})
    port = free_port()
    config = with_api(make_config(mysql_url, sync={"interval": 10, "force_interval": 10}), port)
    process = Headless(
        write_toml(tmp_path / "sync.toml", config), "--log-format", "json", env={"FIRESTORE_REALTIME_ENABLED": "false"}
    )
    processes.append(process)
    process.wait_line("Control API on")
    status = wait_for(lambda: (s := api_status(port))["state"] == "disabled" and s, 20, "state disabled")
    assert status["enabled"] is False and status["next_sync_at"] is None and status["is_leader"] is True
    assert runs_table(config) == [], "a disabled service ran on its own"

    code, _, body = http("POST", f"http://127.0.0.1:{port}{PREFIX}/trigger", {}, token=TOKEN)
    assert code == 202, body
    process.wait_line("Employee sync completed")
    write_docs(firestore_client, {"e1": employee(1, name="Renamed One")})
    code, _, body = http("POST", f"http://127.0.0.1:{port}{PREFIX}/trigger", {"force": True}, token=TOKEN)
    assert code == 202 and body["queued"]["kind"] == "force"
    process.wait_line("Employee updated: e1")
    assert mirror_rows(config)["e1"]["name"] == "Renamed One"

    process.signal(signal.SIGTERM)
    assert process.wait(10) == 0, process.text()
    records = []
    for line in process.lines:
        record = json.loads(line)  # every line is one JSON object
        assert {"time", "level", "logger", "message"} <= record.keys(), record
        records.append(record)
    messages = [r["message"] for r in records]
    for seed in SEED_MESSAGES:
        assert any(m.startswith(seed) for m in messages), seed
    assert "Retrieved minimal data for 3 employees (3 Firestore reads)" in messages
    assert any(m.startswith("Employee sync completed: 3 fetched, 3 inserted") for m in messages)
    assert any(m.startswith("Status: disabled") for m in messages)
    assert not [r for r in records if r["level"] == "error"], [r for r in records if r["level"] == "error"]
    assert {r["kind"] for r in runs_table(config)} == {"normal", "force"}
    assert all(r["trigger"] == "api" for r in runs_table(config)), "only the manual runs ran"


def test_the_headless_path_never_imports_textual(make_config, sqlite_url, firestore_client, tmp_path):
    write_docs(firestore_client, {"a": employee(1)})
    config = make_config(sqlite_url, sync={"interval": 300, "force_interval": 3600})
    path = write_toml(tmp_path / "sync.toml", config)
    script = textwrap.dedent(
        """
        import gc, json, logging, os, signal, sys

        import tui.entry  # the `empsync` script's own entry point

        thresholds = gc.get_threshold()

        class StopAfterTheFirstRun(logging.Handler):
            def emit(self, record):
                if record.getMessage().startswith("Employee sync completed"):
                    os.kill(os.getpid(), signal.SIGTERM)

        logging.getLogger("empsync.sync").addHandler(StopAfterTheFirstRun())
        codes = [tui.entry.main(["--no-ui", "--config", sys.argv[1]])]
        for command in (["sync", "--json"], ["status", "--json"], ["stats"], ["interval", "60"], ["changes"]):
            codes.append(tui.entry.main([*command, "--config", sys.argv[1]]))
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("textual", "tui", "rich"))
        print("RESULT " + json.dumps({"codes": codes, "loaded": loaded, "collector": [gc.get_freeze_count(), gc.get_threshold() == thresholds]}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "FIRESTORE_EMULATOR_HOST"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, cwd=REPO, env=env, timeout=120
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert result["codes"] == [0, 0, 0, 0, 0, 0], done.stderr
    # The entry point itself is in tui/, and imports no screen: nothing else of tui, nothing of Textual.
    screens = [m for m in result["loaded"] if m.split(".")[0] in ("textual", "tui") and m not in ("tui", "tui.entry")]
    assert not screens, result["loaded"]
    assert result["collector"] == [0, True]  # the console's garbage-collector tuning stays with the console
    assert "Employee sync completed" in done.stderr


def test_two_services_elect_one_leader_and_kill_9_hands_over(
    make_config, server_url, firestore_client, tmp_path, processes
):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(3)})
    base = make_config(server_url, sync={"interval": 10, "force_interval": 3600})
    port_a, port_b = free_port(), free_port()
    a = Headless(write_toml(tmp_path / "a.toml", with_api(base, port_a)))
    processes.append(a)
    a.wait_line("Leading")
    a.wait_line("Employee sync completed")
    b = Headless(write_toml(tmp_path / "b.toml", with_api(base, port_b)))
    processes.append(b)
    b.wait_line("Control API on")
    leader_a = f"{socket.gethostname()}:{a.pid}"

    status_b = wait_for(lambda: (s := api_status(port_b))["state"] == "standby" and s, 20, "B to stand by")
    assert status_b["is_leader"] is False and status_b["leader"] == leader_a
    assert f"{leader_a} leads" in status_b["detail"]
    status_a = api_status(port_a)
    assert status_a["is_leader"] is True and status_a["leader"] == leader_a
    assert json.loads(run_cli("status", "--json", "--config", str(tmp_path / "b.toml")).stdout)["leader"] == leader_a
    assert "Leading" not in b.text()

    a.process.kill()  # kill -9: no clean-up, the server drops the lock with the connection
    assert a.wait(10) == -signal.SIGKILL
    write_docs(firestore_client, {"after-kill": employee(77)})
    b.wait_line("Leading", timeout=base.sync.interval)  # within one interval of the leader's death
    wait_for(lambda: "after-kill" in mirror_rows(base), 40, "B to sync the document written after the kill")
    status_b = api_status(port_b)
    assert status_b["is_leader"] is True and status_b["leader"] == f"{socket.gethostname()}:{b.pid}"

    # Never two at once: A's runs all come before B's, and none is left running.
    runs = runs_table(base)
    pids = [r["pid"] for r in runs]
    assert pids == sorted(pids, key=lambda p: p == b.pid) and pids[-1] == b.pid, pids
    b.signal(signal.SIGTERM)
    assert b.wait(10) == 0, b.text()
    assert lock_is_free(base)
    assert not [r for r in runs_table(base) if r["status"] == "running"]
