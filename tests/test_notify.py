"""Admin notifications: when to tell, how, and that telling never slows a sync.

The conditions are plain logic, checked against a model of the runs and against
a clock the test moves. Deliveries go to real servers on loopback (an HTTP
receiver, aiosmtpd): up, down, slow, failing. The service tests run a real
service on the emulator and check that alerts arrive, clear, are recorded
(status, log, /metrics) and that a hanging receiver leaves the sync alone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import socket
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import config as cfg
from core.deliver import Notice, WebhookReceiver, probe_notice
from core.engine import RunResult
from core.errors import ConfigError
from core.events import BatchApplied, NotificationSent, StatusChanged, SyncFailed, SyncFinished
from core.logs import scrub, secrets_of
from core.metrics import Metrics
from core.notify import OUTBOX_MAX, RATE_BURST, RATE_EVERY_S, REJECT_SETTLE_S, Conditions, Notifier, RateLimit
from core.render import status_text
from core.service import SyncService
from core.times import utcnow

from .conftest import employee, run_cli, write_docs, write_toml
from .notify_support import HttpReceiver, SmtpReceiver, closed_port
from .service_support import Events, Headless, running, stored_state, wait_for, wait_leading

FIELDS = {"name": {"type": "string", "required": True}}
T0 = datetime(2026, 1, 1)


def notify_config(**notify: Any) -> cfg.Config:
    return cfg.from_dict({"fields": FIELDS, "notify": notify})


@pytest.fixture
def receiver():
    r = HttpReceiver()
    yield r
    r.close()


# -- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("notify", "key", "words"),
    [
        ({"webhook_urls": "https://x.example"}, "notify.webhook_urls", "list of strings"),
        ({"webhook_urls": [3]}, "notify.webhook_urls[0]", "string"),
        ({"webhook_urls": ["ftp://x.example/h"]}, "notify.webhook_urls[0]", "http"),
        ({"webhook_urls": ["https://ok.example", "hooks.example.com/x"]}, "notify.webhook_urls[1]", "http"),
        ({"webhook_urls": ["https://x.example:99999/"]}, "notify.webhook_urls[0]", "port"),
        ({"webhook_urls": ["https://x.example/a b"]}, "notify.webhook_urls[0]", "spaces"),
        ({"webhook_urls": ["https://x.example/\n"]}, "notify.webhook_urls[0]", "control"),
        ({"webhook_urls": ["https://x.example/", "https://x.example/"]}, "notify.webhook_urls", "twice"),
        ({"format": "teams"}, "notify.format", "json or slack"),
        ({"smtp_url": "mail.example.com"}, "notify.smtp_url", "smtp://"),
        ({"smtp_url": "imap://mail.example.com"}, "notify.smtp_url", "smtp://"),
        ({"smtp_url": "smtps://"}, "notify.smtp_url", "no host"),
        ({"smtp_url": "smtps://u:hunter2@mail.example.com:465"}, "notify.smtp_url", "password"),
        ({"smtp_url": "mailto://u:hunter2@mail.example.com"}, "notify.smtp_url", "password"),
        ({"smtp_url": "smtp://u:hunter2@mail.example.com:port"}, "notify.smtp_url", "port"),
        ({"smtp_url": "smtp://mail.example.com:x"}, "notify.smtp_url", "port"),
        ({"smtp_url": "smtp://mail.example.com/path"}, "notify.smtp_url", "path"),
        ({"smtp_url": "smtp://mail.example.com", "email_from": "e@x.example"}, "notify.email_to", "empty"),
        ({"email_to": ["a@x.example"], "email_from": "e@x.example"}, "notify.smtp_url", "empty"),
        ({"smtp_url": "smtp://m.example", "email_to": ["a@x.example"]}, "notify.email_from", "empty"),
        ({"smtp_url": "smtp://m.example", "email_to": ["not-an-address"]}, "notify.email_to[0]", "e-mail address"),
        (
            {"smtp_url": "smtp://m.example", "email_to": ["a@x.example\nBcc: b@evil.example"]},
            "notify.email_to[0]",
            "e-mail address",
        ),
        ({"smtp_url": "smtp://m.example", "email_to": ["Ops <ops@x.example>"]}, "notify.email_to[0]", "address"),
        (
            {"smtp_url": "smtp://m.example", "email_to": ["a@x.example"], "email_from": "me@"},
            "notify.email_from",
            "address",
        ),
        ({"failures_before_alert": 0}, "notify.failures_before_alert", "from 1"),
        ({"failures_before_alert": True}, "notify.failures_before_alert", "whole number"),
        ({"lag_alert_seconds": 0}, "notify.lag_alert_seconds", "from 1"),
        ({"lag_alert_seconds": 86_401}, "notify.lag_alert_seconds", "86,400"),
        ({"reject_alert_minutes": -1}, "notify.reject_alert_minutes", "from 0"),
        ({"reject_alert_minutes": 1.5}, "notify.reject_alert_minutes", "whole number"),
        ({"smtp_password": "hunter2"}, "notify.smtp_password", "EMPSYNC_SMTP_PASSWORD"),
        ({"sms_to": ["+1"]}, "notify.sms_to", "unknown key"),
    ],
)
def test_bad_notify_config_names_the_key(notify, key, words):
    with pytest.raises(ConfigError) as info:
        notify_config(**notify)
    assert info.value.key == key, info.value.message
    assert words.lower() in str(info.value).lower(), str(info.value)
    assert info.value.exit_code == 2
    assert "hunter2" not in str(info.value)


def test_a_bad_notify_config_exits_2_naming_the_key(tmp_path):
    path = tmp_path / "sync.toml"
    path.write_text(
        '[notify]\nsmtp_url = "smtp://m.example"\nemail_to = ["ops"]\nemail_from = "e@x.example"\n[fields.name]\n'
    )
    done = run_cli("status", "--config", str(path))
    assert done.returncode == 2 and "notify.email_to[0]" in done.stderr and "Traceback" not in done.stderr


def test_good_notify_config_and_its_receivers():
    c = notify_config(
        webhook_urls=["https://hooks.example.com/services/T0/B0/secret", "http://127.0.0.1:9000/hook"],
        format="slack",
        smtp_url="smtps://alerts%40example.com@mail.example.com:465",
        email_to=["ops@example.com", "oncall@example.org"],
        email_from="empsync@example.com",
        failures_before_alert=1,
        reject_alert_minutes=0,
    )
    assert c.notify.receivers == 3 and c.notify.webhook_urls[1] == "http://127.0.0.1:9000/hook"
    endpoint = cfg.parse_smtp_url(c.notify.smtp_url)
    assert (endpoint.scheme, endpoint.host, endpoint.port, endpoint.user) == (
        "smtps",
        "mail.example.com",
        465,
        "alerts@example.com",
    )
    assert cfg.parse_smtp_url("smtp://relay.example").port == 25
    assert notify_config().notify.receivers == 0


def test_secrets_come_from_the_environment_and_never_show(tmp_path):
    path = tmp_path / "sync.toml"
    path.write_text(
        '[notify]\nwebhook_urls = ["https://hooks.example.com/services/T0/B0/chat-credential"]\n'
        'smtp_url = "smtps://alerts@mail.example.com"\nemail_to = ["ops@example.com"]\n'
        'email_from = "empsync@example.com"\n[fields.name]\n'
    )
    env = {"EMPSYNC_SMTP_PASSWORD": "smtp-pass-81f2", "EMPSYNC_WEBHOOK_SECRET": "hook-secret-77aa"}
    c = cfg.load(str(path), env=env)
    assert c.notify.smtp_password == "smtp-pass-81f2" and c.api.webhook_secret == "hook-secret-77aa"
    assert "smtp-pass-81f2" not in repr(c)
    secrets_of(c)
    line = scrub(f"a smtp-pass-81f2 b hook-secret-77aa c {c.notify.webhook_urls[0]}")
    assert line == "a *** b *** c ***"
    # The receivers are named without the webhook's path or the password.
    n = Notifier(c, receivers=None)
    names = " ".join(r.name for r in n.receivers)
    assert "chat-credential" not in names and "smtp-pass" not in names
    assert "webhook https://hooks.example.com" in names and "mail.example.com:465" in names


# -- when to tell: conditions as plain logic ------------------------------------------------


def failed(error: str = "cannot reach the database", at: datetime = T0) -> SyncFailed:
    return SyncFailed(at, 1, "normal", error)


def finished(kind: str = "normal", at: datetime = T0, dry_run: bool = False) -> SyncFinished:
    return SyncFinished(at, RunResult(status="ok", forced=kind == "force", kind=kind, dry_run=dry_run).report())


def status(state: str, leader: bool, leader_name: str | None = None, detail: str = "") -> StatusChanged:
    return StatusChanged(T0, state, detail, {"is_leader": leader, "leader": leader_name})


GUARD = "mass-delete guard: the run would delete 3 of 4 live rows (75%), more than 0.25; it deleted none"


@settings(max_examples=200, deadline=None)
@given(
    threshold=st.integers(1, 4),
    runs=st.lists(st.sampled_from(["ok", "fail", "guard", "force-ok", "dry-force-ok"]), max_size=40),
)
def test_run_alerts_follow_a_model_of_the_runs(threshold, runs):
    """failing fires once when a streak of failures reaches the threshold, recovers on the next success;
    the guard fires once per trip and clears only with a real force run."""
    c = Conditions(notify_config(failures_before_alert=threshold).notify)
    streak, failing, guard = 0, False, False
    for n, run in enumerate(runs):
        event = {
            "ok": lambda: finished(),
            "fail": lambda: failed(),
            "guard": lambda: failed(GUARD),
            "force-ok": lambda: finished("force"),
            "dry-force-ok": lambda: finished("force", dry_run=True),
        }[run]()
        got = [(x.kind, x.condition) for x in c.observe(event, float(n))]
        expected = []
        if run == "fail":
            streak += 1
            if streak >= threshold and not failing:
                failing = True
                expected.append(("failing", None))
        elif run == "guard":
            if not guard:
                guard = True
                expected.append(("mass_delete_guard", None))
        elif run in ("ok", "force-ok"):
            streak = 0
            if failing:
                failing = False
                expected.append(("recovered", "failing"))
            if run == "force-ok" and guard:
                guard = False
                expected.append(("recovered", "mass_delete_guard"))
        assert got == expected, (n, run, got, expected)
        assert set(c.active) == {k for k, on in (("failing", failing), ("mass_delete_guard", guard)) if on}


def test_a_failing_alert_says_how_many_and_why_and_the_recovery_how_long():
    c = Conditions(notify_config(failures_before_alert=2).notify)
    assert c.observe(SyncFailed(T0, 1, "normal", "Firestore unreachable", "check the network"), 0.0) == []
    [alert] = c.observe(SyncFailed(T0, 2, "normal", "Firestore unreachable", "check the network"), 10.0)
    assert alert.severity == "critical" and alert.title == "Sync failing: 2 runs failed in a row"
    assert "Firestore unreachable" in alert.text and "check the network" in alert.text
    [recovered] = c.observe(finished(), 310.0)
    assert recovered.kind == "recovered" and recovered.severity == "ok" and recovered.condition == "failing"
    assert recovered.title == "Recovered: Sync failing: 2 runs failed in a row" and "5 min" in recovered.text


def test_leadership_lost_regained_and_taken_over():
    c = Conditions(notify_config().notify, identity="me:1")
    assert c.observe(status("error", False, None, "cannot reach the database"), 0) == []  # never led: no loss
    assert c.observe(status("idle", True, "me:1"), 1) == []  # leads from the start: no take-over
    [lost] = c.observe(status("standby", False, "me:1", "lost the lock"), 2)
    assert (lost.kind, lost.title) == ("leadership", "Leadership lost") and "lost the lock" in lost.text
    assert c.observe(status("standby", False, "me:1", "still"), 3) == []  # once
    [back] = c.observe(status("idle", True, "me:1"), 4)
    assert (back.kind, back.condition) == ("recovered", "leadership")
    assert c.observe(status("stopped", False, "me:1"), 5) == []  # stopping on purpose is no loss

    standby = Conditions(notify_config().notify, identity="me:2")
    assert standby.observe(status("standby", False, "other:9", "other:9 leads"), 0) == []
    [took] = standby.observe(status("idle", True, "me:2"), 30)
    assert took.kind == "takeover" and "other:9" in took.text and took.details == {"previous_leader": "other:9"}
    assert standby.observe(status("syncing", True, "me:2"), 31) == []


def test_time_conditions_fire_after_lasting_and_recover():
    c = Conditions(notify_config(lag_alert_seconds=60).notify, listen=True)
    leading = {"is_leader": True, "state": "listening", "listen_state": "listening", "lag_ms": 500}
    assert c.check(leading, 0) == []
    down = {**leading, "state": "reconnecting", "listen_state": "reconnecting", "listen_detail": "stream ended"}
    assert c.check(down, 1) == [] and c.check(down, 60) == []
    [alert] = c.check(down, 61.5)
    assert alert.kind == "listener" and "reconnecting" in alert.text and "stream ended" in alert.text
    assert c.check(down, 200) == []
    [back] = c.check(leading, 201)
    assert (back.kind, back.condition) == ("recovered", "listener")
    # A short outage is no alert: the clock restarts with each one.
    assert c.check(down, 300) == [] and c.check(leading, 330) == [] and c.check(down, 340) == []
    assert c.check(down, 399) == [] and c.check(leading, 401) == []

    [lag] = c.check({**leading, "lag_ms": 95_000}, 500)
    assert lag.kind == "lag" and lag.severity == "warning" and "95" in lag.text
    assert c.check({**leading, "lag_ms": 96_000}, 501) == []
    [ok] = c.check({**leading, "lag_ms": 800}, 502)
    assert ok.condition == "lag"

    # Out of reach: in error without the lock, for as long as lag_alert_seconds.
    unreachable = {"is_leader": False, "state": "error", "detail": "cannot reach the database for the sync lock"}
    assert c.check(unreachable, 600) == []
    [far] = c.check(unreachable, 661)
    assert far.kind == "unreachable" and "sync lock" in far.text
    [near] = c.check({"is_leader": False, "state": "standby"}, 662)
    assert near.condition == "unreachable"


def test_a_guard_seen_in_the_status_is_told_once_per_trip():
    """Listen mode trips the guard without failing a run: the status carries it."""
    c = Conditions(notify_config().notify)
    guard = {"run_id": 7, "deleting": 30, "live_rows": 40, "fraction": 0.25, "at": "2026-01-01T00:00:00Z"}
    assert c.check({"is_leader": False, "mass_delete_guard": guard}, 0) == []  # a standby leaves it to the leader
    [alert] = c.check({"is_leader": True, "mass_delete_guard": guard}, 1)
    assert alert.kind == "mass_delete_guard" and "30 of 40" in alert.text
    assert c.check({"is_leader": True, "mass_delete_guard": guard}, 2) == []
    [cleared] = c.observe(finished("force"), 3)
    assert cleared.condition == "mass_delete_guard"
    assert c.check({"is_leader": True, "mass_delete_guard": guard}, 4) == []  # a stale status: the same trip
    [again] = c.check({"is_leader": True, "mass_delete_guard": {**guard, "at": "2026-01-02T00:00:00Z"}}, 5)
    assert again.kind == "mass_delete_guard"


def rejects(at: float, ids: list[str]) -> BatchApplied:
    return BatchApplied(T0, 1, {}, (), tuple((i, f"field salary: not a number ({i})") for i in ids), tuple(ids))


@settings(max_examples=100, deadline=None)
@given(
    minutes=st.integers(1, 30),
    batches=st.lists(st.tuples(st.floats(0, 600), st.integers(1, 15)), min_size=1, max_size=30),
)
def test_reject_notices_come_at_most_once_per_window_and_count_every_reject(minutes, batches):
    c = Conditions(notify_config(reject_alert_minutes=minutes).notify)
    notices: list[tuple[float, Notice]] = []
    now, total, serial = 0.0, 0, 0
    for gap, count in batches:
        now += gap
        ids = [f"d{serial + i}" for i in range(count)]
        serial += count
        total += count
        assert c.observe(rejects(now, ids), now) == []
        for tick in (now + 1, now + REJECT_SETTLE_S + 0.5):
            notices += [(tick, n) for n in c.check({}, tick)]
    notices += [(now + 10**6, n) for n in c.check({}, now + 10**6)]  # what was still held back
    assert all(n.kind == "rejects" for _, n in notices)
    assert sum(n.details["count"] for _, n in notices) == total
    times = [t for t, _ in notices]
    assert all(b - a >= minutes * 60 for a, b in zip(times, times[1:], strict=False))
    for _, n in notices:
        assert len(n.details["documents"]) <= 10 and ("more" in n.text) == (n.details["count"] > 10)


def test_reject_notices_can_be_turned_off():
    c = Conditions(notify_config(reject_alert_minutes=0).notify)
    c.observe(rejects(0, ["a", "b"]), 0)
    assert c.check({}, 100) == []


@given(times=st.lists(st.floats(0, 10_000), min_size=1, max_size=200))
def test_the_rate_limit_allows_a_burst_then_one_per_period(times):
    rate = RateLimit()
    times = sorted(times)
    allowed = [t for t in times if rate.allow(t)]
    span = times[-1] - times[0]
    assert len(allowed) <= RATE_BURST + span / RATE_EVERY_S + 1e-9
    assert len(allowed) >= min(len(times), RATE_BURST)


# -- delivering: real receivers -------------------------------------------------------------


class Outcomes:
    """What a Notifier recorded and announced."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.events: list[NotificationSent] = []

    def notifier(self, config: cfg.Config, **kw: Any) -> Notifier:
        kw.setdefault("attempts", 3)
        kw.setdefault("retry_base_s", 0.05)
        return Notifier(config, identity="test:1", record=self.records.append, emit=self.events.append, **kw)

    def wait(self, count: int, timeout: float = 30) -> list[NotificationSent]:
        return wait_for(lambda: len(self.events) >= count and list(self.events), timeout, f"{count} outcome(s)")


