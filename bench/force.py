"""(b) A force sync into a fresh table, and an unchanged re-run, against just streaming the same query.

The stream is the floor: the same query with the same field mask
(``FirestoreSource.all_query()``), iterated and thrown away. The force sync
reads the same documents in cursor pages and maps, diffs and writes them into
a fresh table, on MariaDB and on PostgreSQL; the re-run reads them again and
finds nothing to write. Each round streams once and syncs on each server (the
stream first, then last, in turn), and the median of the per-round ratios is
the figure, which damps a noisy machine.
"""

from __future__ import annotations

import time
from typing import Any

from core.engine import SyncEngine
from core.source import FirestoreSource

from .harness import TARGETS, Servers, say, unique
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


def force_sync(servers: Servers, project: str, sizes: Sizes, target: str) -> tuple[float, float, dict[str, int]]:
    """A force sync into a fresh table, then a second one that finds nothing changed: seconds of each."""
    url = servers.database("force", target)
    config = servers.config(project, url, page_size=sizes.page_size, batch_size=sizes.batch_size)
    source = FirestoreSource(config)
    engine = SyncEngine(config, source=source)
    try:
        started = time.perf_counter()
        result = engine.run(force=True, trigger="bench")
        fresh = time.perf_counter() - started
        if result.status != "ok":
            raise RuntimeError(f"force sync on {target} failed: {result.reason}")
        started = time.perf_counter()
        again = engine.run(force=True, trigger="bench")
        unchanged = time.perf_counter() - started
        if again.status != "ok" or again.counts.written:
            raise RuntimeError(f"the unchanged force re-run on {target} failed or wrote: {again.reason}")
    finally:
        engine.close()
    return fresh, unchanged, result.counts.as_dict()


def run(servers: Servers, sizes: Sizes) -> tuple[dict[str, Any], list[Goal]]:
    n = sizes.force_docs
    project = unique("bench-force")
    seeded = servers.seed(project, n)
    say(f"force: seeded {n} documents in {seeded:.1f} s; {sizes.pairs} alternating rounds on {', '.join(TARGETS)}")
    # One unmeasured read first: the emulator's JIT warms up on it, not on the first measured run.
    stream(servers, project)
    pairs = []
    for i in range(sizes.pairs):
        # The stream before the syncs, then after them: whichever runs first pays for a cold cache.
        order = ("stream", *TARGETS) if i % 2 == 0 else (*TARGETS, "stream")
        pair: dict[str, Any] = {"order": "-".join(order)}
        for what in order:
            if what == "stream":
                pair["stream_s"], pair["streamed"] = stream(servers, project)
            else:
                pair[f"{what}_sync_s"], pair[f"{what}_rerun_s"], counts = force_sync(servers, project, sizes, what)
                pair[f"{what}_inserted"] = counts["inserted"]
        for target in TARGETS:
            pair[f"{target}_ratio"] = pair[f"{target}_sync_s"] / pair["stream_s"]
            pair[f"{target}_rerun_ratio"] = pair[f"{target}_rerun_s"] / pair["stream_s"]
        say(
            f"force: round {i + 1}: stream {pair['stream_s']:.2f} s; "
            + "; ".join(f"{t} sync {pair[f'{t}_sync_s']:.2f} s, re-run {pair[f'{t}_rerun_s']:.2f} s" for t in TARGETS)
        )
        pairs.append(pair)
    result: dict[str, Any] = {
        "benchmark": "force",
        "documents": n,
        "page_size": sizes.page_size,
        "batch_size": sizes.batch_size,
        "seed_s": rounded(seeded, 2),
        "pairs": [{k: rounded(v) if isinstance(v, float) else v for k, v in p.items()} for p in pairs],
        "median_stream_s": rounded(median([p["stream_s"] for p in pairs])),
    }
    goals = []
    for target in TARGETS:
        ratio = median([p[f"{target}_ratio"] for p in pairs])
        rerun = median([p[f"{target}_rerun_ratio"] for p in pairs])
        result[target] = {
            "median_sync_s": rounded(median([p[f"{target}_sync_s"] for p in pairs])),
            "median_rerun_s": rounded(median([p[f"{target}_rerun_s"] for p in pairs])),
            "median_ratio": rounded(ratio),
            "median_rerun_ratio": rounded(rerun),
            "all_inserted": all(p[f"{target}_inserted"] == n and p["streamed"] == n for p in pairs),
        }
        on = "" if target == "mariadb" else f" on {target}"  # MariaDB's goal keeps the name it always had
        goals.append(
            Goal("force", f"force sync{on} / stream wall time (median of pairs)", rounded(ratio), "<=", GOAL_RATIO)
        )
        goals.append(
            Goal(
                "force",
                f"unchanged force re-run{on} / stream wall time (median of pairs)",
                rounded(rerun),
                "<=",
                GOAL_RATIO,
            )
        )
    return result, goals
