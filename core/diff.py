"""What a new version of a document does to its stored row.

Pure: given the stored row (or none) and the freshly mapped one, decide between
insert, update, restore, unchanged and stale (the ordering guard), and list the
fields that changed with their old and new values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, NamedTuple


class Op(str, Enum):
    INSERT = "insert"
    UPDATE = "update"
    RESTORE = "restore"
    DELETE = "delete"
    UNCHANGED = "unchanged"
    STALE = "stale"  # older than what is stored: the ordering guard keeps the row

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Stored:
    """The parts of a stored row the diff needs."""

    values: Mapping[str, Any]
    content_hash: str | None
    update_time: datetime | None
    deleted_at: datetime | None = None

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None


class FieldChange(NamedTuple):
    # A NamedTuple, not a dataclass: a first sync builds one per field per document.
    column: str
    old: Any
    new: Any


@dataclass(frozen=True, slots=True)
class Decision:
    op: Op
    field_changes: tuple[FieldChange, ...] = ()
    # For an insert the new row itself: its "changes" (every field, from nothing)
    # are only spelled out when asked, as a first sync would build millions.
    inserted: Mapping[str, Any] | None = None
    # The document is the version the row was written from, yet the row differs:
    # it was changed behind empsync's back, and this write puts it right.
    repaired: bool = False

    @property
    def changes(self) -> tuple[FieldChange, ...]:
        if self.inserted is not None:
            return tuple(FieldChange(c, None, v) for c, v in self.inserted.items())
        return self.field_changes

    @property
    def writes(self) -> bool:
        return self.op in (Op.INSERT, Op.UPDATE, Op.RESTORE)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(c.column for c in self.changes)


UNCHANGED = Decision(Op.UNCHANGED)


def decide(
    stored: Stored | None,
    new: Mapping[str, Any],
    new_hash: str,
    update_time: datetime | None,
    *,
    verify: bool = False,
) -> Decision:
    """What to do with a new version. ``verify`` compares the values even when the hashes agree.

    A row's stored hash says which version it was written from, not what it
    holds now: an UPDATE by hand leaves the hash alone. Only a comparison of
    the values finds that, so a force run verifies; other runs trust the hash.
    """
    if stored is None:
        return Decision(Op.INSERT, inserted=new)
    if stored.update_time is not None and update_time is not None and update_time < stored.update_time:
        return Decision(Op.STALE)
    same_version = stored.content_hash == new_hash
    if not stored.deleted and same_version and not verify:
        return UNCHANGED  # the hash covers every mapped value: no need to compare them
    changes = tuple(
        FieldChange(column, stored.values.get(column), value)
        for column, value in new.items()
        if not same(stored.values.get(column), value)
    )
    if stored.deleted:
        # Soft-deleted while the document still holds the version the row was written from: by hand.
        written_from = stored.update_time is not None and stored.update_time == update_time
        return Decision(Op.RESTORE, changes, repaired=written_from)
    if same_version:
        return Decision(Op.UPDATE, changes, repaired=True) if changes else UNCHANGED
    # A differing hash with no differing column (a new hash scheme, or a row
    # written by hand) still needs its hash rewritten, and only that.
    return Decision(Op.UPDATE, changes)


def same(old: object, new: object) -> bool:
    """Equality as the database sees it: bool and int are different types here."""
    if type(old) is bool or type(new) is bool:
        return type(old) is type(new) and old == new
    return old == new
