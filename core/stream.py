"""The live event stream: ``GET /api/realtime-sync/events`` upgraded to a WebSocket, one JSON message per event.

The API's server has parsed the request head and checked Host, Origin and the
token, as for every GET. The websockets library's sans-I/O ``ServerProtocol``
takes it from there: it checks the handshake and does all the framing; this
module only moves bytes between it and the socket, on the handler thread that
took the request, with non-blocking sends.

Nothing here can slow a sync: the service's subscriber (the worker thread)
only puts the event on the client's bounded queue and wakes its thread. A
client that falls ``MAX_QUEUED`` events behind (it reads too slowly, so the
bytes framed for it pile up) is told so with close code 1008 and dropped;
one that does not even take the close frame is cut off after
``CLOSE_TIMEOUT_S``. Streams are bounded apart from the API's other requests
(``MAX_STREAMS``), and a silent client is found by its unanswered pings.
"""

from __future__ import annotations

import json
import logging
import queue
import selectors
import socket
import threading
import time
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.frames import CloseCode
from websockets.protocol import State
from websockets.server import ServerProtocol

from . import __version__
from .events import (
    BatchApplied,
    Event,
    NotificationSent,
    StatusChanged,
    SyncFailed,
    SyncFinished,
    SyncStarted,
)
from .safe import json_safe
from .times import iso

log = logging.getLogger("empsync.api.events")
_protocol_log = logging.getLogger("empsync.api.websocket")
_protocol_log.setLevel(logging.WARNING)  # the library's "connection open" lines: ours say more

MAX_STREAMS = 8  # at once; each holds one of the API's handler threads
MAX_QUEUED = 256  # events waiting for one client
OUT_HIGH_WATER = 256 * 1024  # bytes framed and not yet sent: no more events are framed for the client beyond
SEND_BUFFER = 64 * 1024  # the socket's own buffer, so a client that does not read costs little memory
PING_EVERY_S = 20.0  # after this long without a word from the client
PING_TIMEOUT_S = 20.0  # to answer a ping
CLOSE_TIMEOUT_S = 5.0  # for the closing handshake
MAX_CLIENT_MESSAGE = 4096  # the client has nothing to say but pongs and close
# Why a request did not become a stream: the status, the reason and headers for the JSON answer.
Refusal = tuple[HTTPStatus, str, dict[str, str]]
# What a request that cannot be a handshake (a HEAD) is told: what a GET asking for no upgrade is.
UPGRADE_REQUIRED: Refusal = (
    HTTPStatus.UPGRADE_REQUIRED,
    "this endpoint is a WebSocket; connect with a WebSocket client",
    {"Upgrade": "websocket"},
)
STATUS_KEYS = ("state", "detail", "is_leader", "leader", "paused", "interval", "next_sync_at", "last_sync_at")


class Streams:
    """The open event streams of one API: at most ``MAX_STREAMS``, and all closed when it stops."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.slots = threading.BoundedSemaphore(MAX_STREAMS)
        self.stopping = threading.Event()
        self._open: set[_Stream] = set()
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._open)

    def serve(self, handler: Any) -> Refusal | None:
        """Take the handler's connection over; returns the refusal to answer instead, if any."""
        if self.stopping.is_set():
            return HTTPStatus.SERVICE_UNAVAILABLE, "the API is stopping", {}
        if not self.slots.acquire(blocking=False):
            busy = f"at most {MAX_STREAMS} event streams at once; try again later"
            return HTTPStatus.SERVICE_UNAVAILABLE, busy, {"Retry-After": "5"}
        try:
            protocol = _handshake(handler)
            if not isinstance(protocol, ServerProtocol):
                return protocol
            query = parse_qs(urlsplit(handler.path).query)
            changes = (query.get("changes") or ["0"])[-1].lower() in ("1", "true", "yes")
            stream = _Stream(self, handler, protocol, changes)
            with self._lock:
                self._open.add(stream)
            try:
                stream.run()
            finally:
                with self._lock:
                    self._open.discard(stream)
            return None
        finally:
            self.slots.release()

    def stop(self) -> None:
        self.stopping.set()
        with self._lock:
            streams = list(self._open)
        for stream in streams:
            stream.wake()


