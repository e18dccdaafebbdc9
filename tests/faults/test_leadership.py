"""Two services racing for leadership while one of them is killed again and again.

tests/test_headless.py shows one kill -9 of a leader handing over to the
standby. Here two real ``empsync --no-ui`` listen on one MariaDB database
under a steady write load; at random moments the one that leads is killed
and restarted at once, so the restarted process races the survivor for the
lock each time. Exactly one may sync at any
moment (no two runs of different processes overlap in time), leadership
always comes back, and nothing is lost or applied twice.
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
    Writer,
    alive_check,
    cli_verify,
    doc_id,
    force_sync,
    overlapping_runs,
    seed_docs,
    seeded,
    settled,
)

pytestmark = pytest.mark.integration


def leader_pid(db: Db) -> int | None:
    value = db.scalar("SELECT value FROM empsync_state WHERE `key` = 'leader'")
    return int(value.rsplit(":", 1)[1]) if value else None


def test_two_services_race_for_leadership_while_one_is_killed_repeatedly(
    emulator, project, make_config, mysql_url, tmp_path, processes
):
    rng = seeded("leadership")
    ids = [doc_id(i) for i in range(SIZES.listen_docs)]
    seed_docs(emulator.host, project, {key: settled(i) for i, key in enumerate(ids)})
    config = make_config(mysql_url, sync=LISTEN, target={"batch_size": 20})
    path = write_toml(tmp_path / "sync.toml", config)
    force_sync(path)
    db = Db(mysql_url)
    a = Headless(path)
    processes.append(a)
    a.wait_line("Status: listening", timeout=90)
    b = Headless(path)
    processes.append(b)
    b.wait_line("Status: standby")
    writer = Writer(emulator.host, project, ids, SIZES.write_rate, rng).start()
    kills = []
    services = {"A": a, "B": b}
    try:
        for k in range(SIZES.leader_kills):
            time.sleep(rng.uniform(0.5, 3.0))
            pid = wait_for(lambda: leader_pid(db), 30, "a leader")
            name = next(n for n, p in services.items() if p.pid == pid)
            victim = services[name]
            victim.process.send_signal(signal.SIGKILL)
            assert victim.wait(30) == -signal.SIGKILL
            services[name] = Headless(path)  # back at once: it races the survivor for the lock
            processes.append(services[name])
            new = wait_for(
                lambda dead=pid: (p := leader_pid(db)) not in (None, dead) and p,
                60,
                "a new leader after the kill",
            )
            winner = next(n for n, p in services.items() if p.pid == new)
            kills.append((k, name, winner + (" (restarted)" if winner == name else "")))
            alive_check(*services.values())()
        writer.stop()
        print(f"kills (n, leader killed, who led next): {kills}; writer {writer.committed} ok / {writer.failed} failed")
        a, b = services["A"], services["B"]
        leader = a if leader_pid(db) == a.pid else b
        wait_for(lambda: "Status: listening" in leader.text(), 90, "the leader listening")
        wait_converged(config, 120, alive=alive_check(a, b))
        report = cli_verify(path)
        assert report["differences"] == 0 and report["rows"] == len(ids) + writer.new, report

        for p in (a, b):
            p.signal(signal.SIGTERM)
        assert a.wait(15) == 0 and b.wait(15) == 0, a.text()[-2000:] + b.text()[-2000:]
        runs = db.runs()
        assert overlapping_runs(runs) == [], "\n".join(str(tuple(r)) for r in runs)
        assert "running" not in {r.status for r in runs}
        audit = audit_report(mysql_url)
        assert audit.replays == [] and audit.repeats == [], audit.to_json()
        assert set(audit.operations) <= {"insert", "update"}
    finally:
        writer.stop()
        db.close()
