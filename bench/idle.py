"""(d) Firestore reads of an idle normal run with updated_field set.

After a first (force) sync, nothing changes in Firestore; a normal run reads
only what changed since the stored watermark, which is nothing, and is billed
for one empty query. Two idle runs are made; the figure is the larger count.
"""

from __future__ import annotations

from typing import Any

from core.engine import SyncEngine

from .harness import Servers, say, unique
from .options import Sizes
from .report import Goal

GOAL_READS = 2


def run(servers: Servers, sizes: Sizes) -> tuple[dict[str, Any], list[Goal]]:
    project = unique("bench-idle")
    servers.seed(project, sizes.idle_docs)
    say(f"idle: {sizes.idle_docs} documents, a force sync then two idle normal runs")
    engine = SyncEngine(servers.config(project, servers.database("idle"), batch_size=sizes.batch_size))
    try:
        first = engine.run(force=True, trigger="bench")
        idle = [engine.run(trigger="bench") for _ in range(2)]
    finally:
        engine.close()
    for r in (first, *idle):
        if r.status != "ok":
            raise RuntimeError(f"idle benchmark sync failed: {r.reason}")
    reads = max(r.counts.firestore_reads for r in idle)
    result = {
        "benchmark": "idle",
        "target": "mariadb",
        "documents": sizes.idle_docs,
        "first_sync": {"firestore_reads": first.counts.firestore_reads, "inserted": first.counts.inserted},
        "idle_runs": [
            {"firestore_reads": r.counts.firestore_reads, "fetched": r.counts.fetched, "written": r.counts.written}
            for r in idle
        ],
    }
    return result, [Goal("idle", "Firestore reads of an idle normal run", reads, "<=", GOAL_READS)]
