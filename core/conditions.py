"""Conditional sync: ``[[source.where]]``, and whether a document meets it, as Firestore would say.

Only documents that meet every condition are mirrored. Firestore applies the
conditions where that saves reads (a force run's query, a listener's): a
document outside them is never billed there. Incremental runs read every
changed document instead and ask ``matches`` here, because a query with the
conditions would never return the document that just stopped meeting them,
and that one must leave the table.

``matches`` follows Firestore's rules for filters: values compare only
within their kind (numbers with numbers, whatever int or float; strings
with strings, in code-point order, which is UTF-8 byte order; timestamps
with timestamps); ``!=`` and ``not-in`` need the field to exist and not be
null; ``in`` and ``not-in`` compare like ``==``. ``tests/test_conditions.py``
holds it to the emulator's own answers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .mapping import MISSING, lookup

if TYPE_CHECKING:
    from google.cloud.firestore_v1.base_query import FieldFilter

OPS = ("==", "!=", "<", "<=", ">", ">=", "in", "not-in", "array-contains")
RANGE_OPS = ("<", "<=", ">", ">=")
INEQUALITY_OPS = (*RANGE_OPS, "!=", "not-in")
MAX_LIST = 30  # Firestore's limit of values for in and not-in
CONDITION_KEYS = ("field", "op", "value")


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: Any  # a list's values as a tuple, so conditions hash and compare

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.field.split("."))

    def describe(self) -> list[Any]:
        """A plain form for fingerprints and messages."""
        shown = [_plain(v) for v in self.value] if isinstance(self.value, tuple) else _plain(self.value)
        return [self.field, self.op, shown]

    def server_value(self) -> Any:
        return list(self.value) if isinstance(self.value, tuple) else self.value

    @property
    def server_op(self) -> str:
        """The operator as the Python client spells it (``array_contains``)."""
        return self.op.replace("array-contains", "array_contains")

    def field_filter(self) -> FieldFilter:
        from google.cloud.firestore_v1.base_query import FieldFilter

        return FieldFilter(self.field, self.server_op, self.server_value())


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def load_conditions(raw: Any, field_path_problem: Callable[[str], str | None]) -> tuple[Condition, ...]:
    """``[[source.where]]`` from TOML; ``ConfigError`` naming ``source.where[N].key`` otherwise."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("source.where", "must be an array of tables, like [[source.where]]")
    conditions = []
    for n, table in enumerate(raw, 1):
        key = f"source.where[{n}]"
        if not isinstance(table, dict):
            raise ConfigError(key, "must be a table with field, op and value")
        for name in table:
            if name not in CONDITION_KEYS:
                raise ConfigError(f"{key}.{name}", "unknown key", "known keys: field, op, value")
        for name in CONDITION_KEYS:
            if name not in table:
                raise ConfigError(f"{key}.{name}", "is missing")
        field, op, value = table["field"], table["op"], table["value"]
        if not isinstance(field, str) or (problem := field_path_problem(field)):
            raise ConfigError(f"{key}.field", f"not a field path: {problem or 'must be a string'}")
        if op not in OPS:
            raise ConfigError(f"{key}.op", f"unknown operator {op!r}", f"operators: {' '.join(OPS)}")
        conditions.append(Condition(field, op, _condition_value(f"{key}.value", op, value)))
    _check_combination(conditions)
    return tuple(conditions)


def _condition_value(key: str, op: str, value: Any) -> Any:
    if op in ("in", "not-in"):
        if not isinstance(value, list) or not value:
            raise ConfigError(key, f'{op} needs a non-empty array of values, like ["active", "on_leave"]')
        if len(value) > MAX_LIST:
            raise ConfigError(key, f"{op} takes at most {MAX_LIST} values (Firestore's limit), not {len(value)}")
        return tuple(_scalar(key, v) for v in value)
    if isinstance(value, list):
        raise ConfigError(key, f"{op} compares with one value, not an array (in and not-in take arrays)")
    return _scalar(key, value)


def _scalar(key: str, value: Any) -> Any:
    if isinstance(value, dict):
        raise ConfigError(key, "a condition compares with a string, number, boolean or timestamp, not a table")
    if isinstance(value, list):
        raise ConfigError(key, "an array inside an array is not a condition value")
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)  # a TOML local date-time: UTC
    if isinstance(value, date):
        raise ConfigError(key, "Firestore has no date type: write a timestamp (2024-01-31T00:00:00Z) or a string")
    if isinstance(value, float) and math.isnan(value):
        raise ConfigError(key, "NaN matches nothing in a condition")
    return value


def _check_combination(conditions: Sequence[Condition]) -> None:
    """Firestore's own refusals, said now rather than by the first query."""
    ops = [c.op for c in conditions]
    where = {c.op: n for n, c in enumerate(conditions, 1)}
    if ops.count("not-in") > 1:
        raise ConfigError(f"source.where[{where['not-in']}].op", "Firestore allows one not-in condition per query")
    if "not-in" in ops and ("!=" in ops or "in" in ops):
        raise ConfigError(
            f"source.where[{where['not-in']}].op", "Firestore does not combine not-in with != or in in one query"
        )
    if ops.count("array-contains") > 1:
        raise ConfigError(
            f"source.where[{where['array-contains']}].op", "Firestore allows one array-contains condition per query"
        )


# -- evaluation ---------------------------------------------------------------------------------

_NULL, _BOOL, _NUMBER, _TIMESTAMP, _STRING, _BYTES, _OTHER = range(7)


def _kind(value: Any) -> int:
    if value is None:
        return _NULL
    if isinstance(value, bool):
        return _BOOL
    if isinstance(value, (int, float)):
        return _NUMBER
    if isinstance(value, datetime):
        return _TIMESTAMP
    if isinstance(value, str):
        return _STRING
    if isinstance(value, (bytes, bytearray)):
        return _BYTES
    return _OTHER


def _equal(a: object, b: object) -> bool:
    kind = _kind(a)
    if kind != _kind(b):
        return False
    if kind == _NUMBER and (_isnan(a) or _isnan(b)):
        return _isnan(a) and _isnan(b)
    if kind == _OTHER:
        return _other_equal(a, b)
    return a == b


def _other_equal(a: object, b: object) -> bool:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _compare(op: str, a: Any, b: Any) -> bool:
    """A range filter: ``a op b`` when both are of one comparable kind."""
    kind = _kind(a)
    if kind != _kind(b) or kind in (_NULL, _OTHER):
        return False
    if kind == _NUMBER and (_isnan(a) or _isnan(b)):
        return False
    # Both of one kind (numbers, times, text, bytes), whose comparisons give a bool.
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def meets(condition: Condition, data: Mapping[str, Any]) -> bool:
    value = lookup(data, condition.parts)
    op, wanted = condition.op, condition.value
    if value is MISSING:
        return False
    if op == "==":
        return _equal(value, wanted)
    if op == "!=":
        return value is not None and not _equal(value, wanted)
    if op in RANGE_OPS:
        return _compare(op, value, wanted)
    if op == "in":
        return any(_equal(value, w) for w in wanted)
    if op == "not-in":
        return value is not None and not any(_equal(value, w) for w in wanted)
    return isinstance(value, list) and any(_equal(v, wanted) for v in value)  # array-contains


def matches(conditions: Iterable[Condition], data: Mapping[str, Any]) -> bool:
    """Whether a document's data meets every condition (no conditions: every document does)."""
    return all(meets(c, data) for c in conditions)
