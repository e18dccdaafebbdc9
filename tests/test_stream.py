"""The live event stream over WebSocket, with a real client (the websockets library).

Events arrive in order during a force run and a listen session; field changes
only with ?changes=1; the token, Host and Origin rules are the other GETs';
a client that reads too slowly is dropped with close code 1008 while the
service carries on; the stream is bounded apart from the other requests and
outlives the request timeouts.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pytest
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.uri import parse_uri

from core import api as api_module
from core import stream as stream_module
from core.events import BatchApplied, ChangeRecord, StatusChanged, SyncFinished, SyncStarted
from core.stream import messages

from .conftest import employee, write_docs
from .service_support import running, wait_for
from .test_api import PREFIX, TOKEN, Served

EVENTS = f"{PREFIX}/events"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def ws_url(served: Served, query: str = "") -> str:
    return served.base.replace("http://", "ws://") + EVENTS + query


@contextmanager
def stream(served: Served, query: str = "", **kw: Any) -> Iterator[ClientConnection]:
    kw.setdefault("additional_headers", AUTH)
    with connect(ws_url(served, query), open_timeout=10, **kw) as ws:
        hello = json.loads(ws.recv(timeout=10))
        assert hello["type"] == "hello" and hello["is_leader"] is True, hello
        yield ws


def receive_until(ws: ClientConnection, done, timeout: float = 30) -> list[dict[str, Any]]:
    """Messages in arrival order until ``done(message)`` is true for one (included)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out; received: {[m['type'] for m in got]}")
        try:
            message = json.loads(ws.recv(timeout=left))
        except TimeoutError:
            continue
        got.append(message)
        if done(message):
            return got


@pytest.fixture
def served(make_config, sqlite_url, firestore_client):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(5)})
    config = make_config(
        sqlite_url,
        sync={"interval": 3600, "force_interval": 3600},
        api={"enabled": True, "host": "127.0.0.1", "port": 0, "token": TOKEN},
    )
    s = Served(config)
    s.api.start()
    with running(s.service):
        s.events.wait_finished(1, trigger="schedule")
        wait_for(lambda: s.service.snapshot()["state"] == "idle", 20, "the first run to end")
        yield s
    s.api.stop()


# -- messages, as plain logic ---------------------------------------------------------------


def test_a_batch_becomes_its_changes_rejects_then_progress():
    at = datetime(2026, 1, 1)
    batch = BatchApplied(
        at,
        7,
        {"fetched": 3, "updated": 1},
        (ChangeRecord(at, "e1", "update", "name", "Ann", "Anne", "Anne"),),
        (("e2", "field salary: not a number"), ("e3", "field name: missing")),
        ("e3",),
    )
    assert [m["type"] for m in messages(batch)] == ["reject", "reject", "run_progress"]
    full = messages(batch, changes=True)
    assert [m["type"] for m in full] == ["change", "reject", "reject", "run_progress"]
    assert full[0] == {
        "type": "change", "at": "2026-01-01T00:00:00Z", "run_id": 7, "document": "e1", "operation": "update",
        "field": "name", "old": "Ann", "new": "Anne", "name": "Anne",
    }  # fmt: skip
    assert [(m["document"], m["new"]) for m in full[1:3]] == [("e2", False), ("e3", True)]
    assert full[3]["counts"] == {"fetched": 3, "updated": 1}
    [status] = messages(StatusChanged(at, "error", "db down", {"is_leader": True, "rows": 9}))
    assert status["state"] == "error" and status["detail"] == "db down" and "rows" not in status
    [started] = messages(SyncStarted(at, 8, "force", "api", False))
    assert started == {"type": "run_started", "at": "2026-01-01T00:00:00Z", "run_id": 8, "kind": "force",
                       "trigger": "api", "dry_run": False}  # fmt: skip


# -- a real service, a real client -------------------------------------------------------------


def run_messages(ws: ClientConnection, ticket: dict[str, Any]) -> list[dict[str, Any]]:
    """From now until the run that answered ``ticket`` has finished and the service is idle again."""
    got = receive_until(ws, lambda m: m["type"] == "run_finished")
    return got + receive_until(ws, lambda m: m["type"] == "status" and m["state"] == "idle")


