"""Terminal safety: no control character from outside reaches a terminal.

``core.safe`` escapes; these tests check the escaping itself against the
Unicode database, then every text view a value from Firestore can reach: the
one-shot commands' renderers, the text and JSON log lines (tracebacks
included, secrets scrubbed), library tracebacks folded into one line, and the
console's panes. The end-to-end check through a real sync is in
tests/faults/test_hostile_client.py.
"""

from __future__ import annotations

import io
import json
import logging
import re
import unicodedata
import warnings
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import logs
from core.engine import Counts, RunResult
from core.render import changes_text, rejects_text, status_text, sync_summary
from core.safe import json_safe, safe_values, terminal_safe
from core.verify import verify_text

# What a terminal may act on, or what changes how a line reads unseen; ZWNJ and ZWJ are text.
UNSAFE_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}
KEPT = {"\u200c", "\u200d"}
ATTACKS = [
    "\x1b]0;owned\x07\x1b[2J",
    "\x1b[31mred\x1b[0m",
    "\u202eevil\u202c",
    "line\nforged INFO line",
    "carriage\roverwrite",
    "\x9b2J",
    "\x00\x7f\x85\u2028\u2029\ufeff\u2066",
    "\U000e0041tag",
    "\ud800lone",
]


def unsafe_chars(text: str, *, lines: bool = False) -> list[str]:
    allowed = {"\n", "\t"} if lines else set()
    return [c for c in text if unicodedata.category(c) in UNSAFE_CATEGORIES and c not in KEPT | allowed]


# On a shared machine a first example that imports Textual may take long: no per-example deadline.
NO_DEADLINE = settings(deadline=None)

# Text drawn with the dangerous characters over-represented.
HOSTILE = st.text(
    st.one_of(
        st.characters(whitelist_categories=("Cc", "Cf", "Cs", "Zl", "Zp")),
        st.sampled_from(["\x1b", "\x07", "\n", "\r", "\x9b", "\u202e", "[", "]", ";"]),
        st.characters(),
    ),
    max_size=40,
)


def test_every_unsafe_character_of_the_unicode_database_is_escaped():
    missed = [
        f"U+{code:04X}"
        for code in range(0x110000)
        if unicodedata.category(chr(code)) in UNSAFE_CATEGORIES
        and chr(code) not in KEPT
        and terminal_safe(chr(code)) == chr(code)
    ]
    assert missed == [], f"not escaped (Unicode {unicodedata.unidata_version}): {missed[:20]}"


def test_escapes_are_visible_and_ordinary_text_is_untouched():
    assert terminal_safe("\x1b]0;x\x07") == "\\x1b]0;x\\x07"
    assert terminal_safe("a\u202eb") == "a\\u202eb"
    assert terminal_safe("a\nb\tc\rd") == "a\\nb\\tc\\rd"
    assert terminal_safe("tag\U000e0041") == "tag\\U000e0041"
    assert terminal_safe("a\nb\tc\rd", multiline=True) == "a\nb\tc\\rd"
    for text in ("Zoë Łukasz 李 محمد", "👨\u200d👩\u200d👧", "می\u200cخواهم", "C:\\path", ""):
        assert terminal_safe(text) is text


@NO_DEADLINE
@given(HOSTILE)
def test_terminal_safe_leaves_nothing_unsafe_and_is_idempotent(text):
    once = terminal_safe(text)
    assert unsafe_chars(once) == []
    assert terminal_safe(once) == once
    assert unsafe_chars(terminal_safe(text, multiline=True), lines=True) == []


@NO_DEADLINE
@given(
    st.recursive(st.none() | st.integers() | HOSTILE, lambda inner: st.lists(inner) | st.dictionaries(HOSTILE, inner))
)
def test_json_safe_is_exact_and_safe(value):
    encoded = json_safe(json.dumps(value, ensure_ascii=False))
    assert json.loads(encoded) == value
    assert unsafe_chars(encoded) == []
    indented = json_safe(json.dumps(value, ensure_ascii=False, indent=2))  # as the commands print it
    assert json.loads(indented) == value and unsafe_chars(indented, lines=True) == []


@NO_DEADLINE
@given(st.dictionaries(HOSTILE, st.one_of(HOSTILE, st.lists(HOSTILE), st.integers())))
def test_safe_values_reaches_every_string(value):
    assert unsafe_chars(json.dumps(safe_values(value), ensure_ascii=False).replace("\\", "")) == []


# -- the one-shot commands' text ----------------------------------------------------------------

