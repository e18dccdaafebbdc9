"""The Recent changes pane: the latest field-level changes, newest first, bounded.

The pane keeps the last ``MAX_CHANGES`` changes in memory (filled from the
database at start-up, then from the service's batches) and shows them in a
DataTable. Rows are added as diffs: new rows go in, the oldest fall out, and
the order is restored with a sort on a hidden sequence number; a full rebuild
happens only when the filter or the layout changes, or a burst is bigger than
the table.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable

from core.events import ChangeRecord

from .. import format as fmt

MAX_CHANGES = 500
REBUILD_AT = 100  # a flush with more new rows than this rebuilds instead of patching

OPERATIONS = {
    "insert": ("insert", "ins", "green"),
    "update": ("update", "upd", "cyan"),
    "delete": ("delete", "del", "red"),
    "restore": ("restore", "res", "magenta"),
}


@dataclass(frozen=True)
class Change:
    seq: int
    at: datetime | None
    document_id: str
    operation: str
    field: str | None
    old: str | None
    new: str | None
    name: str | None

    @property
    def key(self) -> tuple[Any, ...]:
        """What makes two reports of a change the same change (the database row and the event)."""
        return (self.document_id, self.operation, self.field, self.old, self.new)

    def matches(self, needle: str) -> bool:
        if not needle:
            return True
        folded = needle.casefold()
        return folded in self.document_id.casefold() or folded in (self.name or "").casefold()

    def describe(self) -> str:
        if self.operation == "update" and self.field:
            return f"{self.field}: {_value(self.old)} → {_value(self.new)}"
        return {"insert": "new row", "delete": "row deleted", "restore": "row restored"}.get(
            self.operation, self.operation
        )


def _value(value: str | None) -> str:
    return "NULL" if value is None else value


def records_of(rows: Iterable[dict[str, Any]]) -> list[ChangeRecord]:
    """Audit rows read from the database (another process's changes) as the service's change records."""
    return [
        ChangeRecord(
            row["changed_at"],  # NOT NULL
            str(row.get("document_id")),
            str(row.get("operation")),
            row.get("field"),
            row.get("old_value"),
            row.get("new_value"),
            row.get("name"),
        )
        for row in rows
    ]


class Stamp:
    """The Time cell: shows HH:MM:SS, sorts by arrival so the newest is always on top."""

    __slots__ = ("seq", "label")

    def __init__(self, seq: int, at: datetime | None) -> None:
        self.seq, self.label = seq, fmt.clock_time(at)

    def __str__(self) -> str:
        return self.label

    def __lt__(self, other: Stamp) -> bool:
        return self.seq < other.seq


class ChangesPane(Vertical):
    DEFAULT_CSS = """
    ChangesPane DataTable { height: 1fr; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.border_title = "Recent changes"
        self.buffer: deque[Change] = deque(maxlen=MAX_CHANGES)
        self.needle = ""
        self.extra: list[Change] = []  # older database matches for the current filter
        self.compact = False
        self._seq = itertools.count(1)
        self._low_seq = itertools.count(-1, -1)
        self._shown: deque[int] = deque()  # seqs in the table, oldest first

    def compose(self) -> ComposeResult:
        yield DataTable(id="changes-table", cursor_type="row", zebra_stripes=True)

    @property
    def table(self) -> DataTable:
        return self.query_one("#changes-table", DataTable)

    def on_mount(self) -> None:
        self._columns()
        self._titles()

    # -- what the App calls --------------------------------------------------------

    def add(self, records: Iterable[Any]) -> None:
        """New changes from the service (``core.events.ChangeRecord``), oldest first."""
        # One the start-up read of the history already brought (it raced the event): the same row, so not twice.
        loaded = {(c.at, c.key) for c in self.buffer if c.seq < 0}
        new = [c for c in (self._change(r, next(self._seq)) for r in records) if (c.at, c.key) not in loaded]
        if not new:
            return
        self.buffer.extend(new)
        shown = [c for c in new if c.matches(self.needle)]
        if len(shown) >= REBUILD_AT:
            self.rebuild()
            return
        table = self.table
        keep = self._cursor_key()
        for change in shown:
            table.add_row(*self._cells(change), key=str(change.seq))
            self._shown.append(change.seq)
        while len(self._shown) > MAX_CHANGES:
            table.remove_row(str(self._shown.popleft()))
        if shown:
            table.sort("time", reverse=True)
            self._restore_cursor(keep)
        self._titles()

    def load(self, rows: list[dict[str, Any]], needle: str) -> None:
        """Changes read from the database (newest first): history at start-up, or filter matches."""
        if needle != self.needle:
            return  # a filter that has since changed
        known = {c.key for c in self.buffer}
        if needle:
            known |= {c.key for c in self.extra}
        older = [self._change(r, next(self._low_seq)) for r in records_of(rows)]
        older = [c for c in older if c.key not in known]
        if not older:
            return
        if needle:
            self.extra.extend(older)
        else:
            room = MAX_CHANGES - len(self.buffer)
            self.buffer.extendleft(older[: max(0, room)])  # newest first, so each goes further left
        self.rebuild()

    def set_filter(self, needle: str) -> None:
        needle = needle.strip()
        if needle == self.needle:
            return
        self.needle, self.extra = needle, []
        self.rebuild()

    def set_compact(self, compact: bool) -> None:
        if compact != self.compact:
            self.compact = compact
            self._columns()
            self.rebuild()

    def shown_changes(self) -> list[Change]:
        """What the table shows, newest first."""
        shown = [c for c in self.buffer if c.matches(self.needle)] + self.extra
        return sorted(shown, key=lambda c: c.seq, reverse=True)[:MAX_CHANGES]

    def rebuild(self) -> None:
        table = self.table
        keep = self._cursor_key()
        table.clear()
        self._shown.clear()
        for change in reversed(self.shown_changes()):  # oldest first, then one sort puts the newest on top
            table.add_row(*self._cells(change), key=str(change.seq))
            self._shown.append(change.seq)
        table.sort("time", reverse=True)
        self._restore_cursor(keep)
        self._titles()

    # -- internals -------------------------------------------------------------------

    @staticmethod
    def _change(r: ChangeRecord, seq: int) -> Change:
        return Change(seq, r.at, r.document_id, r.operation, r.field, r.old, r.new, r.name)

    def _columns(self) -> None:
        table = self.table
        table.clear(columns=True)
        narrow = self.compact
        table.add_column("Time", key="time", width=8)
        table.add_column("Op", key="op", width=3 if narrow else 7)
        table.add_column("Document", key="document", width=14 if narrow else 24)
        table.add_column("Name", key="name", width=12 if narrow else 22)
        table.add_column("Change", key="change")

    def _cells(self, change: Change) -> tuple[Any, ...]:
        label, short, style = OPERATIONS.get(change.operation, (change.operation, change.operation[:3], ""))
        narrow = self.compact
        return (
            Stamp(change.seq, change.at),
            Text(short if narrow else label, style=style),
            Text(fmt.clip(change.document_id, 14 if narrow else 24)),
            Text(fmt.clip(change.name, 12 if narrow else 22)),
            Text(fmt.clip(change.describe(), 29 if narrow else 90)),
        )

    def _cursor_key(self) -> str | None:
        """The row under the cursor, when the operator moved it off the top (else follow the newest)."""
        table = self.table
        if table.row_count == 0 or table.cursor_row <= 0:
            return None
        try:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001 - a stale coordinate: just follow the newest
            return None

    def _restore_cursor(self, key: str | None) -> None:
        if key is None:
            return
        try:
            self.table.move_cursor(row=self.table.get_row_index(key), animate=False)
        except Exception:  # noqa: BLE001 - that row has fallen out of the table
            pass

    def _titles(self) -> None:
        count = len(self._shown)
        if self.needle:
            self.border_title = f"Recent changes · filter “{fmt.clip(self.needle, 40)}”"
            self.border_subtitle = f"{count} match{'es' if count != 1 else ''} · / changes, Esc clears"
        else:
            self.border_title = "Recent changes"
            self.border_subtitle = f"{count} · newest first · / filters"
