"""A hostile client against a real ``empsync --no-ui``: no state change, no lost thread, no raw stderr.

test_api_abuse.py throws random bytes at the API; here the attacks are the
ones a web page, a slow-loris script or a careless client makes, against a
service with a token:

- a fixed corpus on raw sockets, each with the status it must get;
- hypothesis: authorized, well-formed state-changing requests that carry a
  foreign Host or Origin, or are not JSON: each must be refused, and the
  service's stored state, queue and runs must be exactly as before;
- 200 sockets that send half a request and hang, plus 100 unauthorized
  POSTs that never send their body: a normal request is still answered, the
  process's thread count stays bounded and its CPU near idle (measured in
  CPU seconds over an interval, with a generous bound: a behaviour check,
  not a benchmark), and the sockets are closed after the head timeout;
- clients that reset their connection mid-request;
- through all of it, stderr holds only formatted log lines.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from core import api as core_api
from core.emulator import free_port

from ..conftest import employee, write_docs, write_toml
from ..service_support import TEXT_LINE, Headless, exchange, http, wait_for
from .support import TOKEN, Db, api, force_sync, seeded, with_api

pytestmark = pytest.mark.integration

PREFIX = "/api/realtime-sync"
SLOW_HEADS = 200
SLOW_BODIES = 100
THREAD_SLACK = 6  # threads the process may start meanwhile for its own work (a run, a status refresh)
CPU_BOUND = 0.25  # CPU seconds per wall second while the slow sockets hang (idle is ~0.01)


def raw(port: int, data: bytes) -> tuple[int, bytes]:
    """One raw exchange: the status of the first answer (0 for none) and all the bytes."""
    answer = exchange(port, data)
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    return (int(match.group(1)) if match else 0), answer


def head(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def corpus(port: int) -> list[tuple[str, bytes, int]]:
    """(what, request, the status it must get)."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    own = {"Host": f"127.0.0.1:{port}"}
    as_json = {"Content-Type": "application/json"}
    interval = b'{"interval": 10}'
    n = str(len(interval))
    post = f"{PREFIX}/interval"
    return [
        ("a page's text/plain POST (no preflight)", head("POST", post, {**own, "Content-Type": "text/plain", "Content-Length": n}, interval), 401),
        ("the same with the token", head("POST", post, {**own, **auth, "Content-Type": "text/plain", "Content-Length": n}, interval), 415),
        ("a form POST with the token", head("POST", f"{PREFIX}/trigger", {**own, **auth, "Content-Type": "application/x-www-form-urlencoded", "Content-Length": "10"}, b"force=true"), 415),
        ("a rebinding page's read", head("GET", f"{PREFIX}/status", {"Host": f"attacker.example:{port}", **auth}), 403),
        ("a rebinding page's POST", head("POST", post, {"Host": f"attacker.example:{port}", **auth, **as_json, "Content-Length": n}, interval), 403),
        ("a foreign Origin's POST", head("POST", post, {**own, **auth, **as_json, "Origin": "http://attacker.example", "Content-Length": n}, interval), 403),
        ("a sandboxed frame's POST", head("POST", post, {**own, **auth, **as_json, "Origin": "null", "Content-Length": n}, interval), 403),
        ("a foreign Origin's read", head("GET", f"{PREFIX}/status", {**own, **auth, "Origin": "http://attacker.example"}), 403),
        ("two Host headers", f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: attacker.example\r\n\r\n".encode(), 400),
        ("a read without the token", head("GET", f"{PREFIX}/status", own), 401),
        ("stats without the token", head("GET", f"{PREFIX}/stats", own), 401),
        ("metrics without the token", head("GET", "/metrics", own), 401),
        ("a health probe without the token", head("GET", "/healthz", own), 200),
        ("a CORS preflight", head("OPTIONS", post, {**own, "Origin": "http://attacker.example", "Access-Control-Request-Method": "POST"}), 403),
        ("JSON nested 50,000 deep", head("POST", post, {**own, **auth, **as_json, "Content-Length": "50000"}, b"[" * 50_000), 400),
        ("an integer of 5,000 digits", head("POST", post, {**own, **auth, **as_json, "Content-Length": "5015"}, b'{"interval": ' + b"7" * 5000 + b"}"), 400),
        ("a Content-Length of 5,000 digits", head("POST", post, {**own, **auth, **as_json, "Content-Length": "9" * 5000}), 413),
        ("a chunked body smuggling a request", head("POST", post, {**own, **auth, **as_json, "Transfer-Encoding": "chunked"}, b"10\r\n" + interval + b"\r\n0\r\n\r\n" + head("POST", f"{PREFIX}/trigger", {**auth, **as_json, "Content-Length": "2"}, b"{}")), 501),
        ("two different Content-Lengths", f"POST {post} HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nContent-Length: {n}\r\n\r\n".encode() + interval, 400),
        ("a body shorter than declared", head("POST", post, {**own, **auth, **as_json, "Content-Length": "100"}, interval), 400),
        ("a request line of 70,000 bytes", b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
        ("101 headers", b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n", 431),
    ]  # fmt: skip


FOREIGN_HOSTS = st.sampled_from(
    ["attacker.example", "127.0.0.1.attacker.example", "localhost.attacker.example", "evil"]
)
FOREIGN_ORIGINS = st.sampled_from(
    ["http://attacker.example", "null", "https://127.0.0.1", "http://localhost.attacker.example", "file://"]
)


@st.composite
def foreign_requests(draw, port: int) -> bytes:
    """An authorized, well-formed POST that changes state, made foreign by its Host, Origin or type."""
    path, body = draw(st.sampled_from([
        (f"{PREFIX}/interval", {"interval": 10}),
        (f"{PREFIX}/trigger", {"force": True}),
        (f"{PREFIX}/trigger", {}),
        (f"{PREFIX}/trigger", {"interval": 86_400}),
    ]))  # fmt: skip
    data = json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json", "Content-Length": str(len(data))}
    how = draw(st.sets(st.sampled_from(["host", "port", "origin", "origin-port", "type"]), min_size=1))
    if "host" in how:
        headers["Host"] = f"{draw(FOREIGN_HOSTS)}:{port}"
    elif "port" in how:
        headers["Host"] = f"127.0.0.1:{draw(st.integers(1, 65535).filter(lambda p: p != port))}"
    else:
        headers["Host"] = draw(st.sampled_from([f"127.0.0.1:{port}", f"localhost:{port}"]))
    if "origin" in how:
        headers["Origin"] = draw(FOREIGN_ORIGINS)
    elif "origin-port" in how:
        headers["Origin"] = f"http://127.0.0.1:{draw(st.integers(1, 65535).filter(lambda p: p != port))}"
    if "type" in how:
        headers["Content-Type"] = draw(
            st.sampled_from(["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "json", ""])
        )
    items = list(headers.items())
    order = draw(st.permutations(items))
    return head("POST", path, dict(order), data)


def stored(db: Db) -> dict[str, str]:
    return dict(db.rows("SELECT `key`, value FROM empsync_state WHERE `key` IN ('interval', 'paused')"))


def proc_stat(pid: int) -> tuple[float, int]:
    """(CPU seconds used so far, threads) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return cpu, int(fields[17])


def cpu_rate(pid: int, seconds: float) -> float:
    before, _ = proc_stat(pid)
    time.sleep(seconds)
    after, _ = proc_stat(pid)
    return (after - before) / seconds


def assert_only_log_lines(proc: Headless) -> None:
    stray = [line for line in proc.lines if not TEXT_LINE.match(line)]
    assert stray == [], "stderr holds more than formatted log lines:\n" + "\n".join(stray[:20])


def test_a_hostile_client_changes_nothing_and_cannot_starve_the_service(
    emulator, project, make_config, mysql_url, firestore_client, tmp_path, processes
):
    rng = seeded("hostile-client")
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(5)})
    port = free_port()
    config = with_api(make_config(mysql_url, sync={"interval": 86_400, "force_interval": 7 * 86_400}), port)
    path = write_toml(tmp_path / "sync.toml", config)
    force_sync(path)  # nothing is due while the attacks come in: any run would be theirs
    proc = Headless(path)
    processes.append(proc)
    db = Db(mysql_url)
    wait_for(lambda: (s := api(port, "GET", "status")[1]) and s.get("state") == "idle", 60, "the service idle")
    runs_before, settings_before = db.count("empsync_runs"), stored(db)

    def unchanged(after: str) -> None:
        assert db.count("empsync_runs") == runs_before, f"a run started after {after}"
        assert stored(db) == settings_before, f"a setting changed after {after}"
        status = api(port, "GET", "status")[1]
        assert status["pending"] == [] and status["current_run"] is None and status["interval"] == 86_400, status

    # 1. The corpus, each with its status.
    for what, data, expected in corpus(port):
        code, answer = raw(port, data)
        assert code == expected, f"{what}: {code} (wanted {expected}): {answer[:300]!r}"
        if code != 200:
            body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
            assert body["status"] == code and body["error"], (what, body)
    unchanged("the corpus")

    # 2. Authorized requests that a foreign page could make: never a state change.
    seen: dict[int, int] = {}

    @hypothesis_seed(rng.randrange(2**32))
    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(data=foreign_requests(port))
    def foreign(data: bytes) -> None:
        code, answer = raw(port, data)
        seen[code] = seen.get(code, 0) + 1
        assert code in (403, 415), f"{code} for {data[:400]!r}: {answer[:300]!r}"

    foreign()
    print(f"foreign requests: statuses {dict(sorted(seen.items()))}")
    unchanged("the foreign requests")
    assert proc.process.poll() is None

    # 3. Slow clients: half-sent heads and unsent bodies, all at once.
    cpu_idle = cpu_rate(proc.pid, 1.0)
    _, threads_before = proc_stat(proc.pid)
    slow = []
    try:
        for i in range(SLOW_HEADS):
            conn = socket.create_connection(("127.0.0.1", port), timeout=10)
            conn.sendall(f"GET {PREFIX}/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Slow: {i}".encode())
            slow.append(conn)
        refused = 0
        for _ in range(SLOW_BODIES):
            conn = socket.create_connection(("127.0.0.1", port), timeout=10)
            conn.sendall(
                head(
                    "POST", f"{PREFIX}/interval", {"Content-Type": "application/json", "Content-Length": "60000"}, b"{"
                )
            )
            answer = conn.recv(4096)  # refused at once: no token, so its body is never waited for
            refused += answer.startswith(b"HTTP/1.1 401 ")
            slow.append(conn)
        assert refused == SLOW_BODIES
        started = time.monotonic()
        code, _, health = http("GET", f"http://127.0.0.1:{port}/healthz")
        assert code == 200 and health["ok"], health
        assert api(port, "GET", "status")[0] == 200, "a normal request is answered while the slow ones hang"
        cpu_busy, threads = cpu_rate(proc.pid, 2.0), proc_stat(proc.pid)[1]
        print(
            f"{SLOW_HEADS} slow heads + {SLOW_BODIES} unsent bodies: threads {threads_before} -> {threads}, "
            f"CPU {cpu_idle:.3f} -> {cpu_busy:.3f} s/s"
        )
        assert threads <= threads_before + THREAD_SLACK, f"threads grew from {threads_before} to {threads}"
        assert cpu_busy < CPU_BOUND, f"{cpu_busy:.2f} CPU s/s while slow sockets hang"
        # Past the head timeout, the server closes the slow sockets itself.
        for conn in slow[:SLOW_HEADS]:
            left = core_api.HEAD_TIMEOUT_S + 10 - (time.monotonic() - started)
            conn.settimeout(max(0.1, left))
            try:
                assert conn.recv(100) == b"", "a slow socket got an answer"
            except ConnectionResetError:
                pass
    finally:
        for conn in slow:
            conn.close()

    # 4. Clients that reset their connection in the middle of a request.
    mark = proc.count()
    for _ in range(20):
        conn = socket.create_connection(("127.0.0.1", port), timeout=5)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.sendall(head("GET", "/metrics", {"Authorization": f"Bearer {TOKEN}"}))
        conn.close()
    assert api(port, "GET", "status")[0] == 200
    time.sleep(0.5)
    assert proc.lines[mark:] == [], "a dropped client was logged above debug"

    unchanged("the slow and the dropped clients")
    assert proc.process.poll() is None
    assert_only_log_lines(proc)
    proc.signal(signal.SIGTERM)
    assert proc.wait(15) == 0, proc.text()[-3000:]
    assert_only_log_lines(proc)
    db.close()
