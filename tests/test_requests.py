"""The request table (core/requests.py) on real databases, against a model of its life cycle.

Requests move between processes whose steps interleave in any order: askers
queue and cancel, leaders claim, start, finish and release, a new leader
recovers what its predecessor left. A hypothesis state machine drives one
SQLite database through random interleavings and compares every row with a
model; two leaders racing to claim the same rows on MariaDB never both win one.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import core.presence as presence
import core.remote as remote
from core import config as cfg
from core import requests as req
from core.db import Database
from core.engine import RunResult, SyncEngine
from core.errors import TargetError
from core.requests import Requests
from core.state import StateKey
from core.times import utcnow

LEADERS = ("ops-1:100", "ops-2:200")


def database(url: str) -> Database:
    db = Database(cfg.from_dict({"target": {"url": url}, "fields": {"name": {}}}))
    db.ensure_schema()
    return db


def interrupted(request: req.Request) -> dict:
    return {"status": "failed", "reason": f"interrupted: {request.claimed_by} stopped"}


class RequestLife(RuleBasedStateMachine):
    """Every row's status and claimer, as the model says they must be."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.TemporaryDirectory()
        self.db = database(f"sqlite:///{Path(self.folder.name) / 'requests.db'}")
        self.requests = Requests(self.db)
        self.model: dict[int, tuple[str, str | None]] = {}
        self.age = timedelta(0)  # how far the leaders' clock has moved past the askers'

    def teardown(self) -> None:
        self.db.dispose()
        self.folder.cleanup()

    def _in(self, *states: str) -> list[int]:
        return [i for i, (status, _) in self.model.items() if status in states]

    @rule(kind=st.sampled_from(["normal", "force", "rollback"]))
    def queue(self, kind: str) -> None:
        row = self.requests.queue(kind, "cli", "asker:1", {"allow_mass_delete": kind == "force"})
        assert row not in self.model, "ids are never reused"
        self.model[row] = (req.QUEUED, None)

    @rule(leader=st.sampled_from(LEADERS))
    def claim(self, leader: str) -> None:
        taken = self.requests.claim(leader, now=utcnow() + self.age)
        looked_at = sorted(self._in(req.QUEUED))[: req.CLAIM_BATCH]  # the oldest, one batch a look
        stale = self.age.total_seconds() > req.TTL_S
        expected = [] if stale else looked_at
        if stale:
            for i in looked_at:
                self.model[i] = (req.EXPIRED, None)
        assert [r.id for r in taken] == expected
        for r in taken:
            assert r.status == req.CLAIMED and r.claimed_by == leader
            self.model[r.id] = (req.CLAIMED, leader)

    @rule(leader=st.sampled_from(LEADERS), data=st.data())
    def start(self, leader: str, data) -> None:
        ids = data.draw(st.lists(st.sampled_from(sorted(self.model) or [0]), max_size=3, unique=True))
        self.requests.started(ids, leader, run_id=7)
        for i in ids:
            if self.model.get(i) == (req.CLAIMED, leader):  # only the claimer moves it on
                self.model[i] = (req.RUNNING, leader)

    @rule(leader=st.sampled_from(LEADERS), ok=st.booleans(), data=st.data())
    def finish(self, leader: str, ok: bool, data) -> None:
        ids = data.draw(st.lists(st.sampled_from(sorted(self.model) or [0]), max_size=3, unique=True))
        self.requests.finish(ids, leader, {"status": "ok" if ok else "failed", "run_id": 7}, 0 if ok else 1)
        for i in ids:
            status, claimer = self.model.get(i, (None, None))
            if status in (req.CLAIMED, req.RUNNING) and claimer == leader:
                self.model[i] = (req.DONE if ok else req.FAILED, leader)

    @rule(leader=st.sampled_from(LEADERS))
    def release(self, leader: str) -> None:
        mine = [i for i, (status, claimer) in self.model.items() if claimer == leader]
        self.requests.release(mine, leader)
        for i in mine:
            if self.model[i][0] == req.CLAIMED:
                self.model[i] = (req.QUEUED, None)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def cancel(self, data) -> None:
        row = data.draw(st.sampled_from(sorted(self.model)))
        cancelled = self.requests.cancel(row)
        assert cancelled == (self.model[row][0] == req.QUEUED)
        if cancelled:
            self.model[row] = (req.EXPIRED, None)

    @rule(leader=st.sampled_from(LEADERS), data=st.data())
    def take_over(self, leader: str, data) -> None:
        held = [i for i, (status, claimer) in self.model.items() if status == req.CLAIMED and claimer == leader]
        keep = data.draw(st.lists(st.sampled_from(held), unique=True)) if held else []
        requeued, failed = self.requests.recover(keep, interrupted)
        assert requeued == len([i for i in self._in(req.CLAIMED) if i not in keep])
        assert failed == len(self._in(req.RUNNING))
        for i, (status, claimer) in list(self.model.items()):
            if status == req.CLAIMED and i not in keep:
                self.model[i] = (req.QUEUED, None)
            elif status == req.RUNNING:
                self.model[i] = (req.FAILED, claimer)

    @rule()
    def time_passes(self) -> None:
        self.age += timedelta(seconds=req.TTL_S / 2 + 1)

    @rule()
    def someone_asks_again(self) -> None:
        self.age = timedelta(0)  # a fresh asker's clock: what is queued from now on is new

    @invariant()
    def rows_match_the_model(self) -> None:
        rows = self.requests.get_many(self.model)
        assert {i: (r.status, r.claimed_by) for i, r in rows.items()} == self.model
        for r in rows.values():
            if r.status == req.FAILED and r.result and "interrupted" in (r.result.get("reason") or ""):
                assert r.exit_code == 1


