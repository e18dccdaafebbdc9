"""Hourly and daily figures of the sync: runs, rows changed, reads, failures, run durations and listen lag.

Pure functions over rows of ``empsync_runs`` and ``empsync_lag``: the
database is read once by ``status.build_stats``, which any process can run.

Run durations are exact percentiles of the runs in a bucket (listen sessions
are left out: a session's duration is how long it listened). Listen lag,
the time from a document's write in Firestore to its row committed, is kept
per hour by the listening service as its own p50 and p95 of that hour's
writes (``live.LagSamples``); a day's figures are the hours' weighted by
their sample counts, which is close to, not the same as, the day's own
percentiles.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from .contracts import Rollup
from .times import iso

HOURS = 48  # hourly buckets kept in stats
DAYS = 30  # daily buckets


def percentile(values: list[float], share: float) -> float | None:
    """The nearest-rank percentile (``share`` 0.5 for the median); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def _weighted(pairs: list[tuple[float, int]], share: float) -> float | None:
    """The value at ``share`` of the total weight, values taken in order."""
    total = sum(weight for _, weight in pairs)
    if not total:
        return None
    seen = 0
    for value, weight in sorted(pairs):
        seen += weight
        if seen >= share * total:
            return value
    return pairs[-1][0]


def _bucket(moment: datetime, hours: int) -> datetime:
    start = moment.replace(minute=0, second=0, microsecond=0)
    if hours == 24:
        start = start.replace(hour=0)
    return start


def rollup(
    runs: Iterable[Mapping[str, Any]], lags: Iterable[Mapping[str, Any]], now: datetime, *, hours: int, count: int
) -> list[Rollup]:
    """``count`` buckets of ``hours`` hours (1 or 24), oldest first, ending with the one holding ``now``."""
    last = _bucket(now, hours)
    starts = [last - timedelta(hours=hours * i) for i in reversed(range(count))]
    index = {start: i for i, start in enumerate(starts)}
    buckets: list[dict[str, Any]] = [
        {"start": start, "runs": 0, "failed": 0, "changed": 0, "reads": 0, "_durations": [], "_lag": []}
        for start in starts
    ]
    for run in runs:
        i = index.get(_bucket(run["started_at"], hours))
        if i is None:
            continue
        b = buckets[i]
        b["runs"] += 1
        b["failed"] += run["status"] == "failed"
        b["changed"] += sum(run.get(k) or 0 for k in ("inserted", "updated", "deleted", "repaired"))
        b["reads"] += run.get("firestore_reads") or 0
        if run["kind"] != "listen" and run.get("duration_ms") is not None and run["status"] == "ok":
            b["_durations"].append(run["duration_ms"])
    for lag in lags:
        i = index.get(_bucket(lag["hour"], hours))
        if i is not None and lag.get("samples"):
            buckets[i]["_lag"].append(lag)
    out: list[Rollup] = []
    for b in buckets:
        durations, lag = b["_durations"], b["_lag"]
        out.append(
            {
                "start": iso(b["start"]),
                "runs": b["runs"],
                "failed": b["failed"],
                "changed": b["changed"],
                "reads": b["reads"],
                "duration_p50_ms": percentile(durations, 0.5),
                "duration_p95_ms": percentile(durations, 0.95),
                "lag_samples": sum(row["samples"] for row in lag),
                "lag_p50_ms": _weighted([(row["p50_ms"], row["samples"]) for row in lag], 0.5),
                "lag_p95_ms": _weighted([(row["p95_ms"], row["samples"]) for row in lag], 0.95),
            }
        )
    return out
