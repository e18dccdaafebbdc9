"""(c) Peak RSS of a force sync at two sizes, each in a fresh interpreter.

The parent seeds two projects and runs ``python -m bench.rss CONFIG_JSON`` for
each; the child builds the engine, notes its resident size, runs one force
sync into a fresh MariaDB table and reports its peak resident size, the
kernel's ``VmHWM``. (``ru_maxrss`` is printed beside it but is not the figure:
Linux carries the forking parent's high-water mark across exec into it, so it
can report the bench process's size rather than the child's.) The figure is
how much the peak grows from the small run to the large one: a run must not
hold the collection in memory.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from typing import Any

from .harness import Servers, make_config, say, unique
from .options import Sizes
from .report import Goal, rounded

GOAL_GROWTH_MB = 40.0


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One force sync in this process; returns its memory figures in MB."""
    from core.engine import SyncEngine

    config = make_config(
        spec["emulator_host"], spec["project"], spec["url"], page_size=spec["page_size"], batch_size=spec["batch_size"]
    )
    engine = SyncEngine(config)
    engine.source  # noqa: B018 - build the client before the "before" figure
    before_mb = _status_kb("VmRSS") / 1024
    result = engine.run(force=True, trigger="bench")
    engine.close()
    return {
        "status": result.status,
        "reason": result.reason,
        "inserted": result.counts.inserted,
        "rss_before_run_mb": rounded(before_mb, 1),
        "peak_rss_mb": rounded(_status_kb("VmHWM") / 1024, 1),
        "ru_maxrss_mb": rounded(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def measure(servers: Servers, project: str, count: int, sizes: Sizes) -> dict[str, Any]:
    spec = {
        "emulator_host": servers.emulator.host,
        "project": project,
        "url": servers.database("rss"),
        "page_size": sizes.page_size,
        "batch_size": sizes.batch_size,
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench.rss", json.dumps(spec)], capture_output=True, text=True, timeout=1800, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"rss child failed: {done.stderr.strip()[-2000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    if figures["status"] != "ok" or figures["inserted"] != count:
        raise RuntimeError(f"rss child sync went wrong: {figures}")
    return {"documents": count, **figures}


def run(servers: Servers, sizes: Sizes) -> tuple[dict[str, Any], list[Goal]]:
    runs = []
    for count in (sizes.rss_small, sizes.rss_large):
        project = unique("bench-rss")
        seeded = servers.seed(project, count)
        say(f"rss: seeded {count} documents in {seeded:.1f} s; force sync in a fresh process")
        runs.append({**measure(servers, project, count, sizes), "seed_s": rounded(seeded, 2)})
    growth = runs[1]["peak_rss_mb"] - runs[0]["peak_rss_mb"]
    result = {"benchmark": "rss", "target": "mariadb", "runs": runs, "growth_mb": rounded(growth, 1)}
    what = f"peak RSS growth, {sizes.rss_small} to {sizes.rss_large} documents"
    return result, [Goal("rss", what, rounded(growth, 1), "<=", GOAL_GROWTH_MB, " MB")]


if __name__ == "__main__":
    print(json.dumps(child(json.loads(sys.argv[1]))))
