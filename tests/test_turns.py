"""Turns: a sync's threads give way while a turn is claimed, until it is released or its time is up."""

from __future__ import annotations

import threading

import pytest

from core.engine import SyncEngine
from core.events import BatchApplied
from core.turns import Turns

from .conftest import employee, write_docs


def _giving(turns: Turns) -> threading.Event:
    """A thread at a safe point; the event is set once give() has returned."""
    done = threading.Event()
    threading.Thread(target=lambda: (turns.give(), done.set()), daemon=True).start()
    return done


def test_an_unclaimed_turn_is_not_waited_for():
    turns = Turns()
    for _ in range(1000):
        turns.give()
    assert turns.given_s == 0


def test_a_claimed_turn_holds_the_sync_until_it_is_released():
    turns = Turns(longest_s=60)
    turns.claim()
    done = _giving(turns)
    assert not done.wait(0.2), "give() returned while the turn was claimed"
    turns.release()
    assert done.wait(10)
    assert turns.given_s > 0
    turns.give()  # released: at once again
    assert not turns.claimed


def test_a_turn_never_released_ends_by_itself():
    turns = Turns(longest_s=0.05)
    turns.claim()
    assert _giving(turns).wait(10), "a claim nobody released held the sync"
    given = turns.given_s
    turns.give()  # the turn is over: no further wait
    assert turns.given_s == given


@pytest.mark.integration
def test_a_run_gives_way_between_documents_while_a_turn_is_claimed(make_config, sqlite_url, firestore_client):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(30)})
    turns = Turns(longest_s=120)
    engine = SyncEngine(make_config(sqlite_url, source={"page_size": 10}, target={"batch_size": 10}), turns=turns)
    batches: list[BatchApplied] = []
    engine.bus.subscribe(lambda e: batches.append(e) if isinstance(e, BatchApplied) else None)
    turns.claim()
    results = []
    runner = threading.Thread(target=lambda: results.append(engine.run(force=True)), daemon=True)
    runner.start()
    runner.join(2.0)
    assert not batches and runner.is_alive(), "the run went on while the turn was claimed"
    turns.release()
    runner.join(60)
    assert results and results[0].status == "ok", results and results[0].reason
    assert results[0].counts.inserted == 30 and len(batches) == 3
    assert turns.given_s > 0
    engine.close()
