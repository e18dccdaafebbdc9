"""The console bench's own bookkeeping: which collections it counts, and the worker's pacing. Fast, no servers."""

from __future__ import annotations

from bench import console
from core import engine


def test_only_full_collections_that_end_inside_the_run_are_counted(monkeypatch):
    clock = iter([1.0, 1.2, 5.0, 5.5, 9.0, 9.1])
    monkeypatch.setattr(console.time, "perf_counter", lambda: next(clock))
    collections = console.Collections()
    for phase, generation in [("start", 2), ("stop", 2), ("start", 0), ("stop", 0)]:
        collections(phase, {"generation": generation})  # a young collection reads no clock
    for phase in ("start", "stop", "start", "stop"):
        collections(phase, {"generation": 2})
    assert collections.within(1.0, 6.0) == {"count": 2, "total_ms": 700.0, "max_ms": 500.0}
    assert collections.within(6.0, 8.0) == {"count": 0, "total_ms": 0, "max_ms": 0}


def test_the_paced_worker_sleeps_once_per_stretch_of_work_and_the_engine_is_restored(monkeypatch):
    real = engine.map_document
    naps: list[float] = []
    monkeypatch.setattr(console.time, "sleep", naps.append)
    with console.paced((0.0, 0.25)):
        assert engine.map_document is not real
        for _ in range(3):
            assert engine.map_document([], {}) == {}
    assert naps == [0.25, 0.25, 0.25]  # no work is shorter than a stretch of 0 s
    assert engine.map_document is real
    with console.paced(None):
        assert engine.map_document is real
    with console.paced((3600.0, 1.0)):
        engine.map_document([], {})  # the first stretch of work is not over yet
    assert naps == [0.25, 0.25, 0.25]


def test_full_collections_pool_to_the_median_run_and_the_longest_stop():
    runs = [{"count": 40, "total_ms": 9000.0, "max_ms": 400.0}, {"count": 4, "total_ms": 900.0, "max_ms": 950.0}]
    runs.append({"count": 10, "total_ms": 2000.0, "max_ms": 300.0})
    assert console._pooled(runs) == {"count": 10, "total_ms": 2000.0, "max_ms": 950.0}