def a_notice(title: str = "Sync failing: 3 runs failed in a row") -> Notice:
    return Notice("failing", "critical", title, "Last error: <db> & more", utcnow(), details={"n": 3})


def test_a_webhook_gets_the_json_document_and_the_outcome_is_recorded(receiver):
    out = Outcomes()
    notifier = out.notifier(notify_config(webhook_urls=[receiver.url])).start()
    try:
        notifier.dispatch([a_notice()])
        [(headers, body)] = wait_for(lambda: receiver.requests, 20, "the POST")
        [sent] = out.wait(1)
    finally:
        notifier.stop()
    assert headers["Content-Type"] == "application/json" and headers["User-Agent"].startswith("empsync/")
    assert body["source"] == "empsync" and body["kind"] == "failing" and body["severity"] == "critical"
    assert body["title"] == "Sync failing: 3 runs failed in a row" and body["text"] == "Last error: <db> & more"
    assert body["service"] == "test:1" and body["table"] == "employees" and body["details"] == {"n": 3}
    assert body["collection"] == "demo-hr/(default)/employees" and body["at"].endswith("Z")
    assert sent.ok and sent.attempts == 1 and sent.detail == "HTTP 200"
    last = out.records[-1]
    assert last["last"]["ok"] is True and last["counts"] == {"sent": 1, "failed": 0, "dropped": 0}
    assert "secret-path" not in json.dumps(out.records) and "secret-path" not in sent.receiver


