"""`python -m bench`: start private servers, run the chosen benchmarks, print JSON lines.

stdout carries one JSON object per benchmark and then a summary with each goal
beside its figure; progress goes to stderr. Exit 0 when the benchmarks ran
(1 with --strict and a missed goal, or when a benchmark failed to run; 2 when
a server cannot start).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from typing import Any

from core.errors import EmpsyncError
from tests.servers import ServerMissing

from . import apply, console, force, idle, latency, rss
from .harness import Servers, say, servers
from .options import Sizes, parse
from .report import Goal, emit, summary, warn
from .summary import table

Benchmark = Callable[[Servers, Sizes], tuple[dict[str, Any], list[Goal]]]
RUNNERS: dict[str, Benchmark] = {
    "apply": apply.run,
    "force": force.run,
    "rss": rss.run,
    "idle": idle.run,
    "latency": latency.runner,
    "console": console.run,
}


def main(argv: list[str] | None = None) -> int:
    sizes, chosen, args = parse(argv)
    goals: list[Goal] = []
    broken: list[str] = []
    with ExitStack() as stack:
        try:
            running = stack.enter_context(servers())
        except (ServerMissing, EmpsyncError, OSError, subprocess.SubprocessError) as exc:
            print(f"bench: cannot start the servers: {exc}", file=sys.stderr)
            print("bench: `make servers` installs MariaDB, PostgreSQL and the Firestore emulator", file=sys.stderr)
            return 2
        for name in chosen:
            try:
                result, found = RUNNERS[name](running, sizes)
            except (RuntimeError, EmpsyncError) as exc:
                # One benchmark going wrong still leaves the others' figures.
                warn(f"{name} failed: {exc}")
                emit({"benchmark": name, "error": str(exc)})
                broken.append(name)
                continue
            emit(result)
            goals.extend(found)
    report = summary(goals, asdict(sizes), args.quick)
    report["failed_to_run"] = broken
    emit(report)
    for goal in goals:
        verdict = "PASS" if goal.passed else "MISS"
        say(f"{verdict} {goal.benchmark}: {goal.what}: {goal.figure} (goal {goal.op} {goal.target:g})")
    print(table([report]), file=sys.stderr)  # every benchmark's goals, those run elsewhere too
    if broken:
        return 1
    return 1 if args.strict and not report["all_passed"] else 0


if __name__ == "__main__":
    sys.exit(main())