@pytest.mark.integration
def test_a_force_run_streams_in_order_with_changes_only_when_asked(served, firestore_client):
    write_docs(firestore_client, {"e1": employee(1, name="Renamed"), "e9": employee(9), "bad": employee(8, salary="x")})
    with stream(served, "?changes=1") as full, stream(served) as plain:
        code, _, body = served.post(f"{PREFIX}/trigger", {"force": True})
        assert code == 202
        got = run_messages(full, body["queued"])
        seen = run_messages(plain, body["queued"])
    types = [m["type"] for m in got]
    assert types[0] == "status" and got[0]["state"] == "syncing"
    assert types[1] == "run_started" and got[1]["kind"] == "force" and got[1]["trigger"] == "api"
    run_id = got[1]["run_id"]
    finished = types.index("run_finished")
    assert got[finished]["run_id"] == run_id and got[finished]["status"] == "ok"
    assert (got[finished]["inserted"], got[finished]["updated"], got[finished]["rejected"]) == (1, 1, 1)
    assert types[-1] == "status" and got[-1]["state"] == "idle"
    # Between start and finish: each batch's changes and rejects, then its progress.
    middle = got[2:finished]
    assert middle and middle[-1]["type"] == "run_progress" and middle[-1]["counts"]["fetched"] == 7
    changes = {(m["document"], m["operation"], m["field"]) for m in middle if m["type"] == "change"}
    assert ("e1", "update", "name") in changes and any(d == "e9" and op == "insert" for d, op, _ in changes)
    [renamed] = [m for m in middle if m["type"] == "change" and m["field"] == "name"]
    assert (renamed["old"], renamed["new"], renamed["run_id"]) == ("Employee 1", "Renamed", run_id)
    [reject] = [m for m in middle if m["type"] == "reject"]
    assert reject["document"] == "bad" and "salary" in reject["reason"] and reject["new"] is True
    assert all(m["run_id"] == run_id for m in middle)
    # Without ?changes=1 the same run, the same order, no field changes.
    assert [m["type"] for m in seen] == [t for t in types if t != "change"]


@pytest.mark.integration
def test_a_listen_session_streams_each_change_as_it_lands(make_config, sqlite_url, firestore_client):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(3)})
    config = make_config(
        sqlite_url,
        sync={"mode": "listen", "interval": 10, "force_interval": 7 * 86_400},
        api={"enabled": True, "port": 0, "token": TOKEN},
    )
    served = Served(config)
    served.api.start()
    try:
        with running(served.service):
            wait_for(lambda: served.service.snapshot().get("listen_state") == "listening", 60, "listening")
            with stream(served, "?changes=1") as ws:
                for n in range(3):
                    write_docs(firestore_client, {"e1": employee(1, name=f"Edit {n}")})
                    got = receive_until(ws, lambda m, n=n: m["type"] == "change" and m["new"] == f"Edit {n}")
                    got += receive_until(ws, lambda m: m["type"] == "run_progress")
                    [change] = [m for m in got if m["type"] == "change" and m["field"] == "name"]
                    assert change["document"] == "e1" and change["old"] == ("Employee 1" if n == 0 else f"Edit {n - 1}")
                    assert got[-1]["run_id"] == change["run_id"], "the change and its batch are one listen session's"
    finally:
        served.api.stop()


@pytest.mark.integration
def test_the_stream_needs_the_token_and_a_handshake(served):
    for headers in ({}, {"Authorization": "Bearer wrong-token-0000000"}, {"Authorization": f"Basic {TOKEN}"}):
        with pytest.raises(InvalidStatus) as info:
            connect(ws_url(served), additional_headers=headers, open_timeout=10)
        assert info.value.response.status_code == 401
    # A browser cannot send the header; a token in the query is not one either (it would sit in logs).
    with pytest.raises(InvalidStatus) as info:
        connect(ws_url(served, f"?token={TOKEN}"), open_timeout=10)
    assert info.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as info:
        connect(ws_url(served), additional_headers=AUTH, origin="http://evil.example", open_timeout=10)
    assert info.value.response.status_code == 403
    # A plain GET is told to upgrade, in the API's JSON.
    code, headers, body = served.get(EVENTS)
    assert code == 426 and body["status"] == 426 and "WebSocket client" in body["error"]
    assert headers["Upgrade"] == "websocket"
    with stream(served):  # and with the token it opens
        pass


