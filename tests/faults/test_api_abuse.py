"""API abuse: random methods, paths, headers and bodies against a real service's control API.

tests/test_api.py checks every documented status with well-formed requests.
Here hypothesis writes the requests — byte for byte on a raw socket, so the
request line, the headers and the body need not make sense, and
Content-Length may lie — ``api_requests`` of them against a real
``empsync --no-ui`` with a token. Three quarters carry no valid token: after
them the service's stored state (interval, pause), its queue and its runs
must be exactly as before. The rest carry the token with random bodies. No
request may get a 500 or no answer (the only 5xx allowed are the stdlib's
501 for a method it does not know and 505 for an HTTP version it does not
speak), and the service must answer its health check and keep syncing.
"""

from __future__ import annotations

import base64
import json
import re
import signal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from core.emulator import free_port

from ..conftest import employee, write_docs, write_toml
from ..service_support import Headless, exchange, http, wait_for
from .checks import audit_report
from .support import SIZES, TOKEN, Db, api, cli_verify, force_sync, seeded, with_api

pytestmark = pytest.mark.integration

PREFIX = "/api/realtime-sync"
PATHS = [
    f"{PREFIX}/status",
    f"{PREFIX}/stats",
    f"{PREFIX}/trigger",
    f"{PREFIX}/interval",
    "/healthz",
    "/metrics",
    "/",
    "",
    "*",
    "/api",
    PREFIX,
    f"{PREFIX}/",
    f"{PREFIX}/trigger/",
    f"{PREFIX}/TRIGGER",
    f"{PREFIX}/trigger?force=true",
    f"{PREFIX}/interval/../trigger",
    f"{PREFIX}/interval%2F..%2Ftrigger",
    "//healthz",
    "/metrics/",
    "http://127.0.0.1/healthz",
    "/" + "a" * 5000,
    f"{PREFIX}/status\x00",
    "/%ff%fe",
    "/ünïcode/✓",
]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT", "get", "post"]
VERSIONS = ["HTTP/1.0", "HTTP/2.0", "HTTP/1.1x", "FOO/1.1", "HTTP/9.9"]
HEADER_NAMES = [
    "Authorization",
    "Content-Type",
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "Expect",
    "Host",
    "Origin",
    "X-Forwarded-For",
    "Accept",
    "Cookie",
    "Content-Encoding",
]
AUTH_VALUES = [
    "",
    "Bearer",
    "Bearer ",
    "Bearer wrong",
    f"Bearer {TOKEN[:-1]}",
    f"Bearer {TOKEN}x",
    f"Bearer x{TOKEN}",
    f"Bearer {TOKEN.upper()}",
    f"Basic {base64.b64encode(f'empsync:{TOKEN}'.encode()).decode()}",
    f"Token {TOKEN}",
    TOKEN,
    f"Bearer{TOKEN}",
    f"Bearer {TOKEN} {TOKEN}",
    "Bearer \u00e9\u00e8",
]
STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3}) ")
# A request line that is not "METHOD PATH HTTP/1.x" is answered in the HTTP/0.9 style, with no
# status line: the stdlib's error page, or (a two-word GET) the API's JSON error.
HEADLESS_ANSWER = re.compile(rb'<p>Error code: (\d{3})</p>|"status": (\d{3})\}')
# The API's own answers (403 a foreign Host or Origin, 415 a POST that is not JSON, 501 a
# Transfer-Encoding), and the stdlib's protocol-level ones: 414 line too long, 431 headers too
# large, 501 a method it does not know, 505 an HTTP version it does not speak. Never a 500.
EXPECTED = {200, 202, 400, 401, 403, 404, 405, 413, 414, 415, 422, 431, 501, 505}

