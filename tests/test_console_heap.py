"""The console's garbage collector: quietened while the console runs, as it was once it closes.
Fast tests against a stand-in face, no servers."""

from __future__ import annotations

import gc

from core.events import SyncFailed
from core.times import utcnow
from tui import heap

from .test_tui import fixed_console, until


def _run_ended(app) -> None:
    app.bridge.on_event(SyncFailed(utcnow(), 1, "normal", "the emulator went away"))


async def test_the_console_quietens_the_collector_while_it_runs_and_restores_it_on_exit(monkeypatch):
    freezes = []
    real = heap.freeze_survivors
    monkeypatch.setattr(heap, "freeze_survivors", lambda: freezes.append(1) or real())
    gc.unfreeze()
    before = gc.get_threshold()
    app = fixed_console()
    async with app.run_test(size=(80, 24)) as pilot:
        assert len(freezes) == 1 and gc.get_freeze_count() > 0, "the console froze nothing once it was up"
        young, _, oldest = gc.get_threshold()
        assert (young, oldest) == (max(before[0], heap.YOUNG_EVERY), max(before[2], heap.OLDEST_EVERY))
        _run_ended(app)  # the first run's end: the clients it loaded are frozen too
        await until(pilot, lambda: len(freezes) == 2, "the freeze after the first run")
        for _ in range(2):
            _run_ended(app)  # later runs freeze nothing: what they leave would never be collected
        await until(pilot, lambda: len(app.toasts) >= 3, "the later runs' ends to be handled")
        assert len(freezes) == 2
    assert gc.get_freeze_count() == 0, "the console left objects frozen after it closed"
    assert gc.get_threshold() == before


async def test_a_console_told_not_to_leaves_the_collector_alone():
    gc.unfreeze()
    before = gc.get_threshold()
    app = fixed_console()
    app.QUIET_HEAP = False
    async with app.run_test(size=(80, 24)) as pilot:
        _run_ended(app)
        await until(pilot, lambda: len(app.toasts) >= 1, "the run's end to be handled")
        assert gc.get_freeze_count() == 0 and gc.get_threshold() == before
