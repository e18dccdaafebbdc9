"""The control API on a real service, emulator and database.

Every endpoint and every error status: 400 bad JSON, 401 without and with a
wrong token, 404, 405, 413, 422 wrong types and out-of-range values, 202 for
a trigger with the run it queued, 200 for an interval with the stored value;
/metrics parses as Prometheus text; a non-loopback API without a token
refuses to start.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import re
import socket
import struct
import threading
import time
from datetime import UTC, datetime
from http.client import HTTPConnection

import pytest
from prometheus_client.parser import text_string_to_metric_families

from core import api as api_module
from core import config as cfg
from core.api import MAX_BODY, ControlApi
from core.errors import ConfigError
from core.service import SyncService

from .conftest import employee, write_docs, write_toml
from .service_support import (
    Events,
    Headless,
    exchange,
    http,
    read_all,
    running,
    stored_state,
    wait_for,
    wait_leading,
)

pytestmark = pytest.mark.integration

TOKEN = "test-token-3f9a-0b7d"
PREFIX = "/api/realtime-sync"
EVENTS = f"{PREFIX}/events"


class Served:
    """A service with its API on an ephemeral loopback port."""

    def __init__(self, config: cfg.Config) -> None:
        self.config = config
        self.service = SyncService(config)
        self.events = Events(self.service)
        self.api = ControlApi(self.service, config.api)
        host, port = self.api.address
        self.base = f"http://{host}:{port}"

    def get(self, path: str, token: str | None = TOKEN, **kw):
        return http("GET", self.base + path, token=token, **kw)

    def post(self, path: str, body=None, token: str | None = TOKEN, **kw):
        return http("POST", self.base + path, body, token=token, **kw)


@pytest.fixture
def served(make_config, sqlite_url, firestore_client):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(4)})
    config = make_config(
        sqlite_url,
        sync={"interval": 300, "force_interval": 3600},
        api={"enabled": True, "host": "127.0.0.1", "port": 0, "token": TOKEN},
    )
    s = Served(config)
    s.api.start()
    with running(s.service):
        s.events.wait_finished(1, trigger="schedule")
        wait_for(lambda: s.service.snapshot().get("rows") == 4, 10, "the first sync in the status")
        yield s
    s.api.stop()


def assert_error(response, status: int, needle: str = "") -> dict:
    code, headers, body = response
    assert code == status, (code, body)
    assert headers["Content-Type"].startswith("application/json")
    assert isinstance(body, dict) and body["status"] == status and body["error"], body
    assert needle.lower() in body["error"].lower(), body
    return headers


def test_status_stats_and_health(served):
    code, headers, status = served.get(f"{PREFIX}/status")
    assert code == 200 and headers["Content-Type"] == "application/json"
    for key in (
        "enabled", "mode", "interval", "force_interval", "paused", "last_sync_at", "last_force_sync_at",
        "next_sync_at", "last_status", "rows", "source", "target", "state", "is_leader", "leader",
    ):  # fmt: skip
        assert key in status, key
    assert status["enabled"] is True and status["is_leader"] is True and status["rows"] == 4
    assert status["interval"] == 300 and status["last_status"] == "ok"
    assert status["source"]["project"] == served.config.source.project
    assert served.service.identity == status["leader"]

    code, _, stats = served.get(f"{PREFIX}/stats")
    assert code == 200 and stats["runs"] >= 1 and stats["inserted"] == 4 and stats["rows"] == 4

    code, _, health = served.get("/healthz")
    assert code == 200 and health == {"ok": True, "state": status["state"], "leader": True}
    # A trailing slash and a query string name the same endpoint.
    assert served.get(f"{PREFIX}/status/?verbose=1")[0] == 200


def test_trigger_answers_202_with_the_run_it_queued(served, firestore_client):
    write_docs(firestore_client, {"new": employee(50)})
    code, _, body = served.post(f"{PREFIX}/trigger")
    assert code == 202, body
    queued = body["queued"]
    assert queued["kind"] == "normal" and queued["trigger"] == "api" and isinstance(queued["request_id"], int)
    result = wait_for(
        lambda: (r := served.service.snapshot()["last_result"]) and r["request_id"] == queued["request_id"] and r,
        20,
        "the queued run to finish",
    )
    assert result["status"] == "ok" and result["inserted"] == 1

    code, _, body = served.post(f"{PREFIX}/trigger", {"force": True, "interval": 120})
    assert code == 202 and body["queued"]["kind"] == "force" and body["interval"] == 120
    forced = wait_for(
        lambda: (
            (r := served.service.snapshot()["last_result"]) and r["request_id"] == body["queued"]["request_id"] and r
        ),
        20,
        "the queued force run",
    )
    assert forced["forced"] is True and forced["fetched"] == 5
    wait_for(lambda: stored_state(served.config).get("interval") == "120", 10, "the trigger's interval stored")
    # An empty body and an explicit false are a normal run.
    assert served.post(f"{PREFIX}/trigger", {"force": False})[2]["queued"]["kind"] == "normal"
    assert served.post(f"{PREFIX}/trigger", raw=b"")[0] == 202


def test_interval_answers_200_with_the_stored_value(served):
    code, _, body = served.post(f"{PREFIX}/interval", {"interval": 45})
    assert (code, body) == (200, {"interval": 45})
    wait_for(lambda: stored_state(served.config).get("interval") == "45", 10, "the interval stored")
    status = served.get(f"{PREFIX}/status")[2]
    assert status["interval"] == 45 and status["interval_source"] == "database"
    for edge in (10, 86_400):
        assert served.post(f"{PREFIX}/interval", {"interval": edge})[2] == {"interval": edge}


def test_posts_need_the_token(served):
    for token in (None, "wrong-token", TOKEN + "x", ""):
        for path, body in ((f"{PREFIX}/trigger", {}), (f"{PREFIX}/interval", {"interval": 60})):
            headers = assert_error(served.post(path, body, token=token), 401, "token")
            assert headers["WWW-Authenticate"].startswith("Bearer")
    assert_error(served.post(f"{PREFIX}/trigger", {}, token=None, headers={"Authorization": f"Basic {TOKEN}"}), 401)
    # Authorization comes before parsing: a stranger learns nothing about the body.
    assert_error(served.post(f"{PREFIX}/interval", raw=b"{not json", token=None), 401)
    time.sleep(0.5)
    assert served.service.snapshot()["interval"] == 300, "a refused request changed the interval"
    assert not served.events.finished(trigger="api"), "a refused trigger queued a run"
    # Reading needs it too (the status names hosts, users and the last errors); a health probe does not.
    for path in (f"{PREFIX}/status", f"{PREFIX}/stats", "/metrics"):
        for token in (None, "wrong-token-wrong-token"):
            assert_error(served.get(path, token=token), 401, "token")
    assert served.get("/healthz", token=None)[0] == 200


def test_bad_requests(served):
    interval, trigger = f"{PREFIX}/interval", f"{PREFIX}/trigger"
    for raw in (b"{not json", b'{"interval": 60', b"\xff\xfe", b"[1,"):
        assert_error(served.post(interval, raw=raw), 400, "JSON")
        assert_error(served.post(trigger, raw=raw), 400, "JSON")
    for body in (
        {"interval": "60"}, {"interval": 60.5}, {"interval": True}, {"interval": None}, {"interval": [60]},
        {"interval": 9}, {"interval": 0}, {"interval": -60}, {"interval": 86_401}, {}, {"seconds": 60},
    ):  # fmt: skip
        assert_error(served.post(interval, body), 422, "interval")
    for body in ({"force": "yes"}, {"force": 1}, {"force": None}, {"interval": "soon"}, {"force": True, "interval": 5}):
        assert_error(served.post(trigger, body), 422)
    for raw in (b"[]", b'"interval"', b"60"):
        assert_error(served.post(interval, raw=raw), 422, "object")
    assert_error(served.post(interval, raw=b"x" * (MAX_BODY + 1)), 413)
    time.sleep(0.5)
    assert served.service.snapshot()["interval"] == 300, "a refused request changed the interval"
    assert not served.events.finished(trigger="api"), "a refused trigger queued a run"


def test_unknown_paths_and_wrong_methods(served):
    for path in ("/", "/nope", f"{PREFIX}", f"{PREFIX}/statuses", f"{PREFIX}/status/extra", "/metrics/x"):
        assert_error(served.get(path), 404, "no such endpoint")
        assert_error(served.post(path, {}), 404)
    for method, path, allowed in (
        ("GET", f"{PREFIX}/trigger", "POST"),
        ("GET", f"{PREFIX}/interval", "POST"),
        ("HEAD", f"{PREFIX}/trigger", "POST"),
        ("POST", f"{PREFIX}/status", "GET, HEAD"),
        ("POST", f"{PREFIX}/stats", "GET, HEAD"),
        ("POST", "/healthz", "GET, HEAD"),
        ("DELETE", f"{PREFIX}/interval", "POST"),
        ("PUT", f"{PREFIX}/trigger", "POST"),
        ("PATCH", f"{PREFIX}/status", "GET, HEAD"),
    ):
        body = {} if method not in ("GET", "HEAD") else None
        response = http(method, served.base + path, body, token=TOKEN)
        headers = assert_error(response, 405) if method != "HEAD" else response[1]
        assert (response[0], headers["Allow"]) == (405, allowed)


def test_head_is_answered_wherever_get_is_with_the_same_status_and_headers_and_no_body(served):
    for path in (f"{PREFIX}/status", f"{PREFIX}/stats", f"{PREFIX}/runs", "/healthz", "/metrics", EVENTS):
        got_code, got_headers, _ = http("GET", served.base + path, None, token=TOKEN)
        code, headers, body = http("HEAD", served.base + path, None, token=TOKEN)
        assert code == got_code and code in (200, 426), (path, code)
        assert headers["Content-Type"] == got_headers["Content-Type"], path
        assert body == "", (path, body)
        if path == EVENTS:
            assert headers["Upgrade"] == "websocket"
        else:  # the length of the body a GET gets (the figures may move between the two)
            assert int(headers["Content-Length"]) > 0, path
    # The token is asked of a HEAD as of a GET.
    assert http("HEAD", served.base + f"{PREFIX}/status", None)[0] == 401


def test_a_refused_body_does_not_poison_a_kept_alive_connection(served):
    host, port = served.api.address
    conn = HTTPConnection(host, port, timeout=10)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        for length in (str(MAX_BODY + 1), "-1", "many"):
            body = b"x" * (MAX_BODY + 1) if length == str(MAX_BODY + 1) else b""
            conn.putrequest("POST", f"{PREFIX}/interval")
            conn.putheader("Authorization", auth["Authorization"])
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", length)
            conn.endheaders(body)
            response = conn.getresponse()
            error = json.loads(response.read())
            assert response.status == error["status"] == (413 if length.isdigit() else 400), error
            # The same client carries on with its next request.
            conn.request("GET", f"{PREFIX}/status", headers=auth)
            response = conn.getresponse()
            assert response.status == 200 and json.loads(response.read())["is_leader"] is True
    finally:
        conn.close()


def metric_families(served) -> dict:
    code, headers, text = served.get("/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(families: dict, family: str, name: str, **labels: str) -> float:
    values = [s.value for s in families[family].samples if s.name == name and labels.items() <= s.labels.items()]
    assert values, (family, name, labels)
    return sum(values)


def test_metrics_parse_as_prometheus_text(served, make_config, sqlite_url):
    families = metric_families(served)
    assert families["empsync_runs"].type == "counter"
    assert sample(families, "empsync_runs", "empsync_runs_total", status="ok") >= 1
    assert families["empsync_documents"].type == "counter"
    assert sample(families, "empsync_documents", "empsync_documents_total", outcome="inserted") == 4
    for outcome in ("inserted", "updated", "deleted", "unchanged", "rejected"):
        sample(families, "empsync_documents", "empsync_documents_total", outcome=outcome)
    reads = sample(families, "empsync_firestore_reads", "empsync_firestore_reads_total")
    assert reads >= 4
    duration = families["empsync_run_duration_seconds"]
    assert duration.type == "histogram"
    runs = sample(families, "empsync_run_duration_seconds", "empsync_run_duration_seconds_count")
    assert runs >= 1
    assert sample(families, "empsync_run_duration_seconds", "empsync_run_duration_seconds_bucket", le="+Inf") == runs
    last = sample(families, "empsync_last_success_timestamp_seconds", "empsync_last_success_timestamp_seconds")
    assert abs(datetime.now(UTC).timestamp() - last) < 3600
    assert sample(families, "empsync_leader", "empsync_leader") == 1
    assert sample(families, "empsync_interval_seconds", "empsync_interval_seconds") == 300
    assert sample(families, "empsync_rows", "empsync_rows") == 4

    # A run moves the counters: one more ok run, one more update, its reads.
    served.post(f"{PREFIX}/trigger", {"force": True})
    wait_for(lambda: served.events.finished(trigger="api"), 20, "the triggered run")
    families = metric_families(served)
    assert sample(families, "empsync_runs", "empsync_runs_total", kind="force", status="ok") >= 1
    assert sample(families, "empsync_documents", "empsync_documents_total", outcome="unchanged") >= 4
    assert sample(families, "empsync_firestore_reads", "empsync_firestore_reads_total") >= reads + 4

    # A failed run is counted as one.
    served.service.engine.mirror.write = lambda *a, **k: 1 / 0
    try:
        served.post(f"{PREFIX}/trigger", {"force": True})
        wait_for(lambda: served.service.snapshot()["last_result"]["status"] == "failed", 20, "a failed run")
    finally:
        del served.service.engine.mirror.write
    families = metric_families(served)
    assert sample(families, "empsync_runs", "empsync_runs_total", kind="force", status="failed") == 1

    # A standby on the same database says it does not lead.
    standby = Served(dataclasses.replace(served.config, api=dataclasses.replace(served.config.api, port=0)))
    standby.api.start()
    try:
        with running(standby.service):
            wait_for(lambda: standby.service.snapshot()["state"] == "standby", 10, "the second service to stand by")
            families = metric_families(standby)
            assert sample(families, "empsync_leader", "empsync_leader") == 0
            status = standby.get(f"{PREFIX}/status")[2]
            assert status["is_leader"] is False and status["state"] == "standby"
    finally:
        standby.api.stop()
    wait_leading(served.service)


def test_the_token_can_come_from_the_environment(make_config, sqlite_url, tmp_path):
    config = make_config(sqlite_url, api={"enabled": True, "port": 0, "token": ""})
    loaded = cfg.load(str(write_toml(tmp_path / "sync.toml", config)), env={"EMPSYNC_API_TOKEN": "from-env-token-5e1a"})
    s = Served(loaded)
    s.api.start()
    try:
        assert_error(s.post(f"{PREFIX}/interval", {"interval": 60}, token=None), 401)
        assert s.post(f"{PREFIX}/interval", {"interval": 60}, token="from-env-token-5e1a")[0] == 200
    finally:
        s.api.stop()


def test_a_non_loopback_api_without_a_token_refuses_to_start(make_config, sqlite_url, tmp_path):
    config = make_config(sqlite_url, api={"enabled": True, "host": "0.0.0.0", "port": 0, "token": ""})
    with pytest.raises(ConfigError, match="api.token"):
        ControlApi(SyncService(config), config.api)
    for host in ("0.0.0.0", "::"):
        bad = dataclasses.replace(config, api=dataclasses.replace(config.api, host=host))
        path = write_toml(tmp_path / f"api-{host.replace(':', '_')}.toml", bad)
        process = Headless(path)
        try:
            code = process.wait(30)
        finally:
            process.close()
        assert code == 2, process.text()
        assert "api.token" in process.text() and "Traceback" not in process.text()
        assert "Leading" not in process.text(), "it started syncing before refusing"


# -- hostile input ----------------------------------------------------------------------------


def raw_exchange(served, data: bytes) -> bytes:
    return exchange(served.api.address[1], data)


def answers(data: bytes) -> list[tuple[int, dict]]:
    """Every (status, JSON body) in a raw answer stream."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
        out.append((status, json.loads(rest[:length])))
        data = rest[length:]
    return out