def test_slack_format_posts_text_escaped_as_slack_asks(receiver):
    out = Outcomes()
    notifier = out.notifier(notify_config(webhook_urls=[receiver.url], format="slack")).start()
    try:
        notifier.dispatch([a_notice()])
        [body] = receiver.wait_bodies(1)
    finally:
        notifier.stop()
    assert list(body) == ["text"]
    assert "*empsync: Sync failing: 3 runs failed in a row*" in body["text"]
    assert "Last error: &lt;db&gt; &amp; more" in body["text"] and ":red_circle:" in body["text"]


def test_a_failing_receiver_is_retried_until_it_answers():
    receiver = HttpReceiver([500, 503])
    out = Outcomes()
    notifier = out.notifier(notify_config(webhook_urls=[receiver.url])).start()
    try:
        notifier.dispatch([a_notice()])
        [sent] = out.wait(1)
    finally:
        notifier.stop()
        receiver.close()
    assert sent.ok and sent.attempts == 3 and len(receiver.requests) == 3


def test_a_receiver_that_answers_500_or_is_down_is_given_up_and_said_so(caplog):
    failing = HttpReceiver([500] * 10)
    down = f"http://127.0.0.1:{closed_port()}/hook"
    refused = HttpReceiver([404])
    out = Outcomes()
    notifier = out.notifier(notify_config(webhook_urls=[failing.url, down, refused.url])).start()
    caplog.set_level(logging.INFO, "empsync.notify")
    try:
        notifier.dispatch([a_notice()])
        events = out.wait(3)
    finally:
        notifier.stop()
        failing.close()
        refused.close()
    by = {e.receiver: e for e in events}
    port = failing.url.split(":")[2].split("/")[0]
    assert not by[f"webhook http://127.0.0.1:{port}"].ok and by[f"webhook http://127.0.0.1:{port}"].attempts == 3
    assert by[f"webhook http://127.0.0.1:{port}"].detail.startswith("HTTP 500")
    [down_event] = [e for e in events if "cannot connect" in e.detail]
    assert not down_event.ok and down_event.attempts == 3
    [refused_event] = [e for e in events if e.detail.startswith("HTTP 404")]
    assert refused_event.attempts == 1, "a 404 will not pass by asking again"
    assert len(refused.requests) == 1
    assert out.records[-1]["counts"]["failed"] == 3 and out.records[-1]["last_failure"]["ok"] is False
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("failed after" in w for w in warnings) == 3, warnings