# Header values and path characters: no CR or LF (those would end the line, not fuzz it); sent as UTF-8.
LINE_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
BODIES = st.one_of(
    st.just(b""),
    st.binary(max_size=600),
    st.fixed_dictionaries(
        {},
        optional={
            "force": st.one_of(st.booleans(), JSON),
            "interval": st.one_of(st.integers(-10, 200_000), st.sampled_from([9, 10, 86_400, 86_401]), JSON),
        },
    ).map(lambda d: json.dumps(d).encode()),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


def valid_auth(value: str) -> bool:
    """What the service accepts: a bearer token equal to the configured one (scheme case-insensitive)."""
    scheme, _, credential = value.partition(" ")
    return scheme.lower() == "bearer" and credential.strip() == TOKEN


def weighted(draw, *choices):
    """Draw from (weight, strategy) pairs: most requests should reach the routes, some should not."""
    roll = draw(st.integers(0, sum(w for w, _ in choices) - 1))
    for weight, strategy in choices:
        if roll < weight:
            return draw(strategy)
        roll -= weight
    raise AssertionError("unreachable")


@st.composite
def requests(draw, token: bool) -> bytes:
    if draw(st.integers(0, 9)) < 4:  # the two routes that change something, which the rest must not reach
        method, path = "POST", draw(st.sampled_from([f"{PREFIX}/trigger", f"{PREFIX}/interval"]))
    else:
        method = weighted(
            draw,
            (6, st.sampled_from(["GET", "POST"])),
            (3, st.sampled_from(METHODS)),
            (1, st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ-_", min_size=1, max_size=12)),
        )
        path = weighted(
            draw,
            (6, st.sampled_from(PATHS[:6])),
            (2, st.sampled_from(PATHS)),
            (1, st.tuples(st.sampled_from(PATHS), LINE_TEXT).map("".join)),
            (1, LINE_TEXT.map(lambda t: "/" + t)),
        )
    version = weighted(draw, (9, st.just("HTTP/1.1")), (1, st.sampled_from(VERSIONS)))
    body = draw(BODIES)
    headers: list[tuple[str, str]] = []
    if draw(st.integers(0, 9)) < 7:
        headers.append(("Content-Length", str(len(body))))
    if draw(st.integers(0, 9)) < 7:  # most reach the body's checks; the rest meet the 415
        headers.append(("Content-Type", "application/json"))
    if not token and draw(st.booleans()):
        headers.append(("Authorization", draw(st.one_of(st.sampled_from(AUTH_VALUES), LINE_TEXT))))
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.one_of(st.sampled_from(HEADER_NAMES), st.text("abcdefxyz-XYZ", min_size=1, max_size=15)))
        if name.lower() == "authorization":
            value = draw(st.one_of(st.sampled_from(AUTH_VALUES), LINE_TEXT))
        elif name.lower() == "content-length":
            value = draw(
                st.one_of(
                    st.integers(-5, 200_000).map(str),
                    st.sampled_from(["", "abc", "1e3", " 12", "0x10", "99999999999999999999"]),
                )
            )
        else:
            value = draw(LINE_TEXT)
        headers.insert(draw(st.integers(0, len(headers))), (name, value))
    if token:
        headers = [(n, v) for n, v in headers if n.lower() != "authorization"]
        headers.insert(draw(st.integers(0, len(headers))), ("Authorization", f"Bearer {TOKEN}"))
    else:
        # No valid token anywhere: the request must change nothing.
        headers = [(n, v) for n, v in headers if not (n.lower() == "authorization" and valid_auth(v))]
    head = f"{method} {path} {version}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n"
    return head.encode("utf-8") + body


def stored_settings(db: Db) -> dict[str, str]:
    return dict(db.rows("SELECT `key`, value FROM empsync_state WHERE `key` IN ('interval', 'paused')"))


def test_random_requests_never_get_a_500_nor_change_anything_without_the_token(
    emulator, project, make_config, mysql_url, firestore_client, tmp_path, processes
):
    rng = seeded("api-abuse")
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(20)})
    port = free_port()
    config = with_api(make_config(mysql_url, sync={"interval": 86_400, "force_interval": 7 * 86_400}), port)
    path = write_toml(tmp_path / "sync.toml", config)
    force_sync(path)  # nothing is due while the requests come in
    db = Db(mysql_url)
    proc = Headless(path)
    processes.append(proc)
    wait_for(lambda: (s := api(port, "GET", "status")[1]) and s.get("state") == "idle", 60, "the service idle")
    runs_before, settings_before = db.count("empsync_runs"), stored_settings(db)
    mark = proc.count()
    statuses: dict[int, int] = {}
    accepted: list[int] = []
    unauthorized = SIZES.api_requests * 3 // 4

    def check(raw: bytes) -> None:
        answer = exchange(port, raw)
        words = raw.split(b"\r\n", 1)[0].split()
        http_1x = len(words) == 3 and words[2] in (b"HTTP/1.0", b"HTTP/1.1")
        match = STATUS_LINE.match(answer) or (not http_1x and HEADLESS_ANSWER.search(answer))
        assert match, f"no HTTP answer to {raw[:300]!r}: {answer[:300]!r}"
        code = int(match.group(1) or match.group(2))
        statuses[code] = statuses.get(code, 0) + 1
        assert code in EXPECTED, f"{code} for {raw[:300]!r}: {answer[:500]!r}"
        if code == 200:
            try:
                body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
            except ValueError:
                return
            if isinstance(body, dict) and set(body) == {"interval"}:  # POST .../interval took it
                accepted.append(body["interval"])

    common = settings(
        max_examples=unauthorized,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )

    @hypothesis_seed(rng.randrange(2**32))
    @common
    @given(raw=requests(token=False))
    def without_token(raw: bytes) -> None:
        check(raw)

    without_token()
    sent_without = sum(statuses.values())
    print(f"without a valid token: {sent_without} requests, statuses {dict(sorted(statuses.items()))}")
    assert proc.process.poll() is None, proc.text()[-3000:]
    assert accepted == [] and 202 not in statuses
    # Nothing changed: no run, no stored setting, nothing queued, nothing logged as done.
    assert db.count("empsync_runs") == runs_before
    assert stored_settings(db) == settings_before
    status = api(port, "GET", "status")[1]
    assert status["pending"] == [] and status["current_run"] is None and status["interval"] == 86_400, status
    logged = "\n".join(proc.lines[mark:])
    for needle in ("Interval set", "Scheduled runs", "Starting employee sync"):
        assert needle not in logged, logged[-3000:]

    @hypothesis_seed(rng.randrange(2**32))
    @settings(common, max_examples=SIZES.api_requests - unauthorized)
    @given(raw=requests(token=True))
    def with_token(raw: bytes) -> None:
        check(raw)

    with_token()
    print(f"all {sum(statuses.values())} requests: statuses {dict(sorted(statuses.items()))}; intervals set {accepted}")
    if accepted:  # the last interval the API accepted is the one stored
        wait_for(lambda: stored_settings(db).get("interval") == str(accepted[-1]), 10, "the last accepted interval")
    code, _, health = http("GET", f"http://127.0.0.1:{port}/healthz")
    assert code == 200 and health["ok"], health
    assert proc.process.poll() is None
    for needle in ("Traceback", "API handler failed"):
        assert needle not in proc.text(), proc.text()[-3000:]
    # Still syncing: a change arrives through a triggered run, and verify agrees.
    write_docs(firestore_client, {"after-abuse": employee(99)})
    assert api(port, "POST", "trigger", {"force": True})[0] == 202
    wait_for(lambda: db.count("employees", "firestore_id = 'after-abuse'") == 1, 60, "a run after the abuse")
    proc.signal(signal.SIGTERM)
    assert proc.wait(15) == 0, proc.text()[-3000:]
    assert cli_verify(path)["differences"] == 0
    assert audit_report(mysql_url).replays == []
    db.close()
