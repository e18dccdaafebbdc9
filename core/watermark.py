"""Resume points of incremental reads, and what they are valid for.

A watermark says "every change before here is in the table". That holds only
for the table, mapping and source it was made with: after ``[target] table``
or a mapped field changes, rows the watermark vouches for are missing or lack
a column. So a watermark carries a fingerprint of that scope, and one made for
another scope reads as no watermark at all: the next run is a full read.

Resume margins: a Firestore server timestamp can be taken before its write
commits (seconds, on the emulator under load), so a write committed after a
read can carry a timestamp below that read's time. Resume points are put a
margin before the newest time seen. The margin is twice the largest such lag
measured (by the listener, and by polls that see a new version older than the
previous read), never below ``[source] watermark_margin_ms``, never above
``MAX_MARGIN``; the measured lag is kept in the state, so every process and
every run uses what any of them has seen.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .config import Config
from .errors import EmpsyncError

# The resume margin never exceeds this, whatever lag an odd timestamp suggests.
MAX_MARGIN = timedelta(seconds=60)


class CorruptState(EmpsyncError):
    """A value in empsync_state that cannot be read back."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(
            f"the stored {key} (empsync_state key {key!r}) cannot be read: {detail}",
            "run `empsync sync --force`: a force run needs no watermark and writes a new one",
        )
        self.key = key


def scope_of(config: Config) -> str:
    """A fingerprint of what rows a watermark vouches for: source, table, mapping and conditions.

    Without conditions it is what it was before conditions existed, so an
    upgrade keeps its watermark.
    """
    s, t = config.source, config.target
    described: dict[str, Any] = {
        "source": [s.project, s.database, s.collection, s.updated_field],
        "table": [t.table, t.id_column],
        "fields": [[f.path, f.type, f.column, f.required, f.max_length] for f in config.fields],
    }
    if s.where:
        described["where"] = [c.describe() for c in s.where]
    text = json.dumps(described, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


@dataclass(frozen=True)
class Watermark:
    """Resume point of incremental reads: after (updated value, document id).

    ``doc_id`` None means "everything at or after ``ts``". ``read_at`` is when
    the read that made it saw the collection: a later run that finds a new
    version older than that has measured a commit lag.
    """

    ts: datetime
    doc_id: str | None = None
    read_at: datetime | None = None

    def dumps(self, scope: str) -> str:
        return json.dumps(
            {"ts": rfc3339(self.ts), "id": self.doc_id, "read_at": rfc3339(self.read_at), "scope": scope},
            ensure_ascii=False,
        )

    @classmethod
    def loads(cls, text: str | None, scope: str) -> Watermark | None:
        """The stored watermark if it was made for ``scope``; raises ``CorruptState`` if unreadable."""
        if not text:
            return None
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
            if raw.get("scope") != scope:
                return None  # made for another table, mapping or source
            doc_id = raw.get("id")
            if doc_id is not None and not isinstance(doc_id, str):
                raise ValueError("id is not a string")
            return cls(parse_rfc3339(raw["ts"]), doc_id, parse_rfc3339(raw["read_at"]) if raw.get("read_at") else None)
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptState("watermark", f"{type(exc).__name__}: {exc}") from None


def rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if hasattr(moment, "rfc3339"):  # the client's DatetimeWithNanoseconds keeps its nanoseconds
        text: str = moment.rfc3339()
        return text
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(text: Any) -> datetime:
    if not isinstance(text, str):
        raise ValueError(f"not a timestamp: {text!r}")
    from google.api_core.datetime_helpers import DatetimeWithNanoseconds

    moment: datetime = DatetimeWithNanoseconds.from_rfc3339(text)
    return moment


def margin(config: Config, lag: timedelta) -> timedelta:
    """How far before the newest time seen a resume point goes, given the largest lag measured."""
    floor = timedelta(milliseconds=config.source.watermark_margin_ms)
    return min(MAX_MARGIN, max(floor, 2 * lag))


def stored_lag(values: dict[str, str | None], key: str) -> timedelta:
    """The largest commit lag any process has measured (a bad value counts as none)."""
    try:
        return timedelta(milliseconds=max(0, int(values.get(key) or 0)))
    except ValueError:
        return timedelta(0)
