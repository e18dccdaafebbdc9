"""kill -9 of the service at random moments of a large force run, restarting it each time.

tests/test_faults_core.py kills one ``empsync sync --force`` once, at a chosen
point. Here a real ``empsync --no-ui`` is killed ``force_kills`` times, each
at a random number of documents into its run plus a random fraction of a
batch, so kills land while reading, mapping, writing or committing. Each
restart starts the force run over; it must find the committed rows unchanged
and carry on. After every kill the table holds whole batches only (each row
with its audit row); at the end verify finds no difference and the audit log
holds one insert per document and nothing else.
"""

from __future__ import annotations

import signal

import pytest

from ..conftest import write_toml
from ..service_support import Headless
from .checks import audit_report
from .support import SIZES, Db, cli_verify, doc_id, force_sync, one_shot, seed_docs, seeded, settled, wait_running

pytestmark = pytest.mark.integration


def test_kill_9_at_random_moments_of_a_large_force_run(emulator, project, make_config, mysql_url, tmp_path, processes):
    rng = seeded("force-kill")
    total, kills = SIZES.force_docs, SIZES.force_kills
    batch = 100 if total <= 5_000 else 250
    seed_docs(emulator.host, project, {doc_id(i): settled(i) for i in range(total)})
    config = make_config(
        mysql_url,
        source={"page_size": 1_000},
        target={"batch_size": batch},
        sync={"interval": 300, "force_interval": 3_600},
    )
    path = write_toml(tmp_path / "sync.toml", config)
    db = Db(mysql_url)
    moments = []
    try:
        for k in range(kills):
            # The service force-runs at start while no force run has completed; once one
            # has (a kill that came too late), the one-shot command takes over the kills.
            finished = db.count("empsync_runs", "kind = 'force' AND status = 'ok'")
            proc = Headless(path) if not finished else OneShot(path)
            processes.append(proc)
            at = rng.uniform(0, total - 3 * batch)
            wait_running(db, proc, "force", at)
            proc.process.send_signal(signal.SIGKILL)
            assert proc.wait(30) == -signal.SIGKILL
            run = db.last_run(proc.pid, "force")
            rows = db.count("employees")
            inserts = db.count("empsync_changes", "operation = 'insert'")
            moments.append((k, round(at), run.fetched, run.status, rows))
            # Whole batches only: every committed row came with its audit row, nothing else did.
            assert rows == inserts == db.count("empsync_changes"), (k, rows, inserts)
            assert rows < total or run.status == "ok"
        print("kills (n, aimed at, fetched, status, rows):", moments)
        committed = db.count("employees")
        final = force_sync(path)
        assert (final["status"], final["inserted"], final["unchanged"], final["deleted"], final["rejected"]) == (
            "ok",
            total - committed,
            committed,
            0,
            0,
        )

        report = cli_verify(path)
        assert report["differences"] == 0 and report["documents"] == report["rows"] == total, report
        audit = audit_report(mysql_url)
        assert audit.replays == [] and audit.repeats == [], audit.to_json()
        assert audit.operations == {"insert": total} and audit.documents == total
        statuses = [r.status for r in db.runs() if r.kind == "force"]
        interrupted = sum(1 for _, _, _, status, _ in moments if status == "running")
        assert statuses.count("interrupted") == interrupted and statuses[-1] == "ok", statuses
        assert "running" not in statuses
    finally:
        db.close()


class OneShot:
    """``empsync sync --force`` in the background, with the interface of Headless the loop uses."""

    def __init__(self, path) -> None:
        self.process = one_shot(path, "sync", "--force")

    @property
    def pid(self) -> int:
        return self.process.pid

    def text(self) -> str:
        return ""

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self.process.communicate()
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()