@pytest.mark.integration
def test_a_slow_client_is_dropped_with_1008_and_the_service_is_unharmed(served, firestore_client, monkeypatch, caplog):
    monkeypatch.setattr(stream_module, "MAX_QUEUED", 4)
    monkeypatch.setattr(stream_module, "OUT_HIGH_WATER", 1)  # frame the next event only once the last is sent
    monkeypatch.setattr(stream_module, "SEND_BUFFER", 4096)
    monkeypatch.setattr(stream_module, "CLOSE_TIMEOUT_S", 60.0)  # the test reads once the drop is decided
    caplog.set_level(logging.INFO, "empsync.api.events")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and the client reads nothing meanwhile
    sock.connect(served.api.address)
    with connect(
        ws_url(served, "?changes=1"), sock=sock, additional_headers=AUTH, max_queue=1, open_timeout=10
    ) as slow:
        dropped = lambda: any("dropped: too slow" in r.getMessage() for r in caplog.records)  # noqa: E731
        for n in range(30):  # runs full of changes until the client is that far behind
            write_docs(firestore_client, {f"e{i}": employee(i, name=f"Run {n}") for i in range(5)})
            mark = served.events.mark()
            served.service.force_sync("test")
            wait_for(lambda m=mark: dropped() or served.events.since(m, SyncFinished), 30, "a run, or the drop")
            if dropped():
                break
        assert dropped(), "the slow client was never dropped"
        with pytest.raises(ConnectionClosed) as info:
            while True:
                slow.recv(timeout=30)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1008
    assert "too slow" in info.value.rcvd.reason
    # The service synced on, the API answers, the slot is free again.
    wait_for(lambda: served.api.streams.count == 0, 20, "the dropped stream to be gone")
    assert served.get(f"{PREFIX}/status")[0] == 200 and served.service.alive
    with stream(served) as ws:
        code, _, body = served.post(f"{PREFIX}/trigger", {"force": True})
        assert code == 202 and run_messages(ws, body["queued"])[-1]["state"] == "idle"


@pytest.mark.integration
def test_streams_are_bounded_apart_from_requests_and_outlive_the_request_timeouts(served, monkeypatch):
    monkeypatch.setattr(stream_module, "MAX_STREAMS", 2)
    served.api.streams.slots = threading.BoundedSemaphore(2)
    monkeypatch.setattr(api_module, "HEAD_TIMEOUT_S", 0.5)
    monkeypatch.setattr(api_module, "BODY_TIMEOUT_S", 0.5)
    monkeypatch.setattr(stream_module, "PING_EVERY_S", 0.3)  # the client's automatic pongs keep it alive
    with stream(served) as first, stream(served):
        with pytest.raises(InvalidStatus) as info:
            connect(ws_url(served), additional_headers=AUTH, open_timeout=10)
        assert info.value.response.status_code == 503
        assert served.get(f"{PREFIX}/status")[0] == 200, "streams took the handlers other requests need"
        time.sleep(1.5)  # longer than a request may take, several pings
        code, _, body = served.post(f"{PREFIX}/trigger", {"force": True})
        assert run_messages(first, body["queued"])[-1]["state"] == "idle"
    wait_for(lambda: served.api.streams.count == 0, 20, "both streams to end")


@pytest.mark.integration
def test_a_client_that_answers_no_ping_is_closed(served, monkeypatch, caplog):
    monkeypatch.setattr(stream_module, "PING_EVERY_S", 0.2)
    monkeypatch.setattr(stream_module, "PING_TIMEOUT_S", 0.3)
    monkeypatch.setattr(stream_module, "CLOSE_TIMEOUT_S", 0.5)
    caplog.set_level(logging.INFO, "empsync.api.events")
    # A client that completes the handshake (sans-I/O, as a real one would) and then never reads again.
    client = ClientProtocol(parse_uri(ws_url(served)))
    request = client.connect()
    request.headers["Authorization"] = AUTH["Authorization"]
    client.send_request(request)
    with socket.create_connection(served.api.address, timeout=10) as sock:
        sock.sendall(b"".join(client.data_to_send()))
        client.receive_data(sock.recv(65536))
        assert client.events_received() and client.handshake_exc is None
        wait_for(
            lambda: any("stopped answering pings" in r.getMessage() for r in caplog.records), 20, "the ping timeout"
        )
    wait_for(lambda: served.api.streams.count == 0, 20, "the stream to end")


@pytest.mark.integration
def test_stopping_the_api_closes_streams_with_going_away(make_config, sqlite_url):
    config = make_config(sqlite_url, api={"enabled": True, "port": 0, "token": TOKEN})
    served = Served(config)
    served.api.start()
    with running(served.service):
        wait_for(lambda: served.service.snapshot().get("is_leader"), 30, "leadership")
        with stream(served) as ws:
            served.api.stop()
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    ws.recv(timeout=10)
    assert info.value.rcvd.code == 1001 and "stopping" in info.value.rcvd.reason
