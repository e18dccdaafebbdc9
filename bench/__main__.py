"""`python -m bench`: start private servers, run the chosen benchmarks, print JSON lines."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from . import apply, force, idle, rss
from .harness import Servers, say, servers
from .options import Sizes, parse
from .report import Goal, emit, summary

Benchmark = Callable[[Servers, Sizes], tuple[dict[str, Any], list[Goal]]]
RUNNERS: dict[str, Benchmark] = {"apply": apply.run, "force": force.run, "rss": rss.run, "idle": idle.run}


def main(argv: list[str] | None = None) -> int:
    sizes, chosen, args = parse(argv)
    goals: list[Goal] = []
    with servers() as running:
        for name in chosen:
            result, found = RUNNERS[name](running, sizes)
            emit(result)
            goals.extend(found)
    report = summary(goals, asdict(sizes), args.quick)
    emit(report)
    for goal in goals:
        say(
            f"{'PASS' if goal.passed else 'MISS'} {goal.benchmark}: {goal.what}: {goal.figure} (goal {goal.op} {goal.target:g})"
        )
    return 1 if args.strict and not report["all_passed"] else 0


if __name__ == "__main__":
    sys.exit(main())