TestRequestLife = RequestLife.TestCase
TestRequestLife.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def test_payload_and_result_round_trip(sqlite_url):
    db = database(sqlite_url)
    board = Requests(db)
    row = board.queue("ids", "api", "ops-3:9", {"ids": ["a", "b/é"], "allow_mass_delete": False})
    (claimed,) = board.claim("ops-1:100")
    assert (
        claimed.id == row
        and claimed.kind == "ids"
        and claimed.payload == {"ids": ["a", "b/é"], "allow_mass_delete": False}
    )
    assert (claimed.trigger, claimed.requested_by) == ("api", "ops-3:9")
    board.started([row], "ops-1:100", run_id=41)
    assert board.get(row).status == req.RUNNING and board.get(row).run_id == 41
    board.finish([row], "ops-1:100", {"status": "skipped", "reason": "x", "run_id": 41}, 3)
    done = board.get(row)
    assert (done.status, done.exit_code, done.result["status"], done.finished_at is not None) == (
        req.DONE,
        3,
        "skipped",
        True,
    )
    assert board.claim("ops-2:200") == [], "a finished request is never claimed again"
    db.dispose()


@pytest.mark.integration
def test_two_leaders_racing_never_both_take_a_request(mysql_url):
    """Two processes' claim loops on MariaDB, each on its own connections: every request is taken once."""
    asker = database(mysql_url)
    ids = [Requests(asker).queue("force", "cli", "asker:1") for _ in range(60)]
    taken: dict[str, list[int]] = {leader: [] for leader in LEADERS}
    start = threading.Barrier(len(LEADERS))

    failures: list[BaseException] = []

    def leader_loop(name: str) -> None:
        db = database(mysql_url)
        board = Requests(db)
        start.wait()
        try:
            for _ in range(20):
                taken[name] += [r.id for r in board.claim(name)]
        except BaseException as exc:  # noqa: BLE001 - the test's thread: reported below
            failures.append(exc)
        finally:
            db.dispose()

    threads = [threading.Thread(target=leader_loop, args=(name,)) for name in LEADERS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, f"a claim loop failed (a deadlock between the leaders, say): {failures}"
    first, second = taken.values()
    assert not set(first) & set(second), "a request was claimed by both leaders"
    assert sorted(first + second) == ids
    rows = Requests(asker).get_many(ids)
    assert {r.claimed_by for r in rows.values()} <= set(LEADERS)
    assert all(rows[i].claimed_by == name for name, mine in taken.items() for i in mine)
    asker.dispose()


def test_a_row_whose_claim_fails_stays_queued_and_the_rows_already_won_are_kept(sqlite_url, monkeypatch):
    """MariaDB may pick one leader's claim of a row as a deadlock victim: that row waits for the next
    look; the rows that leader had already won are still its, returned, not lost with an error."""
    db = database(sqlite_url)
    board = Requests(db)
    ids = [board.queue("force", "cli", "asker:1") for _ in range(3)]
    real_begin, calls = db.begin, []

    def begin():
        calls.append(1)
        if len(calls) == 2:  # the second row's transaction
            raise TargetError("database error: Deadlock found when trying to get lock; try restarting transaction")
        return real_begin()

    monkeypatch.setattr(db, "begin", begin)
    taken = board.claim("ops-1:100")
    assert [r.id for r in taken] == [ids[0], ids[2]]
    assert board.get(ids[1]).status == req.QUEUED
    monkeypatch.setattr(db, "begin", real_begin)
    assert [r.id for r in board.claim("ops-1:100")] == [ids[1]], "the next look takes it"
    db.dispose()


# -- the asking side (core/remote.py), with a leader played by the test ---------------------


class PlayedLeader:
    """What a leader does to the database, step by step, on the test's word."""

    name = "ops-1:100"

    def __init__(self, engine) -> None:
        self.state, self.board = engine.state, Requests(engine.db)

    def beat(self) -> None:
        live = {"service": self.name, "at": utcnow().isoformat() + "Z", "snapshot": {"state": "idle"}}
        self.state.set({StateKey.LEADER: self.name, StateKey.LEADER_LIVE: json.dumps(live)})

    def claim(self) -> list[req.Request]:
        return self.board.claim(self.name)


@pytest.fixture
def asking(sqlite_url, monkeypatch):
    """An engine on SQLite, with short patience: 0.3 s for a claim, 2 s of silence from the leader."""
    monkeypatch.setattr(remote, "CLAIM_WAIT_S", 0.3)
    monkeypatch.setattr(remote, "LIVE_S", 2.0)
    monkeypatch.setattr(presence, "LIVE_S", 2.0)
    monkeypatch.setattr(remote, "POLL_S", 0.02)
    engine = SyncEngine(cfg.from_dict({"target": {"url": sqlite_url}, "fields": {"name": {}}}))
    engine.db.ensure_schema()
    yield engine
    engine.close()


def beside(leader: PlayedLeader, steps) -> threading.Thread:
    """Run the leader's ``steps`` (callables taking the request) on a thread, beating between them."""

    def play() -> None:
        request = None
        while request is None:
            leader.beat()
            taken = leader.claim()
            request = taken[0] if taken else None
            time.sleep(0.02)
        for step in steps:
            leader.beat()
            step(request)

    thread = threading.Thread(target=play, daemon=True)
    thread.start()
    return thread


def test_the_leaders_answer_is_the_result(asking):
    leader = PlayedLeader(asking)
    recorded = RunResult(status="failed", reason="boom", hint="try x", forced=True, kind="force", exit_code=1)
    recorded.counts.fetched, recorded.run_id = 7, 12

    def run(request):
        leader.board.started([request.id], leader.name, 12)
        leader.beat()
        leader.board.finish([request.id], leader.name, recorded.to_json(), 1)

    beside(leader, [run])
    answer = remote.ask_leader(asking, "force", {"allow_mass_delete": True})
    assert answer.leader == leader.name and answer.raw == recorded.to_json()
    result = answer.result
    assert (result.status, result.reason, result.hint, result.exit_code, result.trigger) == (
        "failed",
        "boom",
        "try x",
        1,
        "cli",
    )
    assert result.counts.fetched == 7 and result.run_id == 12 and result.to_json() == recorded.to_json()
    assert Requests(asking.db).get(answer.request_id).payload == {"allow_mass_delete": True}


def test_no_wait_returns_once_a_live_leader_is_seen(asking):
    PlayedLeader(asking).beat()
    answer = remote.ask_leader(asking, "normal", wait=False)
    assert answer.result is None and answer.leader == PlayedLeader.name
    assert Requests(asking.db).get(answer.request_id).status == req.QUEUED  # the leader takes it


def test_nobody_answers_and_the_request_is_withdrawn(asking):
    with pytest.raises(remote.NoLiveLeader, match="holds the sync lock takes no requests") as caught:
        remote.ask_leader(asking, "force")
    assert caught.value.exit_code == 3
    assert Requests(asking.db).get(1).status == req.EXPIRED


def test_a_leader_that_falls_silent_after_taking_it(asking, monkeypatch):
    for module in (remote, presence):  # silence is the point here: 1 s of it, twice
        monkeypatch.setattr(module, "LIVE_S", 1.0)
    leader = PlayedLeader(asking)
    beside(leader, [])  # claims, then never beats again
    with pytest.raises(remote.NoLiveLeader, match="stopped before it ran request #1"):
        remote.ask_leader(asking, "force")
    assert Requests(asking.db).get(1).status == req.EXPIRED, "a later leader must not run it"

    beside(leader, [lambda r: leader.board.started([r.id], leader.name, 5)])  # and mid-run
    with pytest.raises(remote.LeaderGone, match="during run #5") as caught:
        remote.ask_leader(asking, "force")
    assert caught.value.exit_code == 1
    assert Requests(asking.db).get(2).status == req.RUNNING  # the next leader marks it failed


def test_a_request_handed_back_is_waited_for_again(asking):
    leader = PlayedLeader(asking)

    def hand_back_then_run(request):
        leader.board.release([request.id], leader.name)  # stepping down
        leader.beat()
        (again,) = leader.claim()  # ...and taken again, by the next term
        leader.board.finish([again.id], leader.name, RunResult(status="ok").to_json(), 0)

    beside(leader, [hand_back_then_run])
    assert remote.ask_leader(asking, "normal").result.status == "ok"


def test_a_signal_while_waiting(asking):
    leader = PlayedLeader(asking)
    stop = threading.Event()

    def busy_then_signal() -> None:  # alive, but too busy to take it; then Ctrl-C
        for _ in range(5):
            leader.beat()
            time.sleep(0.05)
        stop.set()

    threading.Thread(target=busy_then_signal, daemon=True).start()
    with pytest.raises(remote.StoppedWaiting, match="withdrew request #1"):
        remote.ask_leader(asking, "force", stop=stop)
    assert Requests(asking.db).get(1).status == req.EXPIRED, "nobody had taken it: it never runs"

    stop = threading.Event()
    beside(leader, [lambda request: stop.set()])  # taken, then Ctrl-C
    with pytest.raises(remote.StoppedWaiting, match="stays with the leader ops-1:100"):
        remote.ask_leader(asking, "force", stop=stop)
    assert Requests(asking.db).get(2).status == req.CLAIMED, "its leader runs it"
