"""One table of every benchmark, the goals beside the figures, from the JSON the benchmarks print.

``python -m bench`` prints it (on stderr) after its own run; to gather the
benchmarks that run on their own, feed their JSON lines to it::

    python -m bench > bench.jsonl; python -m bench.latency >> bench.jsonl; python -m bench.soak >> bench.jsonl
    python -m bench.summary bench.jsonl          # or: ... | python -m bench.summary

Where the figures come from, in this order: a ``goals`` list of goal objects
(``{"benchmark", "what", "figure", "goal", "pass"}``, as ``bench``'s summary
line and the soak print them); else the benchmark's own figures, read by the
extractors below (``bench.latency`` run alone prints no goal list). A
benchmark of the catalogue that appears nowhere is listed as not run, with
its goals and the command that runs it, so the table always shows them all.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

# Every benchmark of the issues, its goals (as the benchmarks state them) and how to run it.
CATALOGUE: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "apply": (
        "make bench",
        [
            (f"{phase} throughput{on}, store / row by row", ">= 30x")
            for on in ("", " on postgresql")
            for phase in ("insert", "update")
        ],
    ),
    "force": (
        "make bench",
        [
            (what, "<= 1.3")
            for on in ("", " on postgresql")
            for what in (
                f"force sync{on} / stream wall time (median of pairs)",
                f"unchanged force re-run{on} / stream wall time",
            )
        ],
    ),
    "rss": ("make bench", [("peak RSS growth, small to large force sync", "<= 40 MB")]),
    "idle": ("make bench", [("Firestore reads of an idle normal run", "<= 2")]),
    "latency": (
        "python -m bench.latency",
        [("write to row visible in MariaDB, p50", "<= 50 ms"), ("write to row visible in MariaDB, p99", "<= 250 ms")],
    ),
    "console": (
        "make bench",
        [
            ("key to screen during a force run, p99", "<= 100 ms"),
            ("force run wall time, with / without the fix (median of rounds)", "<= 1.05"),
        ],
    ),
    "soak": (
        "make soak",
        [
            ("faults the service did not recover from", "<= 0"),
            ("documents lost", "<= 0"),
            ("duplicated changes", "<= 0"),
            ("RSS slope within a process (MB/hour)", "<= 10 MB/h"),
        ],
    ),
}


@dataclass(frozen=True)
class Row:
    benchmark: str
    what: str
    figure: str
    goal: str
    verdict: str  # PASS | MISS | not run


def _figure(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


def _goal_row(goal: dict[str, Any]) -> Row:
    return Row(
        str(goal.get("benchmark", "?")),
        str(goal.get("what", "")),
        _figure(goal.get("figure")),
        str(goal.get("goal", "")),
        "PASS" if goal.get("pass") else "MISS",
    )


def _latency(result: dict[str, Any]) -> list[Row]:
    e2e, limits = result["end_to_end_ms"], result.get("goals") or {}
    rows = []
    for key, (what, default) in {"p50": CATALOGUE["latency"][1][0], "p99": CATALOGUE["latency"][1][1]}.items():
        limit = float(limits.get(f"{key}_ms", default.split()[1]))
        rows.append(
            Row("latency", what, _figure(e2e[key]), f"<= {limit:g} ms", "PASS" if e2e[key] <= limit else "MISS")
        )
    return rows


def _soak(result: dict[str, Any]) -> list[Row]:
    rows = [
        Row("soak", "documents lost", _figure(result["lost"]), "<= 0", "PASS" if result["lost"] == 0 else "MISS"),
        Row(
            "soak",
            "duplicated changes",
            _figure(result["duplicated"]),
            "<= 0",
            "PASS" if result["duplicated"] == 0 else "MISS",
        ),
    ]
    slope = result.get("rss", {}).get("slope_mb_per_hour")
    if slope is not None:
        rows.append(
            Row("soak", CATALOGUE["soak"][1][2][0], _figure(slope), "<= 10 MB/h", "PASS" if slope <= 10 else "MISS")
        )
    return rows


# For benchmark lines that carry no goal list of their own.
EXTRACTORS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {"latency": _latency, "soak": _soak}


def rows(objects: Iterable[dict[str, Any]]) -> list[Row]:
    """Goal rows from benchmark JSON objects, then a not-run row for each goal of a benchmark that is missing."""
    found: list[Row] = []
    seen: set[tuple[str, str]] = set()
    pending: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    for obj in objects:
        for name in obj.get("failed_to_run") or ():  # bench's summary line names the ones that broke
            failed.setdefault(str(name), "see its JSON line")
        goals = obj.get("goals")
        if isinstance(goals, list) and all(isinstance(g, dict) and "what" in g for g in goals):
            for row in map(_goal_row, goals):
                if (row.benchmark, row.what) not in seen:
                    seen.add((row.benchmark, row.what))
                    found.append(row)
        elif obj.get("error") and obj.get("benchmark"):
            failed[str(obj["benchmark"])] = str(obj["error"])
        else:
            pending.append(obj)
    covered = {row.benchmark for row in found}
    for obj in pending:
        name = obj.get("benchmark")
        if name in EXTRACTORS and name not in covered:
            try:
                found.extend(EXTRACTORS[name](obj))
                covered.add(name)
            except (KeyError, TypeError, ValueError):
                found.append(Row(str(name), "figures not understood", "", "", "MISS"))
    for name, error in failed.items():
        if name not in covered:
            goals = CATALOGUE.get(name, ("", [("the benchmark", "")]))[1]
            found.extend(Row(name, what, f"(failed: {error[:50]})", goal, "MISS") for what, goal in goals)
            covered.add(name)
    for name, (command, goals) in CATALOGUE.items():
        if name not in covered:
            found.extend(Row(name, what, f"(run: {command})", goal, "not run") for what, goal in goals)
    order = list(CATALOGUE)
    return sorted(found, key=lambda r: order.index(r.benchmark) if r.benchmark in order else len(order))


def table(objects: Iterable[dict[str, Any]]) -> str:
    """The table as text, one benchmark goal per line."""
    body = [("benchmark", "what", "figure", "goal", "result")]
    body += [(r.benchmark, r.what, r.figure, r.goal, r.verdict) for r in rows(objects)]
    widths = [max(len(line[i]) for line in body) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def read_json_lines(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The JSON objects among some lines (other lines, such as progress, are skipped)."""
    objects = []
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                objects.append(value)
    return objects


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.summary", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help="files of JSON lines (default: stdin)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed or a benchmark did not run")
    args = parser.parse_args(argv)
    lines: list[str] = []
    if args.files:
        for name in args.files:
            with open(name, encoding="utf-8") as handle:
                lines.extend(handle)
    else:
        lines.extend(sys.stdin)
    objects = read_json_lines(lines)
    print(table(objects))
    return 1 if args.strict and any(r.verdict != "PASS" for r in rows(objects)) else 0


if __name__ == "__main__":
    sys.exit(main())