def _handshake(handler: Any) -> ServerProtocol | Refusal:
    """Hand the request, as it came, to the library, which checks it is a WebSocket handshake."""
    head = handler.requestline + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in handler.headers.items()) + "\r\n"
    protocol = ServerProtocol(max_size=MAX_CLIENT_MESSAGE, logger=_protocol_log)
    try:
        protocol.receive_data(head.encode("iso-8859-1"))
    except UnicodeEncodeError:
        return HTTPStatus.BAD_REQUEST, "the request head is not Latin-1", {}
    requests = protocol.events_received()
    if not requests:
        return HTTPStatus.BAD_REQUEST, f"not a WebSocket handshake ({protocol.handshake_exc})", {}
    response = protocol.accept(requests[0])
    if response.status_code != 101:
        said = (response.body or b"").decode("utf-8", "replace").strip().splitlines() or [response.reason_phrase]
        reason = f"{said[0].rstrip('.')}: this endpoint is a WebSocket; connect with a WebSocket client"
        kept = {k: v for k, v in response.headers.raw_items() if k.lower() in ("upgrade", "sec-websocket-version")}
        return HTTPStatus(response.status_code), reason, kept
    protocol.send_response(response)
    return protocol


class _Stream:
    """One client: its queue, its socket, and the loop between them (on the handler's thread)."""

    def __init__(self, streams: Streams, handler: Any, protocol: ServerProtocol, changes: bool) -> None:
        self.streams, self.protocol, self.changes = streams, protocol, changes
        self.peer = handler.client_address[0] if handler.client_address else "?"
        self.sock: socket.socket = handler.connection
        handler.rfile.deadline = None  # a stream is long-lived: the request's read deadline no longer applies
        self.early = handler.rfile.pending()  # bytes the client sent right after its handshake
        self.queue: queue.Queue[Event] = queue.Queue(maxsize=MAX_QUEUED)
        self.overflowed = False
        self.out = bytearray()
        self.eof = False  # the protocol asked for the end of the stream (after the closing handshake)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    # -- the worker thread's side: hand on, never wait ------------------------------------

    def offer(self, event: Event) -> None:
        if not isinstance(event, RELAYED):
            return
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            self.overflowed = True
        self.wake()

    def wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # a wake is pending already (the pair's buffer is full), or the stream ended
            pass

    # -- the handler thread's side ------------------------------------------------------------

    def run(self) -> None:
        service = self.streams.service
        unsubscribe = service.subscribe(self.offer)
        log.info("Event stream opened for %s%s", self.peer, " (with field changes)" if self.changes else "")
        why = "closed"
        try:
            self.sock.setblocking(False)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            if self.early:
                self.protocol.receive_data(self.early)
            self._send(
                {"type": "hello", "version": __version__, "changes": self.changes, **_status(service.snapshot())}
            )
            why = self._loop()
        except OSError as exc:
            why = f"connection lost ({exc.strerror or exc})"
        finally:
            unsubscribe()
            for sock in (self._wake_r, self._wake_w):
                sock.close()
            log.info("Event stream for %s ended: %s", self.peer, why)

    def _loop(self) -> str:
        selector = selectors.DefaultSelector()
        selector.register(self.sock, selectors.EVENT_READ)
        selector.register(self._wake_r, selectors.EVENT_READ)
        heard = time.monotonic()
        ping_sent: float | None = None
        close_by: float | None = None
        why = "closed by the client"
        try:
            while True:
                now = time.monotonic()
                if self.protocol.state is State.OPEN:
                    if self.overflowed:
                        why = f"dropped: too slow, more than {MAX_QUEUED} events waiting"
                        log.warning("Event stream for %s %s", self.peer, why)
                        self.protocol.send_close(
                            CloseCode.POLICY_VIOLATION, f"too slow: more than {MAX_QUEUED} events waiting"
                        )
                    elif self.streams.stopping.is_set():
                        why = "the API stopped"
                        self.protocol.send_close(CloseCode.GOING_AWAY, "the service is stopping")
                    elif ping_sent is not None and now - ping_sent > PING_TIMEOUT_S:
                        why = "the client stopped answering pings"
                        self.protocol.send_close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                    elif ping_sent is None and now - heard > PING_EVERY_S:
                        self.protocol.send_ping(b"empsync")
                        ping_sent = now
                    else:
                        self._frame_waiting_events()
                if close_by is None and self.protocol.close_expected():
                    close_by = now + CLOSE_TIMEOUT_S
                self._collect()
                if not self.out and (self.eof or self.protocol.state is State.CLOSED):
                    return why
                if close_by is not None and now >= close_by:
                    return why + " (the closing handshake timed out)"
                selector.modify(self.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if self.out else 0))
                deadlines = [close_by] if close_by is not None else []
                deadlines.append((ping_sent + PING_TIMEOUT_S) if ping_sent is not None else heard + PING_EVERY_S)
                for key, mask in selector.select(max(0.0, min(deadlines) - now)):
                    if key.fileobj is self._wake_r:
                        self._drain_wakes()
                        continue
                    if mask & selectors.EVENT_READ and self._receive():
                        heard, ping_sent = time.monotonic(), None
                    if mask & selectors.EVENT_WRITE and self.out:
                        self._flush()
        finally:
            selector.close()

    def _frame_waiting_events(self) -> None:
        while len(self.out) < OUT_HIGH_WATER:
            try:
                event = self.queue.get_nowait()
            except queue.Empty:
                return
            for message in messages(event, self.changes):
                self._send(message)

    def _send(self, message: dict[str, Any]) -> None:
        text = json_safe(json.dumps(message, default=str, ensure_ascii=False))
        self.protocol.send_text(text.encode())
        self._collect()

    def _collect(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.out += data
            else:
                self.eof = True  # sent once self.out is

    def _flush(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except BlockingIOError:
            return
        del self.out[:sent]
        if not self.out and self.eof:
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _receive(self) -> bool:
        """Take what the client sent; True if it said anything."""
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        self.protocol.events_received()  # pongs and the close: the protocol answers them itself
        self._collect()
        return bool(data)

    def _drain_wakes(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass


# -- what the client receives ---------------------------------------------------------------

RELAYED = (SyncStarted, BatchApplied, SyncFinished, SyncFailed, StatusChanged, NotificationSent)


def _status(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {key: snapshot.get(key) for key in STATUS_KEYS}


def messages(event: Event, changes: bool = False) -> list[dict[str, Any]]:
    """The JSON messages for one event, in the order they happened (documented in the README)."""
    at = iso(event.at)
    if isinstance(event, SyncStarted):
        return [{"type": "run_started", "at": at, "run_id": event.run_id, "kind": event.kind,
                 "trigger": event.trigger, "dry_run": event.dry_run}]  # fmt: skip
    if isinstance(event, BatchApplied):
        out: list[dict[str, Any]] = []
        if changes:
            out += [
                {"type": "change", "at": iso(c.at), "run_id": event.run_id, "document": c.document_id,
                 "operation": c.operation, "field": c.field, "old": c.old, "new": c.new, "name": c.name}
                for c in event.changes
            ]  # fmt: skip
        new = set(event.new_rejects)
        out += [
            {"type": "reject", "at": at, "run_id": event.run_id, "document": doc_id, "reason": reason,
             "new": doc_id in new}
            for doc_id, reason in event.rejects
        ]  # fmt: skip
        out.append({"type": "run_progress", "at": at, "run_id": event.run_id, "counts": dict(event.counts)})
        return out
    if isinstance(event, SyncFinished):
        r = event.result
        return [{"type": "run_finished", "at": at, "run_id": r.run_id, "kind": r.kind, "trigger": r.trigger,
                 "status": r.status, "forced": r.forced, "dry_run": r.dry_run, **r.counts.as_dict(),
                 "duration_ms": r.duration_ms, "started_at": iso(r.started_at)}]  # fmt: skip
    if isinstance(event, SyncFailed):
        return [{"type": "run_failed", "at": at, "run_id": event.run_id, "kind": event.kind,
                 "error": event.error, "hint": event.hint or None}]  # fmt: skip
    if isinstance(event, StatusChanged):
        return [
            {"type": "status", "at": at, **_status({**event.snapshot, "state": event.state, "detail": event.detail})}
        ]
    if isinstance(event, NotificationSent):
        return [{"type": "notification", "at": at, "kind": event.kind, "title": event.title,
                 "receiver": event.receiver, "ok": event.ok, "attempts": event.attempts, "detail": event.detail}]  # fmt: skip
    return []
