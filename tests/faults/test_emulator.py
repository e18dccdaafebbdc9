"""The emulator stopped and restarted, again and again, under a listening service and a steady write load.

tests/test_listen.py restarts the emulator once under an in-process service.
Here a real ``empsync --no-ui`` listens while the app writes at a steady rate;
the emulator is killed ``emulator_restarts`` times at random moments and
started again on the same port with the data it held (its own export, taken
with the writes paused, so Firestore's truth survives the restart). The
service must come back to ``listening`` by itself each time, the changes
written just before and just after every outage must all arrive, and no
thread may be left behind by an outage.
"""

from __future__ import annotations

import signal
import time

import pytest

from ..conftest import write_toml
from ..service_support import TEXT_LINE
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
    seed_docs,
    seeded,
    settled,
)

pytestmark = pytest.mark.integration


def settled_threads(pid: int) -> int:
    """The service's thread count, the least of a few samples (gRPC starts short-lived ones)."""
    counts = []
    for _ in range(6):
        with open(f"/proc/{pid}/status") as status:
            counts.append(next(int(line.split()[1]) for line in status if line.startswith("Threads:")))
        time.sleep(0.5)
    return min(counts)


def test_emulator_restarts_under_a_listening_service(
    own_emulator, project, make_config, mysql_url, tmp_path, processes
):
    from ..service_support import Headless

    rng = seeded("emulator-restart")
    emu = own_emulator
    ids = [doc_id(i) for i in range(SIZES.listen_docs)]
    seed_docs(emu.host, project, {key: settled(i) for i, key in enumerate(ids)})
    config = make_config(
        mysql_url, source={"emulator_host": emu.host, "timeout": 3}, sync=LISTEN, target={"batch_size": 20}
    )
    path = write_toml(tmp_path / "sync.toml", config)
    force_sync(path)
    db = Db(mysql_url)
    proc = Headless(path)
    processes.append(proc)
    proc.wait_line("Status: listening", timeout=90)
    writer = Writer(emu.host, project, ids, SIZES.write_rate, rng).start()
    threads = [settled_threads(proc.pid)]
    outages = []
    try:
        for k in range(SIZES.emulator_restarts):
            time.sleep(rng.uniform(1.0, 3.0))  # writes flowing, micro-batches applied
            writer.pause()
            emu.export(project, tmp_path / f"export-{k}")
            emu.stop(kill=True)
            mark = proc.count()
            down = rng.uniform(0.5, 3.0)
            time.sleep(down)
            assert proc.process.poll() is None, proc.text()[-3000:]
            emu.start()
            writer.resume()
            proc.wait_line("Status: listening", timeout=180, after=mark)
            threads.append(settled_threads(proc.pid))
            outages.append((k, round(down, 1), writer.committed))
        time.sleep(2.0)
        writer.stop()
        print(
            f"outages (n, seconds down, writes so far): {outages}; writer failures {writer.failed}; threads {threads}"
        )
        # A stream closed while the server was away must not live on (it did: a thread and a stream per outage).
        assert threads[-1] <= threads[0] + 1, threads
        wait_converged(config, 120, alive=alive_check(proc))
        report = cli_verify(path)
        assert report["differences"] == 0 and report["rows"] == len(ids) + writer.new, report
        resubscribed = proc.text().count("Re-subscribing")
        assert resubscribed >= SIZES.emulator_restarts, proc.text()[-3000:]

        proc.signal(signal.SIGTERM)
        assert proc.wait(15) == 0, proc.text()[-3000:]
        # A broken stream's library traceback (google-api-core's consumer thread) is one WARNING line.
        stray = [line for line in proc.lines if not TEXT_LINE.match(line)]
        assert stray == [], "more than formatted log lines on stderr:\n" + "\n".join(stray[:30])
        audit = audit_report(mysql_url)
        assert audit.replays == [] and audit.repeats == [], audit.to_json()
        assert set(audit.operations) <= {"insert", "update"}
        assert "running" not in {r.status for r in db.runs()}
    finally:
        writer.stop()
        db.close()