def test_a_slow_receiver_times_out_and_delays_no_other_receiver():
    slow, quick = HttpReceiver(["hang"]), HttpReceiver()
    out = Outcomes()
    config = notify_config(webhook_urls=[slow.url, quick.url])
    receivers = [WebhookReceiver(slow.url, timeout=1.0), WebhookReceiver(quick.url, timeout=1.0)]
    notifier = out.notifier(config, receivers=receivers, attempts=1).start()
    try:
        notifier.dispatch([a_notice()])
        quick.wait_bodies(1)
        assert slow.hanging == 1 and not slow.release.is_set(), "the quick one waited for the slow one"
        [timed_out] = [e for e in out.wait(2) if not e.ok]
    finally:
        notifier.stop()
        slow.close()
        quick.close()
    assert timed_out.detail == "no answer within 1 s"


def test_stop_wakes_every_notification_thread_at_once(receiver, monkeypatch):
    """A stopping service is not kept waiting for the threads' next look (they would look in an hour here)."""
    monkeypatch.setattr("core.notify.CHECK_S", 3600.0)
    notifier = Outcomes().notifier(notify_config(webhook_urls=[receiver.url])).start()
    threads = [notifier._thread, *(o.thread for o in notifier.outboxes)]
    notifier.stop(timeout=60)
    assert not any(t.is_alive() for t in threads), "stop() left a notification thread waiting"


