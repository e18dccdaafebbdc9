"""The seed's HTTP control API, plus /healthz and /metrics.

Every handler only reads the service's snapshot or queues a command, so a
request never waits on a sync. Errors are JSON bodies with the status: 400 bad
request or JSON, 401 no or wrong token (or a bad signature), 403 a foreign Host
or Origin (or a signed request asking for more than a sync), 404 unknown path,
405 wrong method, 408 a body too slow, 413 too large, 415 a POST that is not
JSON, 422 wrong types or range, 429 too many signed requests, 501 a
Transfer-Encoding, 503 every handler busy. A trigger may be signed with
``[api] webhook_secret`` instead of carrying the token (core/webhook.py).

The serving model, built for hostile clients (see the README's Security section):
one thread runs a selector loop that accepts connections and gathers each
request's head; a connection costs no thread while it idles or trickles its
head, and one that has not sent a whole head within ``HEAD_TIMEOUT_S`` is
closed. A complete head goes to a handler thread (at most ``MAX_HANDLERS`` at
once; beyond, 503 and close), a stdlib ``BaseHTTPRequestHandler`` that answers
that one request and hands a kept-alive connection back to the loop. Every
limit of a connection is in the constants below and ``_Connection``. A route
that keeps its connection (a WebSocket upgrade) takes ``self.connection`` and
the bytes already read (``self.rfile.pending()``) in its handler thread, sets
``self.rfile.deadline = None`` and its own socket timeout, and leaves
``close_connection`` true; it holds its handler slot for as long as it runs.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import json
import logging
import re
import selectors
import socket
import threading
import time
from collections import deque
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from .config import INTERVAL_MAX, INTERVAL_MIN, ApiConfig, check_document_ids
from .errors import ConfigError, EmpsyncError
from .metrics import Metrics
from .service import SyncService
from .stream import UPGRADE_REQUIRED, Streams
from .webhook import SignatureError, SignedRequests, is_signed

log = logging.getLogger("empsync.api")

# -- the limits of a connection, all in one place ------------------------------------------
MAX_BODY = 64 * 1024  # bytes of a request body (413 beyond)
MAX_HEAD = 96 * 1024  # bytes gathered before the head goes to the stdlib parser (414/431 beyond its limits)
HEAD_TIMEOUT_S = 5.0  # from the accept, or the previous answer, to the end of the request's head
BODY_TIMEOUT_S = 5.0  # to read the declared body (408 beyond)
WRITE_TIMEOUT_S = 5.0  # to hand an answer to a client that does not read it
MAX_HANDLERS = 16  # requests answered at once, one thread each (503 beyond)
MAX_WAITING = 256  # connections idle or sending their head (the one waiting longest is closed beyond)
ACCEPT_BACKOFF_S = 0.5  # accepting pauses this long when the process is out of file descriptors
MIN_TOKEN_LENGTH = 16

PREFIX = "/api/realtime-sync"
TRIGGER = f"{PREFIX}/trigger"
EVENTS = f"{PREFIX}/events"  # a WebSocket (core/stream.py)
SIGNED_MAY_ASK = {"force", "ids"}
READ = {"GET", "HEAD"}  # HEAD is answered wherever GET is: the same status and headers, no body
ROUTES: dict[str, set[str]] = {
    f"{PREFIX}/status": READ,
    f"{PREFIX}/stats": READ,
    EVENTS: READ,
    f"{PREFIX}/trigger": {"POST"},
    f"{PREFIX}/interval": {"POST"},
    f"{PREFIX}/rollback": {"POST"},
    f"{PREFIX}/runs": READ,
    "/healthz": READ,
    "/metrics": READ,
}
OPEN_ROUTES = {"/healthz"}  # answered without the token: a liveness probe carries none
_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_DIGITS = re.compile(r"[0-9]+")


class ApiError(Exception):
    def __init__(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_api_config(api: ApiConfig) -> None:
    if not is_loopback(api.host) and not api.token:
        raise ConfigError(
            "api.token",
            f"the API listens on {api.host}, beyond this machine, and has no token",
            "set [api] token or EMPSYNC_API_TOKEN, or bind [api] host to 127.0.0.1",
        )
    for key, secret in (("api.token", api.token), ("api.webhook_secret", api.webhook_secret)):
        if secret:
            _check_secret(key, secret)


def _check_secret(key: str, secret: str) -> None:
    hint = "use a random one, e.g. from: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
    if len(secret.strip()) < MIN_TOKEN_LENGTH:
        raise ConfigError(key, f"is shorter than {MIN_TOKEN_LENGTH} characters (or only spaces)", hint)
    if not all("!" <= c <= "~" for c in secret):
        # A client sends it in an HTTP header (or signs with it): spaces at an end are lost, others mangled.
        raise ConfigError(key, "holds spaces, control or non-ASCII characters, which no client can send", hint)


def _interval(body: dict[str, Any], required: bool) -> int | None:
    if "interval" not in body:
        if required:
            raise ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, "interval is required (seconds, an integer)")
        return None
    value = body["interval"]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, "interval must be an integer number of seconds")
    if not INTERVAL_MIN <= value <= INTERVAL_MAX:
        raise ApiError(
            HTTPStatus.UNPROCESSABLE_ENTITY, f"interval must be from {INTERVAL_MIN} to {INTERVAL_MAX} seconds"
        )
    return value


def _listen(api: ApiConfig) -> socket.socket:
    """The listening socket, or a ConfigError naming the key to change."""
    try:
        family, _, _, _, address = socket.getaddrinfo(
            api.host, api.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(
            "api.host",
            f"{api.host!r} does not resolve ({getattr(exc, 'strerror', None) or exc})",
            "set [api] host to an address of this machine, such as 127.0.0.1",
        ) from None
    try:
        return socket.create_server(address, family=family, backlog=128)
    except OSError as exc:
        where = f"{api.host}:{api.port}"
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                "api.port", f"{where} is already in use", "set [api] port to a free port, or stop what listens there"
            ) from None
        if exc.errno == errno.EACCES:
            raise ConfigError("api.port", f"listening on {where} is not permitted", "use a port above 1023") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(
                "api.host", f"{api.host} is not an address of this machine", "use 127.0.0.1, or one of its addresses"
            ) from None
        raise ConfigError("api.host", f"cannot listen on {where} ({exc.strerror or exc})") from None


MAX_IDS = 500  # per request; a longer list is a force run's job


def _ids(body: dict[str, Any]) -> tuple[str, ...] | None:
    if "ids" not in body:
        return None
    ids = body["ids"]
    if not isinstance(ids, list):
        raise ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, "ids must be an array of document ids")
    if len(ids) > MAX_IDS:
        raise ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, f"ids: at most {MAX_IDS} per request, not {len(ids)}")
    try:
        return tuple(check_document_ids("ids", ids))
    except ConfigError as exc:
        raise ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, exc.message.removeprefix("config error: ")) from None


class ControlApi:
    def __init__(self, service: SyncService, api: ApiConfig, metrics: Metrics | None = None) -> None:
        check_api_config(api)
        self.service = service
        self.token = api.token
        self.metrics_public = api.metrics_public
        self.signed = SignedRequests(api.webhook_secret) if api.webhook_secret else None
        self.streams = Streams(service)
        self.metrics = metrics or Metrics()
        self.server = _Server(_listen(api), type("Handler", (_Handler,), {"api": self}))
        host, self.port = self.server.listener.getsockname()[:2]
        self.address: tuple[str, int] = (host, self.port)
        self._bound_ip = ipaddress.ip_address(host.split("%")[0])
        # Names a Host header may carry besides loopback ones and IP literals of the bind.
        self._names = {api.host.lower().rstrip(".")}
        if self._bound_ip.is_unspecified:
            self._names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        service.subscribe(self.metrics.observe)

    def start(self) -> ControlApi:
        self.server.start()
        host, port = self.address
        log.info("Control API on http://%s:%d%s (metrics at /metrics)", host, port, PREFIX)
        return self

    def stop(self) -> None:
        self.streams.stop()
        self.server.stop()

    # -- what the head alone decides (before any body is read) ---------------------------------

    def admit(self, method: str, path: str, headers) -> str:
        """The route a request goes to, or the ApiError that refuses it."""
        host = self.check_host(headers)
        self.check_origin(headers, host)
        if headers.get("Transfer-Encoding") is not None:
            # Bodies here are small JSON with a Content-Length; a transfer coding we do not decode
            # would leave its chunks to be read as the next request (RFC 9112 §6.1: 501).
            raise ApiError(
                HTTPStatus.NOT_IMPLEMENTED,
                "Transfer-Encoding is not supported: send the body with a Content-Length",
                {"Connection": "close"},
            )
        route = path.rstrip("/") or "/"
        allowed = ROUTES.get(route)
        if allowed is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no such endpoint: {path}")
        if method not in allowed:
            raise ApiError(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"{route} accepts {', '.join(sorted(allowed))}",
                {"Allow": ", ".join(sorted(allowed))},
            )
        if route == TRIGGER and is_signed(headers):
            if self.signed is None:
                raise self.unauthorized("signed requests are not accepted: [api] webhook_secret is not set")
            # The signature covers the body: it is checked once the body is read (verify_signed).
        elif route not in OPEN_ROUTES and not (route == "/metrics" and self.metrics_public):
            self.authorize(headers)
        # A web page may POST text/plain anywhere without asking (no CORS preflight); JSON it cannot.
        if method == "POST" and not (headers.get("Content-Type") and headers.get_content_type() == "application/json"):
            raise ApiError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "POST bodies must be JSON: send Content-Type: application/json"
            )
        return route

    def check_host(self, headers) -> tuple[str, int] | None:
        """The Host as (name, port); refused unless it names this server (DNS rebinding)."""
        values = headers.get_all("Host") or []
        if not values:
            return None  # HTTP/1.0 without one: no browser, so no rebinding page, sends that
        try:
            if len(values) > 1:
                raise ValueError("more than one Host")
            parts = urlsplit("//" + values[0].strip())
            name, port = (parts.hostname or "").rstrip("."), parts.port
            if not name or parts.path or parts.query or parts.fragment or parts.username is not None:
                raise ValueError("not host[:port]")
        except ValueError:
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad Host header", {"Connection": "close"}) from None
        if (port is None or port == self.port) and self._is_own_name(name):
            return name, port or 80
        raise ApiError(
            HTTPStatus.FORBIDDEN,
            f"Host {values[0].strip()[:100]!r} is not this server: use 127.0.0.1:{self.port} or localhost:{self.port}",
        )

    def _is_own_name(self, name: str) -> bool:
        if name == "localhost" or name.endswith(".localhost"):
            return True
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            return name in self._names
        # An IP literal cannot be rebound to another server; with a wildcard bind any is ours.
        return ip.is_loopback or ip == self._bound_ip or self._bound_ip.is_unspecified

    def check_origin(self, headers, host: tuple[str, int] | None) -> None:
        """A browser's cross-site request carries a foreign Origin: refused, reads included."""
        origin = headers.get("Origin")
        if origin is None:
            return
        try:
            parts = urlsplit(origin.strip())
            theirs = (parts.scheme, (parts.hostname or "").rstrip("."), parts.port or 80)
        except ValueError:  # a port that is not a number
            theirs = None
        if host is None or theirs != ("http", *host):
            raise ApiError(HTTPStatus.FORBIDDEN, f"cross-origin requests are refused (Origin {origin.strip()[:100]!r})")

    def authorize(self, headers) -> None:
        if not self.token:
            return
        given = headers.get("Authorization", "")
        scheme, _, credential = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(credential.strip().encode(), self.token.encode()):
            raise self.unauthorized("a valid bearer token is required")

    @staticmethod
    def unauthorized(message: str) -> ApiError:
        return ApiError(HTTPStatus.UNAUTHORIZED, message, {"WWW-Authenticate": 'Bearer realm="empsync"'})

    def verify_signed(self, route: str, headers, body: bytes) -> bool:
        """True for a trigger signed with the webhook secret (checked here); False for any other request."""
        if route != TRIGGER or self.signed is None or not is_signed(headers):
            return False
        try:
            self.signed.verify(headers, body)
        except SignatureError as exc:
            if exc.busy:
                raise ApiError(HTTPStatus.TOO_MANY_REQUESTS, exc.reason, {"Retry-After": "10"}) from None
            raise self.unauthorized(f"bad signature: {exc.reason}") from None
        return True

    # -- endpoints -------------------------------------------------------------------------------

    def handle(self, method: str, route: str, body: bytes, signed: bool = False) -> tuple[HTTPStatus, Any, str]:
        payload = self.parse(body) if method == "POST" else {}
        if route == "/metrics":
            self.metrics.update(self.service.snapshot())
            self.metrics.up.set(1 if self.service.alive else 0)
            return HTTPStatus.OK, self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8"
        if route == "/healthz":
            snapshot = self.service.snapshot()
            healthy = self.service.alive
            status = HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE
            return status, {"ok": healthy, "state": snapshot.get("state"), "leader": snapshot.get("is_leader")}, ""
        if route.endswith("/status"):
            return HTTPStatus.OK, self.service.snapshot(), ""
        if route.endswith("/stats"):
            return HTTPStatus.OK, self.service.stats(), ""
        if route.endswith("/runs"):
            return HTTPStatus.OK, self.service.runs(), ""
        if route.endswith("/rollback"):
            return self.rollback(payload)
        if route == TRIGGER:
            return self.trigger(payload, signed)
        interval = _interval(payload, required=True)
        stored = self.service.set_interval(interval)
        return HTTPStatus.OK, {"interval": stored}, ""

    def trigger(self, payload: dict[str, Any], signed: bool) -> tuple[HTTPStatus, Any, str]:
        if signed and (extra := sorted(set(payload) - SIGNED_MAY_ASK)):
            # The secret lets a backend ask for a sync; steering the service takes the token.
            raise ApiError(
                HTTPStatus.FORBIDDEN, f"a signed request may ask only for a sync (force, ids), not {extra[0]}"
            )
        force = payload.get("force", False)
        allow_mass_delete = payload.get("allow_mass_delete", False)
        if not isinstance(force, bool) or not isinstance(allow_mass_delete, bool):
            raise ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, "force and allow_mass_delete must be true or false")
        if allow_mass_delete and not force:
            raise ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, "allow_mass_delete applies to a force run (force: true)")
        ids = _ids(payload)
        if ids is not None and (force or allow_mass_delete):
            raise ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, "ids syncs only those documents: no force with it")
        interval = _interval(payload, required=False)
        if interval is not None:
            self.service.set_interval(interval)
        trigger = "webhook" if signed else "api"
        if ids is not None:
            ticket = self.service.sync_ids(ids, trigger)
        elif force:
            ticket = self.service.force_sync(trigger, allow_mass_delete)
        else:
            ticket = self.service.sync_now(trigger)
        snapshot = self.service.snapshot()
        return (
            HTTPStatus.ACCEPTED,
            {"queued": ticket.to_json(), "interval": snapshot.get("interval"), "state": snapshot.get("state")},
            "",
        )

    def rollback(self, payload: dict[str, Any]) -> tuple[HTTPStatus, Any, str]:
        run = payload.get("run")
        if isinstance(run, bool) or not isinstance(run, int) or run < 1:
            raise ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, "run must be a run id (a positive integer)")
        flags = {name: payload.get(name, False) for name in ("dry_run", "hold", "cascade")}
        if not all(isinstance(v, bool) for v in flags.values()):
            raise ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, "dry_run, hold and cascade must be true or false")
        if flags["dry_run"]:  # only reads: answered now, with what would change
            result = self.service.plan_rollback(run, cascade=flags["cascade"])
            status = HTTPStatus.OK if result.status == "ok" else HTTPStatus.CONFLICT
            return status, result.to_json(), ""
        ticket = self.service.rollback(run, hold=flags["hold"], cascade=flags["cascade"], trigger="api")
        return HTTPStatus.ACCEPTED, {"queued": ticket.to_json(), "state": self.service.snapshot().get("state")}, ""

    @staticmethod
    def parse(body: bytes) -> dict[str, Any]:
        if not body.strip():
            return {}
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"body is not valid JSON: {exc}") from None
        except RecursionError:
            raise ApiError(HTTPStatus.BAD_REQUEST, "body is not valid JSON here: nested too deeply") from None
        except ValueError:  # int() refuses more than 4,300 digits
            raise ApiError(
                HTTPStatus.BAD_REQUEST, "body is not valid JSON here: a number with too many digits"
            ) from None
        if not isinstance(payload, dict):
            raise ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, "body must be a JSON object")
        return payload


