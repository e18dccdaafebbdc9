"""(b) A force run, and an unchanged re-run, against just reading the same query.

The floor is a bare read of the same query with the same field mask
(``FirestoreSource.all_query()``): the client's ``Query.stream()`` iterated
and thrown away. Beside it, the same query read in cursor pages of
``page_size`` (``start_after``, the read shape force runs used before, which
the emulator answers by scanning from the start for every page), and
empsync's own reader alone (``FirestoreSource.read``, one resumable stream
decoded by ``firestore_compat``).

Then the product, on MariaDB and on PostgreSQL: a force run into a fresh
table (every document an insert), a second force run that finds every row unchanged (it compares each
row's values with the document, the healing check), and a full read that
trusts the stored hashes (a normal run without ``updated_field``): the
difference between the last two is what comparing values costs. MariaDB's
figures keep their names; PostgreSQL's carry its name first.

Each round measures every side once, the order rotating between rounds, and
the medians of the per-round ratios are the figures, which damps a noisy
machine. Client CPU seconds (this process, every thread) are reported beside
wall time: on a two-core host the emulator and MariaDB share the cores, so
CPU per document is what a run can still save.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from core.engine import SyncEngine
from core.source import FirestoreSource

from .harness import TARGETS, Servers, say, unique
from .options import Sizes
from .report import Goal, median, rounded

GOAL_RATIO = 1.3


def measured(work: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of this process, what ``work`` returned)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = work()
    return time.perf_counter() - wall, time.process_time() - cpu, out


class Sides:
    """Everything one round measures, on one seeded project."""

    def __init__(self, servers: Servers, project: str, sizes: Sizes) -> None:
        self.servers, self.project, self.sizes = servers, project, sizes
        self.read_config = servers.config(project, "sqlite://", page_size=sizes.page_size)

    def stream(self) -> int:
        source = FirestoreSource(self.read_config)
        try:
            return sum(1 for _ in source.all_query().stream())
        finally:
            source.close()

    def paged(self) -> int:
        source = FirestoreSource(self.read_config)
        try:
            query, size, count, cursor = source.all_query(), self.sizes.page_size, 0, None
            while True:
                page = query.limit(size) if cursor is None else query.limit(size).start_after(cursor)
                snapshots = list(page.stream())
                count += len(snapshots)
                if len(snapshots) < size:
                    return count
                cursor = snapshots[-1]
        finally:
            source.close()

    def reader(self) -> int:
        source = FirestoreSource(self.read_config)
        try:
            return sum(len(page) for page in source.all_pages())
        finally:
            source.close()

    def product(self, target: str) -> dict[str, Any]:
        """A force run into a fresh table, an unchanged force re-run, and a hash-trusting full read."""
        url = self.servers.database("force", target)
        key = _prefix(target)
        sizes = self.sizes
        config = self.servers.config(self.project, url, page_size=sizes.page_size, batch_size=sizes.batch_size)
        trusting = self.servers.config(
            self.project, url, page_size=sizes.page_size, batch_size=sizes.batch_size, updated_field=""
        )
        out: dict[str, Any] = {}
        for name, cfg, force in (("force", config, True), ("rerun", config, True), ("trusting", trusting, False)):
            engine = SyncEngine(cfg)
            try:
                wall, cpu, result = measured(lambda e=engine, f=force: e.run(force=f, trigger="bench"))
            finally:
                engine.close()
            if result.status != "ok":
                raise RuntimeError(f"{name} run on {target} failed: {result.reason}")
            out[f"{key}{name}_s"], out[f"{key}{name}_cpu_s"] = wall, cpu
            out[f"{key}{name}_inserted"], out[f"{key}{name}_unchanged"] = (
                result.counts.inserted,
                result.counts.unchanged,
            )
        return out


def _prefix(target: str) -> str:
    return "" if target == "mariadb" else f"{target}_"


def run(servers: Servers, sizes: Sizes) -> tuple[dict[str, Any], list[Goal]]:
    n = sizes.force_docs
    project = unique("bench-force")
    seeded = servers.seed(project, n)
    sides = Sides(servers, project, sizes)
    say(f"force: seeded {n} documents in {seeded:.1f} s; {sizes.pairs} rounds")
    sides.stream()  # unmeasured: the emulator's JIT warms up on it, not on the first measured read
    reads: dict[str, Callable[[], int]] = {"stream": sides.stream, "paged": sides.paged, "reader": sides.reader}
    rounds = []
    for i in range(sizes.pairs):
        names = [*reads, *TARGETS]
        order = names[i % len(names) :] + names[: i % len(names)]
        figures: dict[str, Any] = {"order": "-".join(order)}
        for what in order:
            if what in TARGETS:
                figures.update(sides.product(what))
                continue
            wall, cpu, count = measured(reads[what])
            if count != n:
                raise RuntimeError(f"{what} read {count} of {n} documents")
            figures[f"{what}_s"], figures[f"{what}_cpu_s"] = wall, cpu
        for side in ("reader", "paged", *(f"{_prefix(t)}{run}" for t in TARGETS for run in ("force", "rerun"))):
            figures[f"{side}_vs_stream"] = figures[f"{side}_s"] / figures["stream_s"]
        for key in map(_prefix, TARGETS):
            figures[f"{key}compare_cost_s"] = figures[f"{key}rerun_s"] - figures[f"{key}trusting_s"]
            figures[f"{key}compare_cost_cpu_s"] = figures[f"{key}rerun_cpu_s"] - figures[f"{key}trusting_cpu_s"]
        say(
            f"force: round {i + 1}: stream {figures['stream_s']:.1f} s, paged {figures['paged_s']:.1f} s; "
            + "; ".join(
                f"{t}: force {figures[f'{_prefix(t)}force_s']:.1f} s, unchanged re-run "
                f"{figures[f'{_prefix(t)}rerun_s']:.1f} s"
                for t in TARGETS
            )
        )
        rounds.append(figures)

    def mid(key: str) -> float:
        return rounded(median([r[key] for r in rounds]))

    result = {
        "benchmark": "force",
        "targets": list(TARGETS),
        "documents": n,
        "page_size": sizes.page_size,
        "batch_size": sizes.batch_size,
        "seed_s": rounded(seeded, 2),
        "rounds": [{k: rounded(v) if isinstance(v, float) else v for k, v in r.items()} for r in rounds],
        **{f"median_{k}": mid(k) for k in rounds[0] if k != "order" and not k.endswith(("_inserted", "_unchanged"))},
        "all_inserted": all(
            r[f"{key}force_inserted"] == n and r[f"{key}rerun_unchanged"] == n
            for r in rounds
            for key in map(_prefix, TARGETS)
        ),
        # Kept for older readers of this benchmark's JSON.
        "median_ratio": mid("force_vs_stream"),
    }
    goals = []
    for target in TARGETS:
        key, on = _prefix(target), "" if target == "mariadb" else f" on {target}"
        goals += [
            Goal(
                "force",
                f"force sync{on} / stream wall time (median of pairs)",
                mid(f"{key}force_vs_stream"),
                "<=",
                GOAL_RATIO,
            ),
            Goal(
                "force",
                f"unchanged force re-run{on} / stream wall time",
                mid(f"{key}rerun_vs_stream"),
                "<=",
                GOAL_RATIO,
            ),
        ]
    return result, goals
