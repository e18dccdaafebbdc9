"""Untrusted text made safe for a terminal: control and invisible format characters shown escaped.

Document ids and values, reasons that quote them, request lines and library
messages may hold ``\\x1b]0;…\\x07`` (retitle the window), ``\\x1b[2J`` (clear
the screen), a bidi override (``\\u202e``, which reorders what follows) or a
line separator that forges a new log line. ``terminal_safe`` turns each such
character into a visible escape, so it is shown, never executed; everything
else, accents and emoji included, passes through unchanged. JSON stays exact:
``json_safe`` uses JSON's own ``\\uXXXX`` escapes, which decode to the same text.
"""

from __future__ import annotations

import re
from typing import Any

# Characters a terminal may act on or that change how a line reads without being seen:
# C0 and C1 controls and DEL (Cc), lone surrogates (Cs), line and paragraph separators
# (Zl, Zp) and the format characters (Cf: bidi embeddings, overrides and isolates, zero
# width spaces, the BOM, tags...). ZWNJ and ZWJ (U+200C, U+200D) are kept: Persian and
# Indic names and emoji sequences need them, and they reorder nothing.
_C0 = "\x00-\x1f"
_C0_BUT_LINES = "\x00-\x08\x0b-\x1f"  # newline and tab kept: a traceback is several indented lines
_OTHERS = (
    "\x7f-\x9f\xad"
    "\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"
    "\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f"
    "\ud800-\udfff\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
)
_UNSAFE = re.compile(f"[{_C0}{_OTHERS}]")
_UNSAFE_BUT_LINES = re.compile(f"[{_C0_BUT_LINES}{_OTHERS}]")
# What json.dumps leaves raw: it escapes C0 in strings, and C0 outside them is its indentation.
_JSON_UNSAFE = re.compile(f"[{_OTHERS}]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def terminal_safe(text: str, *, multiline: bool = False) -> str:
    """``text`` with every unsafe character escaped; with ``multiline`` newlines and tabs stay.

    Single-line contexts (a table cell, a log message, an id) escape newlines
    too, so a value can never start a line of its own.
    """
    pattern = _UNSAFE_BUT_LINES if multiline else _UNSAFE
    if pattern.search(text) is None:  # the usual case: no copy, no callback
        return text
    return pattern.sub(_escape, text)


def _json_escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON spells a character beyond the BMP as its UTF-16 surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_safe(encoded: str) -> str:
    """JSON text (from ``json.dumps``) with the unsafe characters left in its strings escaped.

    ``json.dumps(..., ensure_ascii=False)`` escapes C0 controls but not DEL, C1
    controls or bidi overrides; outside strings JSON is ASCII, so every match is
    inside one and the escape decodes to the very same character.
    """
    if _JSON_UNSAFE.search(encoded) is None:
        return encoded
    return _JSON_UNSAFE.sub(_json_escape, encoded)


def safe_values(value: Any) -> Any:
    """A copy of ``value`` (dicts, lists and tuples, nested) with every string terminal-safe.

    For views that show many fields of an untrusted record (a status, a row):
    each string is escaped on the way in, so no field can be forgotten.
    """
    if isinstance(value, str):
        return terminal_safe(value)
    if isinstance(value, dict):
        return {safe_values(k): safe_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(safe_values(v) for v in value)
    return value
