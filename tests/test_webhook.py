"""Signed trigger requests: HMAC over timestamp and body, a window, no replays.

The signature checks are plain logic with a clock the test sets; the rest runs
against a real service and its API on the emulator, including the README's
own Cloud Function code.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import urllib.request
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import config as cfg
from core import webhook
from core.api import ControlApi
from core.errors import ConfigError
from core.service import SyncService
from core.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WINDOW_S, SignatureError, SignedRequests, sign

from .conftest import REPO, employee, write_docs
from .service_support import running, runs_table, wait_for
from .test_api import PREFIX, TOKEN, Served, assert_error

SECRET = "webhook-secret-9d2e4c1a"
NOW = 1_767_225_600


def checker(now: float = NOW) -> tuple[SignedRequests, list[float]]:
    clock = [now]
    return SignedRequests(SECRET, clock=lambda: clock[0]), clock


def refusal(requests: SignedRequests, headers: dict[str, str], body: bytes) -> str:
    with pytest.raises(SignatureError) as info:
        requests.verify(headers, body)
    return info.value.reason


# -- the signature, as plain logic --------------------------------------------------------


def test_a_signed_request_passes_once():
    requests, _ = checker()
    body = b'{"ids": ["e1"]}'
    headers = sign(SECRET, body, NOW)
    requests.verify(headers, body)
    assert "already used" in refusal(requests, headers, body)
    # The hex may come in capitals; it is the same signature, so the same replay.
    upper = {**headers, SIGNATURE_HEADER: "sha256=" + headers[SIGNATURE_HEADER][7:].upper()}
    assert "already used" in refusal(requests, upper, body)
    # A new timestamp is a new signature: the sender may ask again.
    requests.verify(sign(SECRET, body, NOW + 1), body)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda h, b: ({k: v for k, v in h.items() if k != TIMESTAMP_HEADER}, b), "X-Empsync-Timestamp is missing"),
        (lambda h, b: ({k: v for k, v in h.items() if k != SIGNATURE_HEADER}, b), "X-Empsync-Signature is missing"),
        (lambda h, b: ({**h, TIMESTAMP_HEADER: "soon"}, b), "Unix seconds"),
        (lambda h, b: ({**h, TIMESTAMP_HEADER: "-5"}, b), "Unix seconds"),
        (lambda h, b: ({**h, TIMESTAMP_HEADER: "1" * 40}, b), "Unix seconds"),
        (lambda h, b: ({**h, SIGNATURE_HEADER: h[SIGNATURE_HEADER][7:]}, b), "sha256=<64 hex digits>"),
        (lambda h, b: ({**h, SIGNATURE_HEADER: "sha1=" + h[SIGNATURE_HEADER][7:]}, b), "sha256="),
        (lambda h, b: ({**h, SIGNATURE_HEADER: h[SIGNATURE_HEADER][:-1]}, b), "64 hex"),
        (lambda h, b: (h, b + b" "), "does not match"),
        (lambda h, b: (h, b'{"force": true}'), "does not match"),
        (lambda h, b: (sign("another-secret-000000", b, NOW), b), "does not match"),
        (lambda h, b: ({**h, TIMESTAMP_HEADER: str(NOW + 1)}, b), "does not match"),
    ],
)
def test_a_bad_signature_says_what_is_wrong(change, words):
    requests, _ = checker()
    body = b'{"ids": ["e1"]}'
    headers, sent = change(sign(SECRET, body, NOW), body)
    assert words in refusal(requests, headers, sent)


def test_the_window_is_five_minutes_either_way():
    body = b"{}"
    for offset, ok in ((-WINDOW_S, True), (WINDOW_S, True), (-WINDOW_S - 1, False), (WINDOW_S + 1, False)):
        requests, _ = checker(NOW + offset)
        if ok:
            requests.verify(sign(SECRET, body, NOW), body)
        else:
            reason = refusal(requests, sign(SECRET, body, NOW), body)
            assert "outside the 300 s window" in reason
            assert ("old" if offset > 0 else "ahead") in reason


@given(body=st.binary(max_size=300), skew=st.integers(-WINDOW_S, WINDOW_S), flip=st.integers(0, 299))
def test_any_body_signed_passes_and_any_changed_byte_does_not(body, skew, flip):
    requests, _ = checker(NOW + skew)
    headers = sign(SECRET, body, NOW)
    if body:
        changed = bytearray(body)
        changed[flip % len(body)] ^= 0x01
        assert "does not match" in refusal(requests, headers, bytes(changed))
    requests.verify(headers, body)


def test_remembered_signatures_are_bounded_and_forgotten(monkeypatch):
    monkeypatch.setattr(webhook, "MAX_REMEMBERED", 3)
    requests, clock = checker()
    for n in range(3):
        requests.verify(sign(SECRET, b"{}", NOW + n), b"{}")
    with pytest.raises(SignatureError) as info:
        requests.verify(sign(SECRET, b"{}", NOW + 3), b"{}")
    assert info.value.busy and "more than 3 signed requests" in info.value.reason
    clock[0] = NOW + 2 * WINDOW_S + 10  # every remembered one is past its window: too old to replay anyway
    requests.verify(sign(SECRET, b"{}", int(clock[0])), b"{}")
    assert len(requests._seen) == 1


# -- against a running service --------------------------------------------------------------


@pytest.fixture
def signed_api(make_config, sqlite_url, firestore_client):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(3)})
    config = make_config(
        sqlite_url,
        sync={"interval": 3600, "force_interval": 3600},
        api={"enabled": True, "host": "127.0.0.1", "port": 0, "token": TOKEN, "webhook_secret": SECRET},
    )
    s = Served(config)
    s.api.start()
    with running(s.service):
        s.events.wait_finished(1, trigger="schedule")
        yield s
    s.api.stop()


def post_signed(served: Served, payload: Any = None, *, raw: bytes | None = None, secret: str = SECRET, **headers):
    body = raw if raw is not None else json.dumps(payload or {}).encode()
    signed = {**sign(secret, body), **headers}
    return served.post(f"{PREFIX}/trigger", raw=body, token=None, headers=signed)


@pytest.mark.integration
def test_a_signed_trigger_needs_no_token_and_is_recorded_as_webhook(signed_api, firestore_client):
    write_docs(firestore_client, {"e1": employee(1, name="Renamed"), "e9": employee(9)})
    code, _, body = post_signed(signed_api, {"ids": ["e1"]})
    assert code == 202, body
    assert body["queued"]["kind"] == "ids" and body["queued"]["trigger"] == "webhook"
    [result] = signed_api.events.wait_finished(1, trigger="webhook")
    assert result.kind == "ids" and result.counts.fetched == 1 and result.counts.updated == 1
    assert post_signed(signed_api, {"force": True})[0] == 202
    forced = signed_api.events.wait_finished(2, trigger="webhook")[-1]
    assert forced.kind == "force" and forced.counts.inserted == 1  # e9
    assert [r["trigger"] for r in runs_table(signed_api.config) if r["kind"] in ("ids", "force")][-2:] == [
        "webhook",
        "webhook",
    ]
    # The same request again is a replay, however soon.
    body = json.dumps({}).encode()
    headers = sign(SECRET, body)
    assert signed_api.post(f"{PREFIX}/trigger", raw=body, token=None, headers=headers)[0] == 202
    assert_error(signed_api.post(f"{PREFIX}/trigger", raw=body, token=None, headers=headers), 401, "already used")


@pytest.mark.integration
def test_a_bad_signed_trigger_is_401_naming_why_and_queues_nothing(signed_api):
    old = str(int(time.time()) - WINDOW_S - 60)
    body = b"{}"
    cases = [
        (post_signed(signed_api, {}, secret="not-the-secret-0000"), 401, "does not match"),
        (
            signed_api.post(
                f"{PREFIX}/trigger",
                raw=body,
                token=None,
                headers={TIMESTAMP_HEADER: old, SIGNATURE_HEADER: "sha256=" + webhook.signature(SECRET, old, body)},
            ),
            401,
            "outside the 300 s window",
        ),
        (post_signed(signed_api, {}, **{TIMESTAMP_HEADER: ""}), 401, "Timestamp is missing"),
        # A bad signature is told before anything about the body.
        (post_signed(signed_api, raw=b"{not json", secret="not-the-secret-0000"), 401, "does not match"),
        # Signed, it may ask only for a sync.
        (post_signed(signed_api, {"interval": 60}), 403, "not interval"),
        (post_signed(signed_api, {"force": True, "allow_mass_delete": True}), 403, "not allow_mass_delete"),
        # A good signature on bad JSON or bad ids: the usual answers.
        (post_signed(signed_api, raw=b"{not json"), 400, "JSON"),
        (post_signed(signed_api, {"ids": [f"e{i}" for i in range(501)]}), 422, "at most 500"),
        (post_signed(signed_api, {"ids": ["a/b"]}), 422, "ids"),
        (post_signed(signed_api, {"ids": ["e1"], "force": True}), 422, "no force"),
    ]
    for response, status, words in cases:
        headers = assert_error(response, status, words)
        if status == 401:
            assert headers["WWW-Authenticate"].startswith("Bearer")
    # Only the trigger takes a signature: elsewhere the token is needed as ever.
    assert_error(
        signed_api.get(f"{PREFIX}/status", token=None, headers=sign(SECRET, b"")), 401, "bearer token is required"
    )
    time.sleep(0.5)
    assert not signed_api.events.finished(trigger="webhook"), "a refused request queued a run"
    assert signed_api.service.snapshot()["interval"] == 3600


@pytest.mark.integration
def test_without_a_secret_a_signed_request_is_refused_saying_why(make_config, sqlite_url):
    config = make_config(sqlite_url, api={"enabled": True, "port": 0, "token": TOKEN})
    served = Served(config)
    served.api.start()
    try:
        assert_error(post_signed(served, {}), 401, "webhook_secret is not set")
    finally:
        served.api.stop()


def test_a_weak_webhook_secret_is_refused_at_start(sqlite_url):
    """A secret under 16 characters, or with spaces, stops the API from starting and names the key (no server needed)."""
    config = cfg.from_dict(
        {
            "source": {"project": "p", "emulator_host": "127.0.0.1:1"},
            "target": {"url": sqlite_url},
            "fields": {"name": {}},
            "api": {"enabled": True, "port": 0, "webhook_secret": "short"},
        }
    )
    with pytest.raises(ConfigError) as info:
        ControlApi(SyncService(config), config.api)
    assert info.value.key == "api.webhook_secret" and "16" in info.value.message
    spaced = dataclasses.replace(config.api, webhook_secret="sixteen chars with spaces")
    with pytest.raises(ConfigError, match="api.webhook_secret"):
        ControlApi(SyncService(config), spaced)


def readme_signer():
    """``signed_request`` exactly as the README shows it to Cloud Function authors."""
    text = (REPO / "README.md").read_text()
    code = re.search(r"\n(def signed_request\(.*?)\n\n\n", text, re.DOTALL)
    assert code, "the README's Cloud Function lost its signed_request"
    namespace: dict[str, Any] = {}
    prelude = "import hashlib, hmac, json, time, urllib.request\n"
    exec(compile(prelude + code.group(1), "README.md", "exec"), namespace)  # noqa: S102 - our own README
    return namespace["signed_request"]


@pytest.mark.integration
def test_the_readme_cloud_function_signs_requests_the_service_accepts(signed_api, firestore_client):
    write_docs(firestore_client, {"e2": employee(2, name="Written by the app")})
    request = readme_signer()(signed_api.base + f"{PREFIX}/trigger", SECRET, {"ids": ["e2"]})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202
        assert json.loads(response.read())["queued"]["kind"] == "ids"
    [result] = signed_api.events.wait_finished(1, trigger="webhook")
    assert result.counts.updated == 1
    wait_for(lambda: signed_api.service.snapshot()["state"] != "syncing", 20, "the run to end")