def test_a_full_outbox_drops_and_counts_instead_of_growing():
    slow = HttpReceiver(["hang"])
    out = Outcomes()
    notifier = out.notifier(notify_config(webhook_urls=[slow.url]))
    notifier.rate = RateLimit(burst=10_000)
    notifier.start()
    try:
        notifier.dispatch([a_notice("first")])
        wait_for(lambda: slow.hanging == 1, 20, "the first delivery to hang")
        notifier.dispatch([a_notice(f"n{i}") for i in range(OUTBOX_MAX + 4)])
        dropped = [e for e in out.events if e.attempts == 0]
        assert len(dropped) == 4 and all(not e.ok and "dropped" in e.detail for e in dropped)
        assert notifier.outboxes[0].queue.qsize() == OUTBOX_MAX
    finally:
        notifier.stop(0.5)
        slow.close()


def test_the_rate_limit_holds_notices_back_and_says_so_in_the_next(receiver):
    now = [0.0]
    out = Outcomes()
    notifier = out.notifier(notify_config(webhook_urls=[receiver.url]), clock=lambda: now[0]).start()
    try:
        notifier.dispatch([a_notice(f"n{i}") for i in range(RATE_BURST + 2)])
        receiver.wait_bodies(RATE_BURST)
        held = [e for e in out.events if e.attempts == 0]
        assert len(held) == 2 and all("rate limit" in e.detail and e.receiver == "every receiver" for e in held)
        now[0] += RATE_EVERY_S
        notifier.dispatch([a_notice("after")])
        bodies = receiver.wait_bodies(RATE_BURST + 1)
    finally:
        notifier.stop()
    assert bodies[-1]["title"] == "after" and "2 earlier notices were held back" in bodies[-1]["text"]