AT = datetime(2026, 1, 2, 3, 4, 5)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(HOSTILE, HOSTILE, HOSTILE, HOSTILE, HOSTILE), min_size=1, max_size=5))
def test_changes_and_rejects_text_show_one_safe_line_per_row(rows):
    changes = [
        {
            "changed_at": AT,
            "operation": "update",
            "document_id": i,
            "name": n,
            "field": f,
            "old_value": o,
            "new_value": v,
        }
        for i, n, f, o, v in rows
    ]
    rejects = [{"rejected_at": AT, "document_id": i, "reason": r} for i, r, *_ in rows]
    for text in (changes_text(changes), rejects_text(rejects)):
        assert unsafe_chars(text, lines=True) == []
        assert len(text.split("\n")) == len(rows), "a value started a line of its own"


@NO_DEADLINE
@given(HOSTILE, HOSTILE, st.lists(HOSTILE, max_size=3))
def test_status_sync_and_verify_text_are_safe(error, doc_id, ids):
    status = {
        "enabled": True, "paused": False, "state": error, "mode": "poll", "interval": 300,
        "interval_source": "file", "force_interval": 3600, "last_sync_at": None, "last_force_sync_at": None,
        "next_sync_at": None, "last_status": "failed", "last_error": error,
        "last_run": {"id": 1, "kind": "normal", "status": "failed", "duration_ms": 1},
        "rows": 1, "soft_deleted": 0, "rejects": 0, "documents": 1, "leader": error,
        "source": {"project": error, "database": "(default)", "collection": "employees", "emulator_host": ""},
        "target": error, "table": "employees",
    }  # fmt: skip
    result = RunResult(
        status="ok", reason=error, dry_run=True, forced=False, counts=Counts(fetched=1, rejected=1, firestore_reads=1),
        duration_ms=1, would_change=[{"operation": "update", "document_id": doc_id, "fields": {i: 1 for i in ids}}],
    )  # fmt: skip
    report = {
        "status": "drift", "documents": 1, "rows": 1, "differences": 1, "rejected": 0, "firestore_reads": 1,
        "missing": {"count": len(ids), "ids": ids}, "extra": {"count": 0, "ids": []},
        "different": {"count": 1, "items": [{"id": doc_id, "fields": ids}]},
    }  # fmt: skip
    for text in (status_text(status), sync_summary(result), verify_text(report, 1)):
        assert unsafe_chars(text, lines=True) == [], text


# -- log lines ------------------------------------------------------------------------------


@pytest.fixture
def secret():
    value = "hunter2-secret-password"
    logs.register_secret(value)
    yield value
    logs._secrets.discard(value)


def log_through(handler: logging.Handler, name: str, level: int, msg: str, *args, exc: BaseException | None = None):
    logger = logging.getLogger(name)
    logger.propagate, logger.handlers, old_level = False, [handler], logger.level
    logger.setLevel(logging.DEBUG)
    try:
        if exc is None:
            logger.log(level, msg, *args)
        else:
            try:
                raise exc
            except BaseException:
                logger.log(level, msg, *args, exc_info=True)
    finally:
        logger.handlers, logger.propagate = [], True
        logger.setLevel(old_level)


