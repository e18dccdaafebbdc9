"""MariaDB going away under a running service: stopped and restarted mid-run, connections killed mid-batch.

tests/test_service.py takes a database away for 20 s between runs, in
process. Here a real ``empsync --no-ui`` is in the middle of a force run when
its own MariaDB is stopped with a batch waiting to commit — by SIGKILL (crash
recovery on restart) and by SIGTERM, alternately — or when ``KILL CONNECTION``
ends its connections: the one of a batch held just before its commit, or every
one it has, the sync lock's included, while a second service stands by to take the lock over.
Each time the service must fail the batch cleanly, stay up, lead again and
finish; and never may two services sync at the same time.
"""

from __future__ import annotations

import signal
import time

import pytest

from core.emulator import free_port

from ..conftest import write_toml
from ..service_support import Headless, wait_for
from .checks import audit_report
from .support import (
    SIZES,
    Db,
    MidBatch,
    api,
    cli_verify,
    connections,
    doc_id,
    kill_connections,
    overlapping_runs,
    seed_docs,
    seeded,
    settled,
    wait_running,
    with_api,
)

pytestmark = pytest.mark.integration

BATCH = 100


def assert_synced_once(db: Db, url: str, path, total: int) -> None:
    """verify finds nothing, and the audit log holds one insert per document and nothing else."""
    report = cli_verify(path)
    assert report["differences"] == 0 and report["documents"] == report["rows"] == total, report
    audit = audit_report(url)
    assert audit.replays == [] and audit.repeats == [], audit.to_json()
    assert audit.operations == {"insert": total}, audit.operations
    runs = db.runs()
    assert overlapping_runs(runs) == [], "\n".join(str(tuple(r)) for r in runs)