def request(method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def assert_unchanged(served):
    time.sleep(0.3)
    assert served.service.snapshot()["interval"] == 300, "a refused request changed the interval"
    assert not served.events.finished(trigger="api") and not served.service.snapshot()["pending"]


def test_metrics_can_be_made_public(make_config, sqlite_url):
    config = make_config(sqlite_url, api={"enabled": True, "port": 0, "token": TOKEN, "metrics_public": True})
    s = Served(config)
    s.api.start()
    try:
        assert s.get("/metrics", token=None)[0] == 200
        assert_error(s.get(f"{PREFIX}/status", token=None), 401)
    finally:
        s.api.stop()


def test_posts_must_be_json(served):
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        for path, body in ((f"{PREFIX}/trigger", {"force": True}), (f"{PREFIX}/interval", {"interval": 60})):
            code, _, error = served.post(path, body, headers={"Content-Type": content_type})
            assert code == 415 and "application/json" in error["error"], error
    # No Content-Type at all (curl -X POST without -H), and a body-less one too.
    auth = f"Bearer {TOKEN}"
    for body in (b'{"interval": 60}', b""):
        raw = request("POST", f"{PREFIX}/interval", body, Authorization=auth, Content_Length=str(len(body)))
        assert answers(raw_exchange(served, raw))[0][0] == 415
    assert (
        served.post(
            f"{PREFIX}/interval", {"interval": 60}, headers={"Content-Type": "application/json; charset=utf-8"}
        )[0]
        == 200
    )
    served.service.set_interval(300)
    wait_for(lambda: stored_state(served.config).get("interval") == "300", 10, "the interval put back")
    assert_unchanged(served)


def test_a_foreign_host_or_origin_is_refused(served):
    host, port = served.api.address
    auth = f"Bearer {TOKEN}"
    for bad in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}", f"localhost.evil.example:{port}"):
        for raw in (
            request("GET", f"{PREFIX}/status", Host=bad, Authorization=auth),
            request("POST", f"{PREFIX}/trigger", b"{}", Host=bad, Authorization=auth, Content_Type="application/json", Content_Length="2"),
        ):  # fmt: skip
            ((code, error),) = answers(raw_exchange(served, raw))
            assert code == 403 and "Host" in error["error"], (bad, error)
    for origin in (
        "http://evil.example",
        f"http://evil.example:{port}",
        "null",
        f"https://127.0.0.1:{port}",
        f"http://127.0.0.1:{port + 1}",
    ):
        code, _, error = served.post(f"{PREFIX}/trigger", {"force": True}, headers={"Origin": origin})
        assert code == 403 and "cross-origin" in error["error"], (origin, error)
        assert served.get(f"{PREFIX}/status", headers={"Origin": origin})[0] == 403
    assert_unchanged(served)
    # This server's own names, and its own origin, are fine; so is an HTTP/1.0 client with no Host.
    for good in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST.:{port}", f"[::1]:{port}", "127.0.0.1"):
        raw = request("GET", f"{PREFIX}/status", Host=good, Authorization=auth, Connection="close")
        assert answers(raw_exchange(served, raw))[0][0] == 200, good
    assert served.get(f"{PREFIX}/status", headers={"Origin": f"http://127.0.0.1:{port}"})[0] == 200
    raw = f"GET /healthz HTTP/1.0\r\nAuthorization: {auth}\r\n\r\n".encode()
    assert answers(raw_exchange(served, raw))[0][0] == 200