def stream_handler(fmt: str, detail: bool = False) -> tuple[logging.Handler, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logs.add_filters(handler, detail)
    handler.setFormatter(logs.JsonFormatter() if fmt == "json" else logs.TextFormatter())
    return handler, out


TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (DEBUG|INFO|WARNING|ERROR|CRITICAL) +")


@NO_DEADLINE
@given(HOSTILE)
def test_text_log_lines_escape_the_message_and_the_traceback(value):
    handler, out = stream_handler("text")
    log_through(handler, "empsync.test", logging.ERROR, "Employee rejected: %s", value, exc=ValueError(value))
    text = out.getvalue()
    assert unsafe_chars(text, lines=True) == []
    first, *rest = text.rstrip("\n").split("\n")
    assert TEXT_LINE.match(first) and first.endswith(terminal_safe(value)), first
    # Only a record starts at column 0: a newline in the exception's text cannot forge one.
    assert rest[0] == "  Traceback (most recent call last):" and all(line.startswith("  ") for line in rest)
    assert "ValueError" in text


def test_secrets_leave_no_trace_in_messages_or_tracebacks(secret, monkeypatch):
    monkeypatch.delenv("EMPSYNC_DEBUG", raising=False)
    for fmt in ("text", "json"):
        handler, out = stream_handler(fmt)
        log_through(handler, "empsync.test", logging.ERROR, "connect %s", f"pw={secret}", exc=RuntimeError(secret))
        log_through(handler, "empsync.test", logging.INFO, "stack", exc=None)
        text = out.getvalue()
        assert secret not in text and "***" in text, text
        assert "Traceback" in text and "RuntimeError: ***" in text


@NO_DEADLINE
@given(HOSTILE)
def test_json_log_lines_are_exact_and_safe(value):
    handler, out = stream_handler("json")
    log_through(handler, "empsync.test", logging.WARNING, "Employee rejected: %s", value, exc=KeyError(value))
    line = out.getvalue()
    assert line.endswith("}\n") and line.count("\n") == 1 and unsafe_chars(line[:-1]) == []
    entry = json.loads(line)
    assert entry["message"] == f"Employee rejected: {value}" and entry["level"] == "warning"
    assert "KeyError" in entry["error"]


class FakeRpcError(Exception):
    """What gRPC raises when a stream breaks: a multi-line str, the reason in code() and details()."""

    def __str__(self) -> str:
        return "<_MultiThreadedRendezvous of RPC that terminated with:\n\tstatus = StatusCode.UNAVAILABLE\n>"

    def code(self):
        return SimpleNamespace(name="UNAVAILABLE")

    def details(self):
        return "Connection reset by peer"


def test_a_library_traceback_is_one_warning_line_with_its_reason(monkeypatch):
    monkeypatch.delenv("EMPSYNC_DEBUG", raising=False)
    message = "%s caught unexpected exception %s and will exit."
    handler, out = stream_handler("text")
    exc = FakeRpcError()
    log_through(
        handler, "google.api_core.bidi", logging.ERROR, message, "Thread-ConsumeBidirectionalStream", exc, exc=exc
    )
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert " WARNING " in lines[0] and "Thread-ConsumeBidirectionalStream caught unexpected exception" in lines[0]
    assert "UNAVAILABLE: Connection reset by peer" in lines[0]
    # Without the exception among the arguments, the reason is added at the end.
    handler, out = stream_handler("json")
    log_through(handler, "grpc._channel", logging.CRITICAL, "stream broke", exc=exc)
    entry = json.loads(out.getvalue())
    assert entry["level"] == "warning" and entry["message"] == "stream broke (UNAVAILABLE: Connection reset by peer)"
    assert "error" not in entry
    # Our own errors keep their level and traceback.
    handler, out = stream_handler("text")
    log_through(handler, "empsync.engine", logging.ERROR, "unexpected error", exc=ValueError("x"))
    assert " ERROR " in out.getvalue() and "Traceback" in out.getvalue()


@pytest.mark.parametrize("how", ["verbose", "EMPSYNC_DEBUG"])
def test_verbose_or_empsync_debug_shows_a_library_traceback_in_full(how, monkeypatch):
    monkeypatch.delenv("EMPSYNC_DEBUG", raising=False)
    if how == "EMPSYNC_DEBUG":
        monkeypatch.setenv("EMPSYNC_DEBUG", "1")
    handler, out = stream_handler("text", detail=how == "verbose")
    log_through(
        handler, "google.api_core.bidi", logging.ERROR, "%s caught %s", "Thread", FakeRpcError(), exc=FakeRpcError()
    )
    text = out.getvalue()
    assert " ERROR " in text and "Traceback" in text and "StatusCode.UNAVAILABLE" in text


# -- the console ------------------------------------------------------------------------------


@NO_DEADLINE
@given(HOSTILE, HOSTILE)
def test_console_log_pane_changes_rejects_and_status_are_safe(message, value):
    from rich.text import Text

    from tui import format as fmt
    from tui.bridge import ConsoleLogHandler
    from tui.panes.changes import Change
    from tui.panes.log import log_text
    from tui.panes.status import rows

    posted = []
    handler = ConsoleLogHandler()
    handler.attach(SimpleNamespace(post=posted.append))
    log_through(handler, "empsync.test", logging.ERROR, "Employee rejected: %s", message, exc=ValueError(value))
    (line,) = posted
    assert unsafe_chars(line.text, lines=True) == []
    assert line.text.split("\n")[0] == f"Employee rejected: {terminal_safe(message)}", "a value forged a line"
    shown = [t.plain for t in log_text(AT, "ERROR", line.text)] + [t.plain for t in log_text(AT, "INFO", value)]
    assert all(unsafe_chars(t) == [] for t in shown)

    change = Change(1, AT, value, "update", value, value, message, value)
    for cell in (fmt.clip(change.document_id, 24), fmt.clip(change.name, 22), fmt.clip(change.describe(), 90)):
        assert unsafe_chars(cell) == []
    snap = {
        "state": "error", "detail": value, "last_error": message, "mode": value, "leader": value,
        "source": {"project": value, "collection": message, "database": value, "emulator_host": value},
        "target": value, "table": message, "last_result": {"status": "failed", "reason": value},
    }  # fmt: skip
    for _label, text in rows(snap, "error", datetime.now(UTC).replace(tzinfo=None)):
        assert isinstance(text, Text) and unsafe_chars(text.plain) == [], text.plain


def test_a_warning_is_a_formatted_log_line_not_raw_stderr():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out = io.StringIO()
    try:
        logs.configure(stream=out)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("a library is unhappy \x1b[2J", UserWarning, stacklevel=1)
    finally:
        logging.captureWarnings(False)
        root.handlers[:] = handlers
        root.setLevel(level)
    (line,) = out.getvalue().splitlines()
    assert TEXT_LINE.match(line) and " WARNING " in line and "UserWarning: a library is unhappy \\x1b[2J" in line