def wait_finished_force(db: Db, proc, after_id: int, timeout: float = 240):
    def done():
        if proc.process.poll() is not None:
            raise RuntimeError(f"the service exited {proc.process.returncode}:\n{proc.text()[-3000:]}")
        run = db.last_run(proc.pid, "force")
        return run is not None and run.id > after_id and run.status == "ok" and run

    try:
        return wait_for(done, timeout, "a completed force run after the last fault", 0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{proc.text()[-3000:]}") from None


def next_force_run(db: Db, proc, port: int, at_least: float, after_id: int, timeout: float = 240):
    """The next force run of ``proc`` once it is past ``at_least`` documents.

    A retry can finish before it is seen past the mark (the poll is away while
    the server restarts); such a run escaped, and a forced one is asked for.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return wait_running(db, proc, "force", at_least, timeout=15, after_id=after_id)
        except AssertionError as exc:
            newest = db.last_run(proc.pid, "force")
            if time.monotonic() > deadline:
                raise AssertionError(f"{exc}\nnewest force run: {newest}\n{proc.text()[-3000:]}") from None
            if newest is not None and newest.id > after_id and newest.status == "ok":
                after_id = newest.id
                api(port, "POST", "trigger", {"force": True})


def test_mariadb_stopped_and_restarted_mid_run(emulator, project, own_mariadb, make_config, tmp_path, processes):
    rng = seeded("mariadb-restart")
    server, total = own_mariadb, SIZES.outage_docs
    database = server.create_database("faults")
    url = server.url(database)
    seed_docs(emulator.host, project, {doc_id(i): settled(i) for i in range(total)})
    port = free_port()
    config = make_config(
        url, source={"page_size": 1_000}, target={"batch_size": BATCH}, sync={"interval": 300, "force_interval": 3_600}
    )
    path = write_toml(tmp_path / "sync.toml", with_api(config, port))
    db = Db(url)
    proc = Headless(path)
    processes.append(proc)
    hit = []
    try:
        for k in range(SIZES.outages):
            # The first force run, then each retry after an outage: stopped at a random point.
            # (A run hit by an outage may show "running" until the service leads again and closes it.)
            after = hit[-1][2] if hit else 0
            run = next_force_run(db, proc, port, rng.uniform(0, total - 3 * BATCH), after)
            # Stopped while a batch waits to commit: unheld, a run near its end could finish
            # between being seen and the stop (SIGTERM lets a commit in flight through).
            held = MidBatch(server, database, run.id)
            try:
                held.wait_blocked()
                server.stop(kill=k % 2 == 0)
            finally:
                held.abandon()
            down = rng.uniform(0.5, 2.0)
            time.sleep(down)
            server.start()
            hit.append((k, "SIGKILL" if k % 2 == 0 else "SIGTERM", run.id, run.fetched, round(down, 1)))
            assert proc.process.poll() is None, proc.text()[-3000:]
        print("outages (n, how, run, fetched, seconds down):", hit)
        wait_finished_force(db, proc, after_id=hit[-1][2])
        runs = {r.id: r for r in db.runs()}
        # The runs the outages hit ended failed, or interrupted when not even that could be written.
        assert all(runs[run_id].status in ("failed", "interrupted") for _, _, run_id, _, _ in hit), runs
        assert "Lost the sync lock" in proc.text() or "Employee sync failed" in proc.text()
        proc.signal(signal.SIGTERM)
        assert proc.wait(15) == 0, proc.text()[-3000:]
        assert_synced_once(db, url, path, total)
    finally:
        db.close()


def test_connections_killed_mid_batch_while_a_standby_waits(
    emulator, mariadb, project, make_config, mysql_url, tmp_path, processes
):
    rng = seeded("kill-connection")
    total = SIZES.outage_docs
    database = mysql_url.rsplit("/", 1)[1]
    seed_docs(emulator.host, project, {doc_id(i): settled(i) for i in range(total)})
    config = make_config(
        mysql_url,
        source={"page_size": 1_000},
        target={"batch_size": BATCH},
        sync={"interval": 300, "force_interval": 3_600},
    )
    ports = (free_port(), free_port())
    paths = [write_toml(tmp_path / f"{n}.toml", with_api(config, port)) for n, port in zip("ab", ports, strict=True)]
    db = Db(mysql_url)
    root = mariadb.root()
    a = Headless(paths[0])
    processes.append(a)
    a.wait_line("Leading")
    b = Headless(paths[1])  # the standby: it takes the lock the moment it is free
    processes.append(b)
    b.wait_line("Status: standby")
    services = list(zip((a, b), ports, strict=True))
    hit = []
    try:
        for k in range(SIZES.connection_kills):
            run = force_running(db, services, rng.uniform(0, total - 3 * BATCH))
            if k % 2 == 0:
                held = MidBatch(mariadb, database, run.id)
                try:
                    victim = held.wait_blocked()
                    killed = kill_connections(root, [victim])
                    # Gone before the hold ends, or the batch could still commit on it.
                    wait_for(lambda v=victim: v not in connections(root, database), 30, "the killed connection to end")
                finally:
                    held.release()
                what = "the batch's"
            else:
                killed = kill_connections(root, connections(root, database))
                what = "all, the lock's too"
            assert killed >= 1
            # The batch is lost with its connection, or with the lock: the run fails, the next one carries on.
            # Within the driver's read timeout (120 s) at worst: a socket the kill left open fails then.
            try:
                ended = wait_for(
                    lambda r=run: (now := run_by_id(db, r.id)).status != "running" and now, 150, f"run {run.id} to fail"
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n" + "\n".join(p.text()[-3000:] for p, _ in services)) from None
            hit.append((k, what, run.id, run.fetched, killed, ended.status))
            assert ended.status == "failed", (ended, [p.text()[-3000:] for p, _ in services])
        print("connection kills (n, which, run, fetched, killed, status):", hit)
        last = hit[-1][2]
        wait_for(
            lambda: any(
                (r := db.last_run(p.pid, "force")) is not None and r.id > last and r.status == "ok" for p in (a, b)
            ),
            240,
            "a completed force run after the last kill",
            0.2,
        )
        assert a.process.poll() is None and b.process.poll() is None
        for p in (a, b):
            p.signal(signal.SIGTERM)
        assert a.wait(15) == 0 and b.wait(15) == 0, a.text()[-2000:] + b.text()[-2000:]
        assert_synced_once(db, mysql_url, paths[0], total)
    finally:
        root.close()
        db.close()


def run_by_id(db: Db, run_id: int):
    return next(r for r in db.runs() if r.id == run_id)


def force_running(db: Db, services, at_least: float, timeout: float = 240):
    """The running force run of whichever service leads, once past ``at_least`` documents.

    When none is running (the last one survived its fault and finished), the
    leader is asked for one through its API.
    """
    asked = 0.0

    def check():
        nonlocal asked
        for proc, _ in services:
            if proc.process.poll() is not None:
                raise RuntimeError(f"pid {proc.pid} exited:\n{proc.text()[-3000:]}")
            run = db.last_run(proc.pid, "force")
            if run is not None and run.status == "running":
                return run.fetched >= at_least and run
        if time.monotonic() - asked > 5:
            for _, port in services:
                code, status = api(port, "GET", "status")
                if code == 200 and status.get("is_leader") and not status.get("current_run"):
                    api(port, "POST", "trigger", {"force": True})
                    asked = time.monotonic()
        return None

    return wait_for(check, timeout, f"a running force run past {at_least:.0f} documents", 0.005)
