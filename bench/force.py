"""(b) A force sync into a fresh table against just streaming the same query.

The stream is the floor: the same query with the same field mask
(``FirestoreSource.all_query()``), iterated and thrown away. The force sync
reads the same documents in cursor pages and maps, diffs and writes them into
a fresh MariaDB table. Runs alternate in pairs (the order flips each pair) and
the median of the per-pair ratios is the figure, which damps a noisy machine.
"""

from __future__ import annotations

import time
from typing import Any

from core.engine import SyncEngine
from core.source import FirestoreSource

from .harness import Servers, say, unique
from .options import Sizes
from .report import Goal, median, rounded

GOAL_RATIO = 1.3


def stream(servers: Servers, project: str) -> tuple[float, int]:
    source = FirestoreSource(servers.config(project, "sqlite://"))
    try:
        started = time.perf_counter()
        count = sum(1 for _ in source.all_query().stream())
        return time.perf_counter() - started, count
    finally:
        source.close()


def force_sync(servers: Servers, project: str, sizes: Sizes) -> tuple[float, dict[str, int]]:
    config = servers.config(project, servers.database("force"), page_size=sizes.page_size, batch_size=sizes.batch_size)
    source = FirestoreSource(config)
    engine = SyncEngine(config, source=source)
    try:
        started = time.perf_counter()
        result = engine.run(force=True, trigger="bench")
        seconds = time.perf_counter() - started
    finally:
        engine.close()
    if result.status != "ok":
        raise RuntimeError(f"force sync failed: {result.reason}")
    return seconds, result.counts.as_dict()


def run(servers: Servers, sizes: Sizes) -> tuple[dict[str, Any], list[Goal]]:
    n = sizes.force_docs
    project = unique("bench-force")
    seeded = servers.seed(project, n)
    say(f"force: seeded {n} documents in {seeded:.1f} s; {sizes.pairs} alternating pairs")
    # One unmeasured read first: the emulator's JIT warms up on it, not on the first measured run.
    stream(servers, project)
    pairs = []
    for i in range(sizes.pairs):
        order = ("sync", "stream") if i % 2 == 0 else ("stream", "sync")
        pair: dict[str, Any] = {"order": "-".join(order)}
        for what in order:
            if what == "sync":
                pair["sync_s"], counts = force_sync(servers, project, sizes)
                pair["inserted"], pair["firestore_reads"] = counts["inserted"], counts["firestore_reads"]
            else:
                pair["stream_s"], pair["streamed"] = stream(servers, project)
        pair["ratio"] = pair["sync_s"] / pair["stream_s"]
        say(f"force: pair {i + 1}: sync {pair['sync_s']:.2f} s, stream {pair['stream_s']:.2f} s")
        pairs.append(pair)
    ratio = median([p["ratio"] for p in pairs])
    result = {
        "benchmark": "force",
        "target": "mariadb",
        "documents": n,
        "page_size": sizes.page_size,
        "batch_size": sizes.batch_size,
        "seed_s": rounded(seeded, 2),
        "pairs": [{k: rounded(v) if isinstance(v, float) else v for k, v in p.items()} for p in pairs],
        "median_sync_s": rounded(median([p["sync_s"] for p in pairs])),
        "median_stream_s": rounded(median([p["stream_s"] for p in pairs])),
        "median_ratio": rounded(ratio),
        "all_inserted": all(p["inserted"] == n and p["streamed"] == n for p in pairs),
    }
    return result, [Goal("force", "force sync / stream wall time (median of pairs)", rounded(ratio), "<=", GOAL_RATIO)]
