"""Time, as empsync keeps it: naive UTC everywhere inside, ISO text with a ``Z`` outside.

Every timestamp column stores naive UTC, every event carries it, and the
JSON contracts print it as ``2026-01-31T12:00:00Z``. Local time appears in
one place only: the ``schedule`` library's job times (core/timetable.py).
The console's display helpers (tui/format.py) read these forms back.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


def utcnow() -> datetime:
    """Now, in naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


@overload
def naive_utc(moment: datetime) -> datetime: ...
@overload
def naive_utc(moment: None) -> None: ...
def naive_utc(moment: datetime | None) -> datetime | None:
    """Any datetime as a plain naive-UTC one (a naive one is taken as UTC already)."""
    if moment is None:
        return None
    if moment.tzinfo is not None:
        offset = moment.utcoffset()
        if offset:
            moment = moment - offset
    # A plain datetime, also from the client's DatetimeWithNanoseconds; field by field is 3x faster than timetuple().
    return datetime(
        moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second, moment.microsecond
    )


def from_timestamp(seconds: float) -> datetime:
    """A Unix time (a log record's ``created``) in naive UTC."""
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)


@overload
def iso(moment: datetime) -> str: ...
@overload
def iso(moment: datetime | None) -> str | None: ...
def iso(moment: datetime | None) -> str | None:
    """ISO text to the second, in UTC with a ``Z``: the form of every time in the JSON contracts."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def iso_precise(moment: datetime, timespec: str = "microseconds") -> str:
    """ISO text in UTC with a ``Z``, to the microsecond (``timespec="milliseconds"``: to the millisecond)."""
    return naive_utc(moment).isoformat(timespec=timespec) + "Z"


def parse_iso(text: str | None) -> datetime | None:
    """Naive UTC from ISO text; None for none, and for text that is not a time (a hand-edited state row)."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
