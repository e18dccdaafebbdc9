"""Signed trigger requests: a backend holding ``[api] webhook_secret`` asks for a sync without the token.

The sender puts two headers on ``POST /api/realtime-sync/trigger``:

    X-Empsync-Timestamp: 1767225600                  (Unix seconds, when it signed)
    X-Empsync-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>." + the raw body, keyed by the secret>

A timestamp more than ``WINDOW_S`` from this server's clock is refused, and
so is a signature already used within the window: a captured request cannot
be sent again, later or at once. The README shows a sender (a Cloud Function).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from email.message import Message

TIMESTAMP_HEADER = "X-Empsync-Timestamp"
SIGNATURE_HEADER = "X-Empsync-Signature"
WINDOW_S = 300  # a signed request is good this long either side of its timestamp
MAX_REMEMBERED = 50_000  # signatures kept against replays (each at most WINDOW_S * 2)
_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class SignatureError(Exception):
    """Why a signed request is refused; ``busy``: the replay memory is full (try later)."""

    def __init__(self, reason: str, busy: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.busy = reason, busy


def signature(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers that sign ``body`` (what a sender does; the tests and the README use it)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: "sha256=" + signature(secret, stamp, body)}


def is_signed(headers: Mapping[str, str] | Message) -> bool:
    return headers.get(SIGNATURE_HEADER) is not None or headers.get(TIMESTAMP_HEADER) is not None


class SignedRequests:
    """Checks signed requests; remembers the good ones' signatures until they would be too old anyway."""

    def __init__(self, secret: str, clock: Callable[[], float] = time.time) -> None:
        self.secret, self.clock = secret, clock
        self._seen: OrderedDict[str, float] = OrderedDict()  # signature -> when it stops mattering
        self._lock = threading.Lock()

    def verify(self, headers: Mapping[str, str] | Message, body: bytes) -> None:
        """Raise ``SignatureError`` naming what is wrong; return for a good, fresh, unused signature."""
        stamp = (headers.get(TIMESTAMP_HEADER) or "").strip()
        given = (headers.get(SIGNATURE_HEADER) or "").strip()
        if not stamp:
            raise SignatureError(f"{TIMESTAMP_HEADER} is missing")
        if not given:
            raise SignatureError(f"{SIGNATURE_HEADER} is missing")
        if not _TIMESTAMP.fullmatch(stamp):
            raise SignatureError(f"{TIMESTAMP_HEADER} must be Unix seconds")
        match = _SIGNATURE.fullmatch(given)
        if match is None:
            raise SignatureError(f"{SIGNATURE_HEADER} must be sha256=<64 hex digits>")
        if not hmac.compare_digest(match.group(1).lower(), signature(self.secret, stamp, body)):
            raise SignatureError("the signature does not match (another secret, or the body changed on the way)")
        now, sent = self.clock(), int(stamp)
        if abs(now - sent) > WINDOW_S:
            raise SignatureError(
                f"the timestamp is {abs(now - sent):.0f} s {'old' if sent < now else 'ahead'}, outside the "
                f"{WINDOW_S} s window (a replay, or the sender's clock is off)"
            )
        key = match.group(1).lower()
        with self._lock:
            while self._seen and next(iter(self._seen.values())) < now:
                self._seen.popitem(last=False)
            if key in self._seen:
                raise SignatureError("this signed request was already used (a replay)")
            if len(self._seen) >= MAX_REMEMBERED:
                self._forget_expired(now)
                if len(self._seen) >= MAX_REMEMBERED:
                    raise SignatureError(f"more than {MAX_REMEMBERED:,} signed requests in {WINDOW_S} s", busy=True)
            self._seen[key] = sent + WINDOW_S

    def _forget_expired(self, now: float) -> None:
        for key in [k for k, until in self._seen.items() if until < now]:
            del self._seen[key]