# -- serving ---------------------------------------------------------------------------------


class _Connection:
    """A client's socket, the bytes read from it and not yet parsed, and its current deadline."""

    __slots__ = ("sock", "peer", "buf", "scanned", "deadline")

    def __init__(self, sock: socket.socket, peer: Any) -> None:
        self.sock, self.peer = sock, peer
        self.buf = bytearray()
        self.scanned = 0  # where the search for the end of the head resumes
        self.deadline = time.monotonic() + HEAD_TIMEOUT_S

    def head_complete(self) -> bool:
        start = max(0, self.scanned - 3)
        self.scanned = len(self.buf)
        return self.buf.find(b"\r\n\r\n", start) >= 0 or self.buf.find(b"\n\n", start) >= 0

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class _Reader:
    """The handler's rfile: the connection's buffered bytes, then its socket, never past ``deadline``."""

    def __init__(self, conn: _Connection) -> None:
        self.conn = conn
        self.deadline: float | None = conn.deadline

    def _fill(self) -> bool:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the client was too slow")
            self.conn.sock.settimeout(left)
        chunk = self.conn.sock.recv(65536)
        self.conn.buf += chunk
        return bool(chunk)

    def _take(self, n: int) -> bytes:
        out = bytes(self.conn.buf[:n])
        del self.conn.buf[:n]
        return out

    def readline(self, limit: int = -1) -> bytes:
        buf = self.conn.buf
        while True:
            end = buf.find(b"\n")
            if end >= 0 and (limit < 0 or end < limit):
                return self._take(end + 1)
            if 0 <= limit <= len(buf) or not self._fill():
                return self._take(len(buf) if limit < 0 else min(limit, len(buf)))

    def read(self, n: int) -> bytes:
        while len(self.conn.buf) < n and self._fill():
            pass
        return self._take(n)

    def pending(self) -> bytes:
        """Bytes read from the socket and not yet consumed (for a handler that takes the socket over)."""
        return self._take(len(self.conn.buf))


