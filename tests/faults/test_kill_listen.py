"""kill -9 of a listening service while micro-batches flow under a steady write load.

A real ``empsync --no-ui`` in listen mode, with small batches so that a
steady stream of app writes keeps it applying micro-batches, is killed at a
random moment ``listen_kills`` times — every other kill held (``MidBatch``)
where a micro-batch has written its rows and audit rows but not committed —
and
restarted after a random pause, the writes going on all along. No force run is due during the test (one ran
before it), so nothing but the listener, its catch-up and the polls can
deliver the changes: each restart must resume from the committed watermark,
losing nothing and applying nothing twice.
"""

from __future__ import annotations

import signal
import time

import pytest

from ..conftest import write_toml
from ..service_support import Headless, wait_for
from .checks import audit_report, wait_converged
from .support import (
    LISTEN,
    SIZES,
    Db,
    MidBatch,
    Writer,
    alive_check,
    cli_verify,
    doc_id,
    force_sync,
    seed_docs,
    seeded,
    settled,
)

pytestmark = pytest.mark.integration


def test_kill_9_during_listen_micro_batches_under_a_steady_write_load(
    emulator, mariadb, project, make_config, mysql_url, tmp_path, processes
):
    rng = seeded("listen-kill")
    ids = [doc_id(i) for i in range(SIZES.listen_docs)]
    seed_docs(emulator.host, project, {key: settled(i) for i, key in enumerate(ids)})
    config = make_config(mysql_url, sync=LISTEN, target={"batch_size": 10})
    path = write_toml(tmp_path / "sync.toml", config)
    force_sync(path)  # the safety net ran: none is due while the test runs
    db = Db(mysql_url)
    database = mysql_url.rsplit("/", 1)[1]
    writer = Writer(emulator.host, project, ids, SIZES.write_rate, rng).start()
    kills = []
    try:
        for k in range(SIZES.listen_kills + 1):
            proc = Headless(path)
            processes.append(proc)
            proc.wait_line("Status: listening", timeout=90)
            if k == SIZES.listen_kills:
                break
            # Once this session has applied a few micro-batches, a random moment later.
            wait_for(
                lambda p=proc: (run := db.last_run(p.pid, "listen")) is not None and run.fetched >= 20,
                60,
                "micro-batches of the new session",
            )
            time.sleep(rng.uniform(0.0, 1.5))
            run = db.last_run(proc.pid, "listen")
            held = MidBatch(mariadb, database, run.id) if k % 2 == 0 else None
            try:
                if held is not None:  # aimed: a micro-batch written but not committed
                    held.wait_blocked()
                proc.process.send_signal(signal.SIGKILL)
                assert proc.wait(30) == -signal.SIGKILL
            finally:
                if held is not None:
                    held.release()
            before = run.fetched
            kills.append((k, before, db.last_run(proc.pid, "listen").fetched))
            time.sleep(rng.uniform(0.0, 1.0))  # down for a moment: the app keeps writing
        writer.stop()
        print(
            f"kills (n, applied before, applied at the kill): {kills}; writer {writer.committed} ok / {writer.failed} failed"
        )
        # The load went on all along (a commit the emulator refused now and then is skipped, as by an app).
        assert writer.committed > 0 and writer.failed <= writer.committed // 100, writer.errors
        wait_converged(config, 120, alive=alive_check(proc))
        report = cli_verify(path)
        assert report["differences"] == 0 and report["rows"] == len(ids) + writer.new, report

        proc.signal(signal.SIGTERM)
        assert proc.wait(15) == 0, proc.text()[-3000:]
        audit = audit_report(mysql_url)
        assert audit.replays == [] and audit.repeats == [], audit.to_json()
        assert audit.operations.get("insert") == len(ids) + writer.new
        assert set(audit.operations) <= {"insert", "update"}
        listen = [r for r in db.runs() if r.kind == "listen"]
        assert [r.status for r in listen].count("interrupted") == SIZES.listen_kills, [r.status for r in listen]
        assert "running" not in {r.status for r in db.runs()}
    finally:
        writer.stop()
        db.close()
