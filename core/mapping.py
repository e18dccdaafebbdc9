"""From a Firestore document to a row: validation, coercion and the content hash.

Pure functions only; no I/O. A value either becomes the normal Python form the
database round-trips exactly (naive UTC datetimes, ints, floats, str, bool,
date, canonical JSON text) or raises ``Invalid`` with a reason an operator can
read. Normal forms matter twice: the hash is computed over them, and the diff
compares them with what the database hands back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_ZERO = timedelta(0)
# MySQL's DATETIME and DATE start at year 1000; one rule for every target.
MIN_YEAR = 1000
# ASCII only: Unicode \d takes "٣" (which no one means as a number) and Unicode \s
# takes "\x1f" (which int() then refuses with a ValueError).
_INTEGER_TEXT = re.compile(r"\s*[+-]?\d+\s*", re.ASCII)  # used with fullmatch, as every check
_DATE_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
# More significant digits than any 64-bit integer has.
_INT64_DIGITS = 19


class Invalid(ValueError):
    """A value that breaks its field's rule; the message says how."""


@dataclass(frozen=True)
class FieldSpec:
    """One mapped Firestore field: where it is read from and how it is stored."""

    path: str
    type: str = "string"
    column: str = ""
    required: bool = False
    max_length: int = 255

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.path.split("."))


@dataclass(frozen=True)
class Reject:
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


MISSING = object()


def describe(value: Any) -> str:
    """A short, type-revealing rendering of a value for reject reasons."""
    kind = firestore_kind(value)
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"{kind} {shown!r}"
    if kind in ("integer", "float", "boolean"):
        return f"{kind} {value!r}"
    return kind


def firestore_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (bytes, bytearray)):
        return "bytes"
    if isinstance(value, datetime):
        return "timestamp"
    if isinstance(value, Mapping):
        return "map"
    if isinstance(value, (list, tuple)):
        return "array"
    if hasattr(value, "latitude") and hasattr(value, "longitude"):
        return "geopoint"
    if hasattr(value, "path") and hasattr(value, "id"):
        return "reference"
    return type(value).__name__


def _number_text(value: int | float) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if value.is_integer() and abs(value) < 2**53:
            return str(int(value))
    return repr(value)


def to_text(value: Any, max_length: int | None = None) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float)):
        text = _number_text(value)
    elif isinstance(value, str):
        text = value
    else:
        raise Invalid(f"expected a string, got {describe(value)}")
    if max_length is not None and len(text) > max_length:
        raise Invalid(f"longer than max_length {max_length} ({len(text)} characters)")
    return text


def to_integer(value: Any) -> int:
    if isinstance(value, bool):
        raise Invalid(f"expected an integer, got {describe(value)}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise Invalid(f"expected an integer, got a fraction {_number_text(value)}")
        number = int(value)
    elif isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
        # Check the length first: int() refuses strings of over 4,300 digits with a ValueError.
        if len(value.strip().lstrip("+-").lstrip("0")) > _INT64_DIGITS:
            raise Invalid(f"out of the 64-bit integer range: {describe(value)}")
        number = int(value)
    else:
        raise Invalid(f"expected an integer, got {describe(value)}")
    if not INT64_MIN <= number <= INT64_MAX:
        raise Invalid(f"out of the 64-bit integer range: {describe(value)}")
    return number


def to_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"expected a number, got {describe(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise Invalid(f"expected a finite number, got {_number_text(number)}")
    return number


def to_boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"expected a boolean, got {describe(value)}")
    return value


def to_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise Invalid(f"expected a timestamp or ISO-8601 text, got {describe(value)}") from None
    else:
        raise Invalid(f"expected a timestamp, got {describe(value)}")
    if moment.tzinfo is not None and moment.utcoffset() != _ZERO:
        try:
            moment = moment.astimezone(UTC)
        except OverflowError:  # "0001-01-01T00:00+01:00" is before the first representable moment
            raise Invalid(f"timestamp out of range: {describe(value)}") from None
    # Naive UTC, and not Firestore's nanosecond subclass: the database keeps microseconds.
    m = moment
    moment = datetime(m.year, m.month, m.day, m.hour, m.minute, m.second, m.microsecond)
    if moment.year < MIN_YEAR:
        raise Invalid(f"timestamp {moment.isoformat()} is before the year {MIN_YEAR}")
    return moment