# -- e-mail: a real SMTP server -----------------------------------------------------------


def email_config(url: str, **kw: Any) -> cfg.Config:
    return notify_config(
        smtp_url=url, email_to=["ops@example.com", "oncall@example.org"], email_from="es@example.com", **kw
    )


def test_email_over_smtp_reaches_every_recipient(tmp_path):
    smtp = SmtpReceiver(tmp_path)
    out = Outcomes()
    notifier = out.notifier(email_config(f"smtp://127.0.0.1:{smtp.port}")).start()
    try:
        notifier.dispatch([a_notice()])
        [message] = smtp.wait_messages(1)
        [sent] = out.wait(1)
    finally:
        notifier.stop()
        smtp.close()
    assert smtp.envelopes == [("es@example.com", ["ops@example.com", "oncall@example.org"])]
    assert message["Subject"] == "[empsync] Sync failing: 3 runs failed in a row"
    assert message["From"] == "es@example.com" and message["To"] == "ops@example.com, oncall@example.org"
    body = message.get_payload(decode=True).decode()
    assert "Last error: <db> & more" in body and "Service: test:1" in body
    assert sent.ok and sent.detail == "accepted" and sent.receiver.startswith("e-mail to ops@example.com")


@pytest.mark.parametrize("implicit", [True, False], ids=["smtps", "starttls"])
def test_email_with_a_login_over_tls(tmp_path, monkeypatch, caplog, implicit):
    smtp = SmtpReceiver(tmp_path, tls=not implicit, implicit=implicit, user="alerts", password="smtp-pass-5c1d")
    monkeypatch.setenv("SSL_CERT_FILE", str(smtp.cert))  # trust the test's own certificate
    scheme = "smtps" if implicit else "smtp"
    config = email_config(f"{scheme}://alerts@127.0.0.1:{smtp.port}")
    good = dataclasses.replace(config, notify=dataclasses.replace(config.notify, smtp_password="smtp-pass-5c1d"))
    wrong = dataclasses.replace(config, notify=dataclasses.replace(config.notify, smtp_password="not-it-0000"))
    caplog.set_level(logging.DEBUG)
    out, bad = Outcomes(), Outcomes()
    notifiers = [out.notifier(good).start(), bad.notifier(wrong).start()]
    try:
        for n in notifiers:
            n.dispatch([a_notice()])
        smtp.wait_messages(1)
        [sent], [refused] = out.wait(1), bad.wait(1)
    finally:
        for n in notifiers:
            n.stop()
        smtp.close()
    assert smtp.logins == ["alerts"] and sent.ok
    assert not refused.ok and refused.attempts == 1 and refused.detail == "login refused (535)"
    assert len(smtp.messages) == 1
    assert "smtp-pass-5c1d" not in caplog.text and "not-it-0000" not in caplog.text


def test_email_never_sends_a_password_in_clear_or_without_one(tmp_path):
    smtp = SmtpReceiver(tmp_path, user="alerts", password="pw-in-clear")  # no TLS offered
    url = f"smtp://alerts@127.0.0.1:{smtp.port}"
    config = email_config(url)
    with_password = dataclasses.replace(config, notify=dataclasses.replace(config.notify, smtp_password="pw-in-clear"))
    out, missing = Outcomes(), Outcomes()
    notifiers = [out.notifier(with_password).start(), missing.notifier(config).start()]
    try:
        for n in notifiers:
            n.dispatch([a_notice()])
        [clear], [none] = out.wait(1), missing.wait(1)
    finally:
        for n in notifiers:
            n.stop()
        smtp.close()
    assert not clear.ok and clear.attempts == 1 and "not sent in clear" in clear.detail
    assert not none.ok and "EMPSYNC_SMTP_PASSWORD" in none.detail
    assert smtp.logins == [] and smtp.messages == []


