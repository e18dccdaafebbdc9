"""Goals and the JSON the benchmarks print: one object per benchmark, then a summary."""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Goal:
    benchmark: str
    what: str
    figure: float
    op: str  # ">=" or "<="
    target: float
    unit: str = ""

    @property
    def passed(self) -> bool:
        return self.figure >= self.target if self.op == ">=" else self.figure <= self.target

    def as_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "what": self.what,
            "figure": self.figure,
            "goal": f"{self.op} {self.target:g}{self.unit}",
            "pass": self.passed,
        }


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, default=str), flush=True)


def summary(goals: Sequence[Goal], sizes: dict[str, int], quick: bool) -> dict[str, Any]:
    return {
        "benchmark": "summary",
        "sizes": sizes,
        "quick": quick,
        "goals": [g.as_dict() for g in goals],
        "all_passed": all(g.passed for g in goals),
        "note": "quick sizes: the goals are stated for the full sizes" if quick else None,
    }


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """Milliseconds (or any figures) summarised: median, tail percentiles, mean and max."""
    ordered = sorted(values)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "p50": rounded(statistics.median(ordered), 2),
        "p90": rounded(cuts[89], 2),
        "p95": rounded(cuts[94], 2),
        "p99": rounded(cuts[98], 2),
        "mean": rounded(statistics.fmean(ordered), 2),
        "max": rounded(ordered[-1], 2),
    }


def rounded(value: float, digits: int = 3) -> float:
    return round(value, digits)


def warn(message: str) -> None:
    print(f"[bench] warning: {message}", file=sys.stderr, flush=True)