def to_date(value: Any) -> date:
    if isinstance(value, datetime):
        day = (value.astimezone(UTC) if value.tzinfo else value).date()
    elif isinstance(value, str) and _DATE_TEXT.fullmatch(value.strip()):
        try:
            day = date.fromisoformat(value.strip())
        except ValueError:
            raise Invalid(f"not a calendar date: {value.strip()!r}") from None
    else:
        raise Invalid(f"expected a timestamp or YYYY-MM-DD text, got {describe(value)}")
    if day.year < MIN_YEAR:
        raise Invalid(f"date {day.isoformat()} is before the year {MIN_YEAR}")
    return day


def json_ready(value: Any) -> Any:
    """Firestore values as plain JSON values (the ``json`` field type)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    kind = firestore_kind(value)
    if kind == "geopoint":
        return {"latitude": value.latitude, "longitude": value.longitude}
    if kind == "reference":
        return value.path
    return str(value)


def to_json(value: Any) -> str:
    try:
        # The C encoder, calling back only for what JSON lacks (timestamps, bytes, …).
        return json.dumps(value, default=json_ready, allow_nan=False, **_JSON_FORM)
    except (ValueError, TypeError):  # NaN/Infinity, or a map with non-string keys
        return json.dumps(json_ready(value), **_JSON_FORM)


_JSON_FORM: dict[str, Any] = {"sort_keys": True, "ensure_ascii": False, "separators": (",", ":")}


COERCERS: dict[str, Callable[[FieldSpec, Any], Any]] = {
    "string": lambda spec, v: to_text(v, spec.max_length),
    "text": lambda spec, v: to_text(v),
    "integer": lambda spec, v: to_integer(v),
    "float": lambda spec, v: to_float(v),
    "boolean": lambda spec, v: to_boolean(v),
    "datetime": lambda spec, v: to_datetime(v),
    "date": lambda spec, v: to_date(v),
    "json": lambda spec, v: to_json(v),
}


def lookup(data: Mapping[str, Any], parts: tuple[str, ...]) -> Any:
    """The value at a nested field path, or MISSING."""
    value: Any = data
    for part in parts:
        if not isinstance(value, Mapping) or part not in value:
            return MISSING
        value = value[part]
    return value


def map_document(specs: Iterable[FieldSpec], data: Mapping[str, Any]) -> dict[str, Any]:
    """The row for a document's data, column → normal value; raises ``RejectError``."""
    row: dict[str, Any] = {}
    for column, parts, coerce, spec in _plan(tuple(specs)):
        if len(parts) == 1:  # most fields are top-level: skip the walk
            value = data.get(parts[0], MISSING) if isinstance(data, Mapping) else MISSING
        else:
            value = lookup(data, parts)
        if value is MISSING or value is None:
            if spec.required:
                raise RejectError(
                    Reject(spec.path, "required but missing" if value is MISSING else "required but null")
                )
            row[column] = None
            continue
        try:
            row[column] = coerce(spec, value)
        except Invalid as exc:
            raise RejectError(Reject(spec.path, str(exc))) from None
    return row


@lru_cache(maxsize=32)
def _plan(
    specs: tuple[FieldSpec, ...],
) -> tuple[tuple[str, tuple[str, ...], Callable[[FieldSpec, Any], Any], FieldSpec], ...]:
    """What map_document does per field, worked out once per configuration."""
    return tuple((spec.column, spec.parts, COERCERS[spec.type], spec) for spec in specs)


class RejectError(Exception):
    def __init__(self, reject: Reject) -> None:
        super().__init__(str(reject))
        self.reject = reject


def _canonical(value: Any) -> str:
    # Tagged so that 1, 1.0, True and "1" never hash alike.
    if value is None:
        return "n"
    if isinstance(value, bool):
        return "b1" if value else "b0"
    if isinstance(value, int):
        return f"i{value}"
    if isinstance(value, float):
        return f"f{value!r}"
    if isinstance(value, datetime):
        return f"t{value.isoformat()}"
    if isinstance(value, date):
        return f"d{value.isoformat()}"
    return f"s{value}"


def content_hash(row: Mapping[str, Any]) -> str:
    """A 128-bit hash of a row's normal values, independent of column order."""
    chunks: list[bytes] = []
    for column in sorted(row):
        # Length-prefixed, so no value can pass for a separator and the next column.
        name = column.encode()
        value = _canonical(row[column]).encode("utf-8", "surrogatepass")
        chunks.append(b"%d:%b%d:%b" % (len(name), name, len(value), value))
    return hashlib.blake2b(b"".join(chunks), digest_size=16).hexdigest()


def display(value: Any) -> str | None:
    """A value as audit-log text: ISO times, JSON-style booleans, None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, float):
        return _number_text(value)
    return str(value)