def test_email_to_a_server_that_is_down_is_retried_then_given_up():
    out = Outcomes()
    notifier = out.notifier(email_config(f"smtp://127.0.0.1:{closed_port()}")).start()
    try:
        notifier.dispatch([a_notice()])
        [given_up] = out.wait(1)
    finally:
        notifier.stop()
    assert not given_up.ok and given_up.attempts == 3 and "cannot connect" in given_up.detail


# -- empsync notify --test ------------------------------------------------------------------


def test_cli_notify_test_reports_each_receiver(tmp_path, receiver):
    smtp = SmtpReceiver(tmp_path)
    down = f"http://127.0.0.1:{closed_port()}/hook"
    path = tmp_path / "sync.toml"
    base = f'[target]\nurl = "sqlite:///{tmp_path / "m.db"}"\n[fields.name]\n'
    try:
        path.write_text(
            f'[notify]\nwebhook_urls = ["{receiver.url}"]\nsmtp_url = "smtp://127.0.0.1:{smtp.port}"\n'
            f'email_to = ["ops@example.com"]\nemail_from = "es@example.com"\n' + base
        )
        done = run_cli("notify", "--test", "--config", str(path))
        assert done.returncode == 0, done.stdout + done.stderr
        assert [line.split()[0] for line in done.stdout.splitlines()] == ["ok", "ok"], done.stdout
        assert receiver.bodies()[0]["kind"] == "test" and smtp.wait_messages(1)[0]["Subject"].endswith(
            "Test notification"
        )

        path.write_text(f'[notify]\nwebhook_urls = ["{receiver.url}", "{down}"]\n' + base)
        done = run_cli("notify", "--test", "--json", "--config", str(path))
        assert done.returncode == 1, done.stdout + done.stderr
        results = json.loads(done.stdout)
        assert [r["ok"] for r in results] == [True, False] and "cannot connect" in results[1]["detail"]
        assert "secret-path" not in done.stdout

        listed = run_cli("notify", "--config", str(path))
        assert listed.returncode == 0 and listed.stdout.count("webhook http://127.0.0.1") == 2

        path.write_text(base)
        done = run_cli("notify", "--test", "--config", str(path))
        assert done.returncode == 2 and "no receivers" in done.stderr and "Traceback" not in done.stderr
    finally:
        smtp.close()


# -- a real service ------------------------------------------------------------------------


def notify_service(make_config, url: str, receiver_url: str, **notify: Any) -> SyncService:
    config = make_config(
        url, sync={"interval": 3600, "force_interval": 3600}, notify={"webhook_urls": [receiver_url], **notify}
    )
    return SyncService(config)


def break_writes(service: SyncService) -> None:
    service.engine.mirror.write = lambda *a, **k: 1 / 0


def mend_writes(service: SyncService) -> None:
    del service.engine.mirror.write


@pytest.mark.integration
def test_a_failing_service_alerts_then_recovers_and_records_it(make_config, sqlite_url, firestore_client, receiver):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(3)})
    service = notify_service(make_config, sqlite_url, receiver.url, failures_before_alert=2)
    events, metrics = Events(service), Metrics()
    service.subscribe(metrics.observe)
    with running(service):
        events.wait_finished(1)
        break_writes(service)
        try:
            for _ in range(2):
                mark = events.mark()
                service.force_sync("test")
                wait_for(lambda m=mark: events.since(m, SyncFailed), 30, "a failed run")
            [alert] = receiver.wait_bodies(1)
        finally:
            mend_writes(service)
        service.force_sync("test")
        bodies = receiver.wait_bodies(2)
        wait_for(lambda: len(events.all(NotificationSent)) >= 2, 20, "both outcomes")
    assert alert["kind"] == "failing" and alert["title"] == "Sync failing: 2 runs failed in a row"
    assert "ZeroDivisionError" in alert["text"] and alert["service"] == service.identity
    assert bodies[1]["kind"] == "recovered" and bodies[1]["condition"] == "failing"
    assert len(bodies) == 2, "one alert and one recovery, nothing repeated"

    stored = json.loads(stored_state(service.config)["notify"])
    assert stored["last"]["title"] == "Recovered: Sync failing: 2 runs failed in a row" and stored["last"]["ok"]
    assert stored["counts"]["sent"] == 2
    from core.cli import open_engine
    from core.status import build_status

    with open_engine(service.config) as engine:
        text = status_text(build_status(engine, count_documents=False))
    assert "'Recovered: Sync failing: 2 runs failed in a row' to webhook http://127.0.0.1" in text
    assert "2 sent, 0 failed, 0 dropped" in text
    rendered = metrics.render().decode()
    assert 'empsync_notifications_total{outcome="sent",receiver="webhook http://127.0.0.1:' in rendered


