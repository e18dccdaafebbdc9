"""The seed's HTTP control API, plus /healthz and /metrics.

A small stdlib server on its own thread: every handler only reads the
service's snapshot or queues a command, so a request never waits on a sync.
Errors are JSON bodies with the status: 400 bad JSON, 401 no or wrong token,
404 unknown path, 405 wrong method, 413 too large, 422 wrong types or range.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .config import INTERVAL_MAX, INTERVAL_MIN, ApiConfig
from .errors import ConfigError, EmpsyncError
from .metrics import Metrics
from .service import SyncService

log = logging.getLogger("empsync.api")

MAX_BODY = 64 * 1024
PREFIX = "/api/realtime-sync"
ROUTES: dict[str, set[str]] = {
    f"{PREFIX}/status": {"GET"},
    f"{PREFIX}/stats": {"GET"},
    f"{PREFIX}/trigger": {"POST"},
    f"{PREFIX}/interval": {"POST"},
    "/healthz": {"GET"},
    "/metrics": {"GET"},
}


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


class ControlApi:
    def __init__(self, service: SyncService, api: ApiConfig, metrics: Metrics | None = None) -> None:
        check_api_config(api)
        self.service = service
        self.token = api.token
        self.metrics = metrics or Metrics()
        service.subscribe(self.metrics.observe)
        handler = type("Handler", (_Handler,), {"api": self})
        self.server = ThreadingHTTPServer((api.host, api.port), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="empsync-api", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def start(self) -> ControlApi:
        self.thread.start()
        host, port = self.address
        log.info("Control API on http://%s:%d%s (metrics at /metrics)", host, port, PREFIX)
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- endpoints -------------------------------------------------------------

    def handle(self, method: str, path: str, headers, body: bytes) -> tuple[HTTPStatus, Any, str]:
        allowed = ROUTES.get(path.rstrip("/") or "/")
        if allowed is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no such endpoint: {path}")
        path = path.rstrip("/")
        if method not in allowed:
            raise ApiError(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"{path} accepts {', '.join(sorted(allowed))}",
                {"Allow": ", ".join(sorted(allowed))},
            )
        if method == "POST":
            self.authorize(headers)
            payload = self.parse(body, headers)
        if path == "/metrics":
            self.metrics.update(self.service.snapshot())
            self.metrics.up.set(1 if self.service.alive else 0)
            return HTTPStatus.OK, self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8"
        if path == "/healthz":
            snapshot = self.service.snapshot()
            healthy = self.service.alive
            status = HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE
            return status, {"ok": healthy, "state": snapshot.get("state"), "leader": snapshot.get("is_leader")}, ""
        if path.endswith("/status"):
            return HTTPStatus.OK, self.service.snapshot(), ""
        if path.endswith("/stats"):
            return HTTPStatus.OK, self.service.stats(), ""
        if path.endswith("/trigger"):
            force = payload.get("force", False)
            allow_mass_delete = payload.get("allow_mass_delete", False)
            if not isinstance(force, bool) or not isinstance(allow_mass_delete, bool):
                raise ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, "force and allow_mass_delete must be true or false")
            if allow_mass_delete and not force:
                raise ApiError(
                    HTTPStatus.UNPROCESSABLE_ENTITY, "allow_mass_delete applies to a force run (force: true)"
                )
            interval = _interval(payload, required=False)
            if interval is not None:
                self.service.set_interval(interval)
            ticket = self.service.force_sync("api", allow_mass_delete) if force else self.service.sync_now("api")
            snapshot = self.service.snapshot()
            return (
                HTTPStatus.ACCEPTED,
                {"queued": ticket.to_json(), "interval": snapshot.get("interval"), "state": snapshot.get("state")},
                "",
            )
        interval = _interval(payload, required=True)
        stored = self.service.set_interval(interval)
        return HTTPStatus.OK, {"interval": stored}, ""

    def authorize(self, headers) -> None:
        if not self.token:
            return
        given = headers.get("Authorization", "")
        scheme, _, credential = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(credential.strip().encode(), self.token.encode()):
            raise ApiError(
                HTTPStatus.UNAUTHORIZED,
                "a valid bearer token is required",
                {"WWW-Authenticate": 'Bearer realm="empsync"'},
            )

    @staticmethod
    def parse(body: bytes, headers) -> dict[str, Any]:
        if not body.strip():
            return {}
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"body is not valid JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, "body must be a JSON object")
        return payload


class _Handler(BaseHTTPRequestHandler):
    api: ControlApi
    server_version = "empsync"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length < 0:
                raise ValueError(length)
            if length > MAX_BODY:
                # Unread, the body would be taken for the next request on this connection.
                raise ApiError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body larger than {MAX_BODY} bytes", {"Connection": "close"}
                )
            body = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0]
            status, payload, content_type = self.api.handle(self.command, path, self.headers, body)
            self._send(status, payload, content_type)
        except ApiError as exc:
            self._send(exc.status, {"error": exc.message, "status": int(exc.status)}, "", exc.headers)
        except ValueError:
            self._send(
                HTTPStatus.BAD_REQUEST, {"error": "bad Content-Length", "status": 400}, "", {"Connection": "close"}
            )
        except EmpsyncError as exc:
            self._send(HTTPStatus.UNPROCESSABLE_ENTITY, {"error": exc.message, "status": 422}, "")
        except Exception:  # noqa: BLE001 - a bug: logged, answered, never kills the server
            log.exception("API handler failed")
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error", "status": 500}, "")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve  # noqa: N815

    def _send(self, status: HTTPStatus, payload: Any, content_type: str, headers: dict[str, str] | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type or "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        log.debug("%s %s", self.address_string(), format % args)
