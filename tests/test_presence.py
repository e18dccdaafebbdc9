"""The leader's published view and log lines (core/presence.py), on a real SQLite database."""

from __future__ import annotations

import json
import logging

import pytest

from core import config as cfg
from core.db import Database
from core.logs import register_secret
from core.presence import LogBuffer, Publisher, SharedLog, live_leader
from core.state import State, StateKey
from core.times import utcnow

LEADER = "ops-1:4242"


@pytest.fixture
def db(sqlite_url):
    database = Database(cfg.from_dict({"target": {"url": sqlite_url}, "fields": {"name": {}}}))
    database.ensure_schema()
    yield database
    database.dispose()


@pytest.fixture
def publisher(db):
    leading = {"now": True}
    view = {"state": "syncing", "current_run": {"run_id": 3}}
    made = Publisher(db, LEADER, view=lambda: dict(view), leading=lambda: leading["now"])
    made.leading_now, made.shown = leading, view
    logging.getLogger().addHandler(made.buffer)  # as start() does, without the thread: the test drives cycle()
    yield made
    made.flush(write=False)


log = logging.getLogger("empsync.test.presence")


def test_lines_reach_the_table_scrubbed_and_safe(db, publisher):
    register_secret("hunter2-presence-secret")
    log.warning("login with hunter2-presence-secret for \x1b]0;pwned\x07\u202eid")
    try:
        raise ValueError("boom hunter2-presence-secret")
    except ValueError:
        log.exception("a bug")
    publisher.cycle()
    rows = SharedLog(db).after(None, not_by="ops-9:1")
    texts = [r["text"] for r in rows]
    assert len(rows) == 2 and all(r["service"] == LEADER for r in rows)
    assert "hunter2" not in "".join(texts), "a secret reached the table"
    assert "\x1b" not in texts[0] and "\\x1b]0;pwned\\x07" in texts[0] and "\\u202e" in texts[0]
    assert texts[1].startswith("a bug\nTraceback") and "ValueError: boom ***" in texts[1]  # its lines kept
    assert SharedLog(db).after(None, not_by=LEADER) == [], "a console leaves out its own process's lines"
    assert [r["id"] for r in SharedLog(db).after(rows[0]["id"], not_by="x")] == [rows[1]["id"]]


def test_the_view_is_the_heartbeat_and_only_a_leader_writes(db, publisher):
    state = State(db)
    publisher.cycle()
    assert live_leader(state.get_all()) is None, "a view without the leader key naming its writer is not the leader's"
    state.set({StateKey.LEADER: LEADER})
    live = live_leader(state.get_all())
    assert live is not None and live.service == LEADER and live.fresh()
    assert live.snapshot == {"state": "syncing", "current_run": {"run_id": 3}}
    written = json.loads(state.get(StateKey.LEADER_LIVE))["at"]

    publisher.shown["state"] = "idle"  # changed: written at the next look, heartbeat or not
    publisher.cycle()
    assert live_leader(state.get_all()).snapshot["state"] == "idle"

    publisher.leading_now["now"] = False
    log.warning("a standby's own business")
    publisher.shown["state"] = "standby"
    publisher.cycle()
    assert live_leader(state.get_all()).snapshot["state"] == "idle", "a process that does not lead wrote its view"
    assert SharedLog(db).after(None, not_by="x") == []
    assert json.loads(state.get(StateKey.LEADER_LIVE))["at"] >= written

    state.set({StateKey.LEADER: "ops-2:7"})  # a successor took over; our last view is not its
    assert live_leader(state.get_all()) is None


def test_the_log_is_trimmed_and_a_full_buffer_says_what_it_dropped(db):
    shared = SharedLog(db)
    shared.write(
        [{"at": utcnow(), "service": LEADER, "level": "INFO", "logger": "t", "text": f"{n}"} for n in range(30)]
    )
    shared.trim(keep=10)
    assert [r["text"] for r in shared.after(None, not_by="x")] == [str(n) for n in range(20, 30)]

    buffer = LogBuffer(LEADER, capacity=3)
    for n in range(5):
        buffer.emit(logging.LogRecord("empsync.t", logging.INFO, __file__, 1, f"line {n}", None, None))
    lines = buffer.take()
    assert [line["text"] for line in lines[:3]] == ["line 2", "line 3", "line 4"]
    assert lines[3]["level"] == "WARNING" and lines[3]["text"].startswith("2 log lines were dropped")
    assert buffer.take() == []