@pytest.mark.integration
def test_a_hanging_receiver_does_not_slow_a_sync(make_config, sqlite_url, firestore_client):
    """The alert goes to a receiver that never answers; runs go on finishing while it hangs."""
    slow = HttpReceiver(["hang"] * 10)  # every attempt hangs until the test ends
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(3)})
    service = notify_service(make_config, sqlite_url, slow.url, failures_before_alert=1)
    events = Events(service)
    try:
        with running(service):
            events.wait_finished(1)
            break_writes(service)
            try:
                mark = events.mark()
                service.force_sync("test")
                wait_for(lambda: events.since(mark, SyncFailed), 30, "the failed run")
            finally:
                mend_writes(service)
            wait_for(lambda: slow.hanging == 1, 20, "the alert to reach the hanging receiver")
            for n in range(3):
                write_docs(firestore_client, {f"late{n}": employee(100 + n)})
                mark = events.mark()
                service.sync_now("test")
                wait_for(
                    lambda m=mark: any(e.result.counts.inserted for e in events.since(m, SyncFinished)),
                    30,
                    "a run that syncs the new document while the receiver hangs",
                )
                assert slow.hanging >= 1 and not slow.release.is_set()
            assert not [e for e in events.all(NotificationSent) if e.ok], "the hanging receiver answered"
    finally:
        slow.close()


@pytest.mark.integration
def test_the_mass_delete_guard_and_new_rejects_are_told(make_config, sqlite_url, firestore_client, receiver):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(4)})
    config = make_config(
        sqlite_url,
        target={"max_delete_fraction": 0.25},
        sync={"interval": 3600, "force_interval": 3600},
        notify={"webhook_urls": [receiver.url], "reject_alert_minutes": 60},
    )
    service = SyncService(config)
    events = Events(service)
    with running(service):
        events.wait_finished(1)
        for i in range(3):
            firestore_client.collection("employees").document(f"e{i}").delete()
        write_docs(firestore_client, {"bad": employee(9, salary="lots")})
        mark = events.mark()
        service.force_sync("test")
        wait_for(lambda: events.since(mark, SyncFailed), 30, "the guard to stop the run")
        kinds = lambda: [b["kind"] for b in receiver.bodies()]  # noqa: E731
        wait_for(lambda: {"mass_delete_guard", "rejects"} <= set(kinds()), 30, "the guard and reject notices")
        service.force_sync("test", allow_mass_delete=True)
        wait_for(lambda: "recovered" in kinds(), 30, "the guard's recovery")
    bodies = {b["kind"]: b for b in receiver.bodies()}
    assert bodies["mass_delete_guard"]["text"].startswith("mass-delete guard: the run would delete 3 of 4")
    assert bodies["rejects"]["title"] == "1 new rejected document" and "bad: " in bodies["rejects"]["text"]
    assert "salary" in bodies["rejects"]["text"] and bodies["rejects"]["details"]["documents"] == ["bad"]
    assert bodies["recovered"]["condition"] == "mass_delete_guard"
    assert kinds().count("mass_delete_guard") == 1 and kinds().count("rejects") == 1


@pytest.mark.integration
def test_a_standby_that_takes_over_says_so(make_config, sqlite_url, firestore_client, receiver, tmp_path):
    """The leader is another process (``empsync --no-ui``); when it stops, this service takes over and tells."""
    write_docs(firestore_client, {"e1": employee(1)})
    config = make_config(sqlite_url, sync={"interval": 3600}, notify={"webhook_urls": [receiver.url]})
    leader = Headless(write_toml(tmp_path / "sync.toml", config))
    try:
        leader.wait_line("Leading")
        standby = SyncService(config)
        with running(standby):
            wait_for(lambda: standby.snapshot()["state"] == "standby", 20, "this service to stand by")
            leader.signal(signal.SIGTERM)
            assert leader.wait(30) == 0, leader.text()
            wait_leading(standby)
            [took] = receiver.wait_bodies(1)
    finally:
        leader.close()
    previous = f"{socket.gethostname()}:{leader.pid}"
    assert took["kind"] == "takeover" and took["service"] == standby.identity
    assert previous in took["text"] and took["details"] == {"previous_leader": previous}
    assert len(receiver.bodies()) == 1, "stopping on purpose is no lost leadership"


def test_the_probe_notice_says_it_is_a_test():
    n = probe_notice()
    assert n.kind == "test" and n.severity == "info" and "notify --test" in n.text
