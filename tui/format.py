"""Small text helpers for the console: times, durations, counts.

Every time on screen is UTC (the JSON and the database are UTC too), so what
an operator reads matches `empsync status --json` and the logs. Functions take
``now`` explicitly so that a frozen clock gives the same text every time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from core.safe import terminal_safe


def parse_time(value: Any) -> datetime | None:
    """An ISO-8601 string or a datetime as naive UTC; anything else is None."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def absolute(moment: datetime | None, now: datetime | None = None) -> str:
    """Date and time in UTC; just the time when ``now`` is the same day."""
    if moment is None:
        return "—"
    if now is not None and moment.date() == now.date():
        return moment.strftime("%H:%M:%S UTC")
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def clock_time(moment: datetime | None) -> str:
    return "--:--:--" if moment is None else moment.strftime("%H:%M:%S")


def span(seconds: float) -> str:
    """A rough length of time: 12 s, 4 min, 3 h 5 min, 2 d 4 h."""
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min" if minutes >= 10 or not s else f"{minutes} min {s} s"
    hours, m = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {m} min" if m else f"{hours} h"
    days, h = divmod(hours, 24)
    return f"{days} d {h} h" if h else f"{days} d"


def ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    delta = (now - moment).total_seconds()
    if delta < 2:
        return "just now"
    return f"{span(delta)} ago"


def countdown(moment: datetime | None, now: datetime) -> str:
    """A live countdown: in 04:59, in 1:02:03, due now."""
    if moment is None:
        return "—"
    left = int((moment - now).total_seconds() + 0.999)  # whole seconds, rounded up
    if left <= 0:
        return "due now"
    hours, rest = divmod(left, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours >= 48:
        return f"in {span(left)}"
    if hours:
        return f"in {hours}:{minutes:02d}:{seconds:02d}"
    return f"in {minutes:02d}:{seconds:02d}"


def duration_ms(ms: Any) -> str:
    if ms is None:
        return "—"
    ms = int(ms)
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return span(ms / 1000)


def number(value: Any) -> str:
    if value is None:
        return "—"
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return str(value)


def compact(value: Any) -> str:
    """A count in at most six characters: 12,345 · 123.4k · 12.3M."""
    if value is None:
        return "—"
    try:
        n = int(value)
    except (TypeError, ValueError):
        return str(value)
    if abs(n) < 100_000:
        return f"{n:,}"
    if abs(n) < 10_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.1f}M"


def clip(text: Any, width: int) -> str:
    """One terminal-safe line of at most ``width`` characters, ending in … when cut."""
    if text is None:
        return ""
    # Newlines and tabs would break a table row; control characters are shown, never sent raw.
    line = terminal_safe(" ".join(str(text).split()))
    if len(line) <= width:
        return line
    return line[: max(0, width - 1)] + "…"