class _Writer:
    """The handler's wfile: whole writes, each within ``WRITE_TIMEOUT_S``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def write(self, data: bytes) -> int:
        self.sock.settimeout(WRITE_TIMEOUT_S)
        self.sock.sendall(data)
        return len(data)

    def flush(self) -> None:
        pass


class _Server:
    """The selector loop: accepts, gathers heads, hands complete requests to bounded handler threads."""

    def __init__(self, listener: socket.socket, handler: type[_Handler]) -> None:
        self.listener, self.handler = listener, handler
        listener.setblocking(False)
        self.slots = threading.BoundedSemaphore(MAX_HANDLERS)
        self._selector = selectors.DefaultSelector()
        self._waiting: dict[_Connection, None] = {}  # oldest deadline first
        self._returned: deque[_Connection] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = False
        self._accept_paused_until: float | None = None
        self._descriptors_warned = 0.0
        self._thread = threading.Thread(target=self._loop, name="empsync-api", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake()
        if self._thread.is_alive():
            self._thread.join(5)
        else:
            self._close_all()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # already pending (the buffer is full), or closing
            pass

    # -- the loop thread ------------------------------------------------------------------------

    def _loop(self) -> None:
        self._selector.register(self.listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._stopping:
                for key, _ in self._selector.select(self._next_timeout()):
                    if key.fileobj is self.listener:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        self._take_returned()
                    else:
                        self._read(key.data)
                self._expire()
        except Exception:  # noqa: BLE001 - the API is gone, the service syncs on: say so once
            log.exception("the control API stopped")
        finally:
            self._close_all()

    def _next_timeout(self) -> float | None:
        now = time.monotonic()
        times = [next(iter(self._waiting)).deadline] if self._waiting else []
        if self._accept_paused_until is not None:
            times.append(self._accept_paused_until)
        return max(0.0, min(times) - now) if times else None

    def _expire(self) -> None:
        now = time.monotonic()
        if self._accept_paused_until is not None and now >= self._accept_paused_until:
            self._accept_paused_until = None
            self._selector.register(self.listener, selectors.EVENT_READ)
        while self._waiting:
            conn = next(iter(self._waiting))
            if conn.deadline > now:
                break
            log.debug("closed a connection from %s: no request within %.0f s", conn.peer, HEAD_TIMEOUT_S)
            self._drop(conn)

    def _accept(self) -> None:
        for _ in range(64):  # the backlog a burst left, in bounded rounds so the loop stays fair
            try:
                sock, peer = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_DESCRIPTORS:
                    self._out_of_descriptors(exc)
                return  # ECONNABORTED and the like: that client is gone already
            sock.setblocking(False)
            conn = _Connection(sock, peer)
            self._wait(conn)
            if len(self._waiting) > MAX_WAITING:
                self._drop(next(iter(self._waiting)))

    def _out_of_descriptors(self, exc: OSError) -> None:
        """No spinning at the descriptor limit: free the longest-waiting connection, pause accepting."""
        now = time.monotonic()
        if now - self._descriptors_warned > 60:
            self._descriptors_warned = now
            log.warning(
                "Control API: out of file descriptors (%s); closing idle connections, pausing new ones",
                errno.errorcode.get(exc.errno or 0, exc),
            )
        if self._waiting:
            self._drop(next(iter(self._waiting)))
        self._selector.unregister(self.listener)
        self._accept_paused_until = now + ACCEPT_BACKOFF_S

    def _wait(self, conn: _Connection) -> None:
        """Watch a connection for (the rest of) its request's head."""
        self._waiting[conn] = None
        self._selector.register(conn.sock, selectors.EVENT_READ, conn)
        if conn.buf and conn.head_complete():  # pipelined: the next request is here already
            self._dispatch(conn)

    def _drop(self, conn: _Connection) -> None:
        self._forget(conn)
        conn.close()

    def _forget(self, conn: _Connection) -> None:
        self._waiting.pop(conn, None)
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass

    def _read(self, conn: _Connection) -> None:
        try:
            chunk = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            self._drop(conn)
            return
        if not chunk and not conn.buf:  # closed between requests: the usual end of a kept-alive one
            self._drop(conn)
            return
        conn.buf += chunk
        # A whole head, more than any head may be, or the client's end of sending: the parser decides.
        if not chunk or len(conn.buf) > MAX_HEAD or conn.head_complete():
            self._dispatch(conn)

    def _dispatch(self, conn: _Connection) -> None:
        self._forget(conn)
        if not self.slots.acquire(blocking=False):
            log.debug("refused a request from %s: all %d handlers busy", conn.peer, MAX_HANDLERS)
            _refuse_busy(conn)
            return
        conn.sock.setblocking(True)
        try:
            threading.Thread(
                target=self._serve, args=(conn, self.slots), name="empsync-api-request", daemon=True
            ).start()
        except RuntimeError:  # no thread to be had
            self.slots.release()
            _refuse_busy(conn)

    def _take_returned(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        while self._returned:
            conn = self._returned.popleft()
            if self._stopping:
                conn.close()
            else:
                conn.sock.setblocking(False)
                conn.deadline, conn.scanned = time.monotonic() + HEAD_TIMEOUT_S, 0
                self._wait(conn)

    def _close_all(self) -> None:
        for conn in list(self._waiting):
            self._drop(conn)
        while self._returned:
            self._returned.popleft().close()
        for sock in (self.listener, self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()

    # -- a handler thread -----------------------------------------------------------------------

    def _serve(self, conn: _Connection, slot: threading.BoundedSemaphore) -> None:
        keep = False
        try:
            keep = not self.handler(conn, conn.peer, self).close_connection
        except OSError as exc:  # reset, broken pipe, timed out writing: the client left
            log.debug("client %s went away: %s", conn.peer, exc)
        except Exception:  # noqa: BLE001 - a bug: logged, and the server goes on
            log.exception("API handler failed")
        finally:
            slot.release()
        if keep and not self._stopping:
            self._returned.append(conn)
            self._wake()
        else:
            conn.close()


def _refuse_busy(conn: _Connection) -> None:
    body = json.dumps({"error": "the API is busy; try again", "status": 503}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
        f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    try:
        conn.sock.setblocking(False)
        conn.sock.send(head.encode() + body)
    except OSError:
        pass
    conn.close()


class _Handler(BaseHTTPRequestHandler):
    """One request on a connection the loop has gathered a head for."""

    api: ControlApi
    server_version = "empsync"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    rfile: _Reader  # type: ignore[assignment]

    def setup(self) -> None:
        conn: _Connection = self.request
        self.connection = conn.sock
        self.rfile = _Reader(conn)
        self.wfile = _Writer(conn.sock)  # type: ignore[assignment]
        self._body_unread = False

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()

    def finish(self) -> None:
        pass  # the server keeps or closes the connection

    def _serve(self) -> None:
        try:
            lengths = self.headers.get_all("Content-Length") or []
            self._body_unread = "Transfer-Encoding" in self.headers or any(v.strip() != "0" for v in lengths)
            route = self.api.admit(self.command, self.path.split("?", 1)[0], self.headers)
            if route == EVENTS:
                if self._body_unread:
                    raise ApiError(HTTPStatus.BAD_REQUEST, "an event stream request has no body")
                if self.command == "HEAD":  # what a GET that asks for no upgrade is told
                    raise ApiError(*UPGRADE_REQUIRED)
                refusal = self.api.streams.serve(self)  # until the stream ends, unless it is refused
                if refusal is not None:
                    raise ApiError(*refusal)
                return
            body = self._read_body(self._content_length(lengths))
            signed = self.api.verify_signed(route, self.headers, body)
            status, payload, content_type = self.api.handle(self.command, route, body, signed)
            self._send(status, payload, content_type)
        except ApiError as exc:
            self._send(exc.status, {"error": exc.message, "status": int(exc.status)}, "", exc.headers)
        except EmpsyncError as exc:
            self._send(HTTPStatus.UNPROCESSABLE_ENTITY, {"error": exc.message, "status": 422}, "")
        except OSError:
            raise  # the client went away: the server says so at debug level
        except Exception:  # noqa: BLE001 - a bug: logged, answered, never kills the server
            log.exception("API handler failed")
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error", "status": 500}, "")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve  # noqa: N815

    @staticmethod
    def _content_length(values: list[str]) -> int:
        texts = {v.strip() for v in values}
        if not texts:
            return 0
        text = texts.pop() if len(texts) == 1 else ""
        if not _DIGITS.fullmatch(text):
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad Content-Length: not one whole number of bytes")
        if len(text.lstrip("0")) > len(str(MAX_BODY)) or int(text) > MAX_BODY:  # never int() of 5,000 digits
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body larger than {MAX_BODY} bytes")
        return int(text)

    def _read_body(self, length: int) -> bytes:
        if not length:
            return b""
        self.rfile.deadline = time.monotonic() + BODY_TIMEOUT_S
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            raise ApiError(
                HTTPStatus.REQUEST_TIMEOUT, f"the body did not arrive within {BODY_TIMEOUT_S:.0f} s"
            ) from None
        if len(body) < length:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"the body ended after {len(body)} of {length} bytes")
        self._body_unread = False
        return body

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's protocol errors (414, 431, 501, 505...) as JSON, like every other answer."""
        self.log_error("code %d, message %s", code, message)
        phrase = message or self.responses.get(code, ("error",))[0]
        self._send(HTTPStatus(code), {"error": phrase, "status": code}, "", {"Connection": "close"})

    def _send(self, status: HTTPStatus, payload: Any, content_type: str, headers: dict[str, str] | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload, default=str).encode()
        headers = dict(headers or {})
        if self._body_unread:  # unread, the body would be taken for the next request on this connection
            headers["Connection"] = "close"
        self.send_response(status)
        self.send_header("Content-Type", content_type or "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        log.debug("%s %s", self.address_string(), format % args)
