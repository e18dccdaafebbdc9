"""Hourly and daily rollups of runs and listen lag (pure functions, no server)."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from core.rollups import percentile, rollup

NOW = datetime(2026, 12, 1, 14, 30)


def run(minutes_ago: int, kind="normal", status="ok", duration=100, **counts):
    return {
        "started_at": NOW - timedelta(minutes=minutes_ago),
        "kind": kind,
        "status": status,
        "duration_ms": duration,
        "firestore_reads": counts.pop("reads", 1),
        **{k: counts.get(k, 0) for k in ("inserted", "updated", "deleted", "repaired")},
    }


def test_runs_fall_into_their_hour_with_counts_failures_and_duration_percentiles():
    runs = [
        run(5, duration=100, inserted=3, reads=3),
        run(10, duration=300, updated=2, repaired=1),
        run(20, status="failed", duration=None),
        run(40, kind="listen", duration=3_600_000, updated=7),  # a session's length is not a run's duration
        run(70, duration=50),
        run(60 * 49, duration=1),  # beyond 48 hours: in no hourly bucket
    ]
    hourly = rollup(runs, [], NOW, hours=1, count=48)
    assert len(hourly) == 48 and hourly[-1]["start"] == "2026-12-01T14:00:00Z"
    this_hour, last_hour = hourly[-1], hourly[-2]
    assert (this_hour["runs"], this_hour["failed"], this_hour["changed"], this_hour["reads"]) == (3, 1, 6, 5)
    assert (this_hour["duration_p50_ms"], this_hour["duration_p95_ms"]) == (100, 300)
    assert last_hour["runs"] == 2 and last_hour["changed"] == 7 and last_hour["duration_p50_ms"] == 50
    assert sum(b["runs"] for b in hourly) == 5
    daily = rollup(runs, [], NOW, hours=24, count=30)
    assert daily[-1]["start"] == "2026-12-01T00:00:00Z" and daily[-1]["runs"] == 5 and daily[-3]["runs"] == 1


def test_listen_lag_is_the_hours_percentiles_weighted_by_their_samples():
    hour = NOW.replace(minute=0)
    lags = [
        {"hour": hour, "run_id": 1, "samples": 90, "p50_ms": 40, "p95_ms": 80, "max_ms": 200},
        {"hour": hour, "run_id": 2, "samples": 10, "p50_ms": 400, "p95_ms": 900, "max_ms": 950},
    ]
    (bucket,) = rollup([], lags, NOW, hours=1, count=1)
    assert bucket["lag_samples"] == 100 and bucket["lag_p50_ms"] == 40 and bucket["lag_p95_ms"] == 900
    assert rollup([], [], NOW, hours=1, count=1)[0]["lag_p50_ms"] is None


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=200), st.floats(0.01, 1.0))
def test_percentile_is_a_member_with_the_share_at_or_below_it(values, share):
    p = percentile(values, share)
    assert p in values
    assert sum(v <= p for v in values) >= share * len(values)