def test_json_and_framing_edge_cases_are_400s_that_say_what_is_wrong(served):
    interval = f"{PREFIX}/interval"
    assert_error(served.post(interval, raw=b"[" * 50_000), 400, "nested too deeply")
    assert_error(served.post(interval, raw=b'{"interval": ' + b"9" * 5000 + b"}"), 400, "too many digits")
    auth = f"Bearer {TOKEN}"
    json_type = "application/json"
    raw = request("POST", interval, Authorization=auth, Content_Type=json_type, Content_Length="9" * 5000)
    ((code, error),) = answers(raw_exchange(served, raw))
    assert code == 413 and "larger than" in error["error"]
    for lengths in (("5", "6"), ("+5",), ("5 5",), ("٥",)):
        headers = "".join(f"Content-Length: {n}\r\n" for n in lengths)
        raw = f"POST {interval} HTTP/1.1\r\nAuthorization: {auth}\r\nContent-Type: {json_type}\r\n{headers}\r\n{{}}".encode()
        ((code, error),) = answers(raw_exchange(served, raw))
        assert code == 400 and "Content-Length" in error["error"], lengths
    # A chunked body is refused and the connection closed: its chunks are never read as requests.
    chunked = b'15\r\n{"interval": 60}\r\n0\r\n\r\n'
    smuggled = request("GET", f"{PREFIX}/status", Authorization=auth)
    raw = request(
        "POST", interval, chunked + smuggled, Authorization=auth, Content_Type=json_type, Transfer_Encoding="chunked"
    )
    ((code, error),) = answers(raw_exchange(served, raw))
    assert code == 501 and "Transfer-Encoding" in error["error"]
    # The stdlib's own protocol errors are JSON too.
    ((code, error),) = answers(raw_exchange(served, b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n"))
    assert code == 414 and error["status"] == 414
    assert_unchanged(served)


def test_kept_alive_and_pipelined_requests_are_answered_in_order(served):
    auth = f"Bearer {TOKEN}"
    raw = b"".join(request("GET", path, Authorization=auth) for path in ("/healthz", f"{PREFIX}/stats", "/nope"))
    raw += request("GET", "/healthz", Connection="close")
    got = answers(raw_exchange(served, raw))
    assert [code for code, _ in got] == [200, 200, 404, 200]


def test_a_slow_body_gets_408_and_a_silent_client_is_closed(served, monkeypatch):
    monkeypatch.setattr(api_module, "BODY_TIMEOUT_S", 0.5)
    monkeypatch.setattr(api_module, "HEAD_TIMEOUT_S", 0.5)
    host, port = served.api.address
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(
            request(
                "POST",
                f"{PREFIX}/interval",
                b'{"inter',
                Authorization=f"Bearer {TOKEN}",
                Content_Type="application/json",
                Content_Length="16",
            )
        )
        ((code, error),) = answers(read_all(conn))  # 408, and the connection closed
        assert code == 408 and "body" in error["error"]
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1")  # and never the rest
        assert conn.recv(100) == b"", "a head that never ends keeps its connection"
    assert_unchanged(served)


def test_beyond_the_handler_bound_a_request_is_refused_at_once(served, monkeypatch):
    monkeypatch.setattr(served.api.server, "slots", threading.BoundedSemaphore(1))
    host, port = served.api.address
    auth = f"Bearer {TOKEN}"
    with socket.create_connection((host, port), timeout=10) as slow:
        # A whole head with a body still to come holds the only handler.
        slow.sendall(
            request(
                "POST",
                f"{PREFIX}/interval",
                b"{",
                Authorization=auth,
                Content_Type="application/json",
                Content_Length="20",
            )
        )
        wait_for(lambda: answers(raw_exchange(served, request("GET", "/healthz")))[0][0] == 503, 10, "a 503")
    wait_for(lambda: served.get("/healthz")[0] == 200, 10, "the handler free again")


def test_running_out_of_file_descriptors_does_not_spin(served, monkeypatch):
    """accept() failing with EMFILE pauses accepting instead of retrying as fast as the CPU allows."""
    listener = served.api.server.listener
    calls = []
    real_accept = socket.socket.accept

    def exhausted(sock):
        if sock is not listener:
            return real_accept(sock)
        calls.append(time.monotonic())
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(socket.socket, "accept", exhausted)
    pending = socket.create_connection(served.api.address, timeout=5)  # the listener stays readable
    try:
        time.sleep(2.0)
        monkeypatch.undo()
        # Paused for ACCEPT_BACKOFF_S after each failure: a handful of tries, not hundreds of thousands.
        assert 1 <= len(calls) <= 2.0 / api_module.ACCEPT_BACKOFF_S + 2, len(calls)
        wait_for(lambda: served.get("/healthz")[0] == 200, 10, "accepting again once descriptors are back")
    finally:
        pending.close()


def test_a_client_that_leaves_early_is_a_debug_line_at_most(served, caplog, capfd):
    host, port = served.api.address
    caplog.set_level(logging.DEBUG, logger="empsync.api")
    for _ in range(10):
        conn = socket.create_connection((host, port), timeout=5)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
        conn.sendall(request("GET", "/metrics", Authorization=f"Bearer {TOKEN}"))
        conn.close()
    assert served.get("/healthz")[0] == 200
    time.sleep(0.5)
    assert [r for r in caplog.records if r.name.startswith("empsync.api") and r.levelno > logging.DEBUG] == []
    assert capfd.readouterr().err == "", "something wrote to stderr around the logging"


@pytest.mark.parametrize("token", ["short-token", " " * 20, "a-token-with a space-in-it", "tökén-tökén-tökén-tökén"])
def test_a_weak_or_unsendable_token_is_refused_at_start(make_config, sqlite_url, tmp_path, token):
    config = make_config(sqlite_url, api={"enabled": True, "port": 0, "token": token})
    with pytest.raises(ConfigError) as info:
        ControlApi(SyncService(config), config.api)
    assert info.value.key == "api.token" and info.value.exit_code == 2
    assert token.strip() == "" or token not in str(info.value), "the error shows the token"


def test_the_api_port_in_use_or_an_unknown_host_exits_2_naming_the_key(make_config, sqlite_url, tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        for key, api in (
            ("api.port", {"enabled": True, "host": "127.0.0.1", "port": port, "token": TOKEN}),
            ("api.host", {"enabled": True, "host": "no-such-host.invalid", "port": 0, "token": TOKEN}),
            ("api.host", {"enabled": True, "host": "192.0.2.1", "port": 0, "token": TOKEN}),  # not this machine's
        ):
            path = write_toml(tmp_path / "sync.toml", make_config(sqlite_url, api=api))
            process = Headless(path)
            try:
                code = process.wait(30)
            finally:
                process.close()
            text = process.text()
            assert code == 2 and key in text and "Traceback" not in text and "unexpected" not in text, text
