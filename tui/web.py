"""``empsync web``: the operator console in a browser, through textual-serve.

Each browser tab gets its own ``empsync --attach`` process: a console that
never takes the sync lock and steers the leading service through the
database, exactly as one opened in a terminal would.

textual-serve has no access control, so a guard runs in front of it:

- the ``Host`` must name this server (no DNS rebinding) and a browser's
  ``Origin`` must be this server's own: a page elsewhere cannot open a tab's
  WebSocket and type into the console;
- with ``[api] token`` set, a tab needs it: ``/?token=…`` once, which becomes an
  HttpOnly, SameSite=Strict cookie (derived from the token, not the token
  itself) and leaves the address bar; without a token only loopback is
  served (a non-loopback host exits 2 naming ``api.token``);
- at most ``MAX_TABS`` tabs at once, each one a process.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import ipaddress
import logging
import shlex
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web
from textual_serve.server import Server

from core.api import is_loopback
from core.config import Config, check_http_url
from core.errors import ConfigError
from core.logs import configure

log = logging.getLogger("empsync.web")

DEFAULT_PORT = 8766
MAX_TABS = 8
TAB_STOP_S = 5.0  # at shutdown, for the open tabs' consoles to quit
COOKIE = "empsync_console"


def tab_command(config: Config, target_url: str | None = None) -> str:
    """The shell command textual-serve runs for each tab."""
    parts = [sys.executable, "-m", "tui", "--attach"]
    if config.path and Path(config.path).is_file():
        parts += ["--config", str(Path(config.path).resolve())]
    if target_url:
        parts += ["--target-url", target_url]
    return shlex.join(parts)


def check_web_host(host: str, token: str) -> None:
    if not is_loopback(host) and not token:
        raise ConfigError(
            "api.token",
            f"empsync web would listen on {host}, beyond this machine, with no token: anyone could steer the sync",
            "set [api] token or EMPSYNC_API_TOKEN, or keep --host 127.0.0.1",
        )


class ConsoleServer(Server):
    """textual-serve's server with empsync's guard in front and empsync's logging."""

    def __init__(
        self, command: str, *, host: str, port: int, token: str = "", public_url: str | None = None, title: str = ""
    ) -> None:
        check_web_host(host, token)
        if public_url:
            check_http_url(public_url, "--public-url")
        super().__init__(command, host=host, port=port, title=title or "empsync", public_url=public_url)
        self.fixed_public_url = public_url
        self.token = token
        self._tabs: set[asyncio.Task[Any]] = set()  # each open tab's WebSocket handler
        self._cookie = hmac.new(token.encode(), b"empsync web console", hashlib.sha256).hexdigest() if token else ""
        self._names = {"localhost", host.lower().strip("[]")}
        self._public_origin = ""  # behind a reverse proxy, the origin browsers see
        if public_url:
            parts = urlsplit(public_url)
            self._names.add((parts.hostname or "").lower())
            self._public_origin = f"{parts.scheme}://{parts.netloc}"
        self._wildcard = _is_unspecified(host)
        if self._wildcard:
            self._names |= {socket.gethostname().lower(), socket.getfqdn().lower()}

    def initialize_logging(self) -> None:
        configure(level=logging.INFO)  # one line per record, secrets scrubbed, like --no-ui

    async def on_startup(self, app: web.Application) -> None:
        where = self.fixed_public_url or f"http://{self.host}:{self.port}"
        log.info(
            "Console in a browser on %s%s (each tab attaches to the leading service)",
            where,
            "/?token=…" if self.token else "",
        )

    async def on_shutdown(self, app: web.Application) -> None:
        # aiohttp leaves open WebSockets be at shutdown, and each tab's console process would
        # outlive the server: ended, a tab's handler stops its console (it sends it "quit").
        tasks = list(self._tabs)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=TAB_STOP_S)

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()

        @web.middleware
        async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
            refused = self.refusal(request)
            if refused is not None:
                return refused
            if request.path != "/ws":
                return await handler(request)
            if len(self._tabs) >= MAX_TABS:
                return _page(503, f"At most {MAX_TABS} console tabs at once: close one and reload.")
            task = asyncio.current_task()
            assert task is not None  # aiohttp runs each request in a task of its own
            self._tabs.add(task)
            try:
                return await handler(request)
            finally:
                self._tabs.discard(task)

        app.middlewares.append(guard)
        return app

    async def handle_index(self, request: web.Request) -> Any:
        if self.fixed_public_url is None:
            # The tab's WebSocket goes back to the host the browser used (checked by the guard),
            # so its cookie goes with it.
            self.public_url = f"{request.scheme}://{request.host}"
        return await super().handle_index(request)

    # -- the guard ------------------------------------------------------------------------------

    def refusal(self, request: web.Request) -> web.StreamResponse | None:
        """Why this request is refused (a response to send), or None to serve it."""
        host = urlsplit("//" + request.host).hostname if request.host else None
        if not host or not self._own_name(host.lower().rstrip(".")):
            return _page(403, "This is not the host this console serves: open it by its own address.")
        origin = request.headers.get("Origin")
        if origin is not None and origin.rstrip("/") not in (f"{request.scheme}://{request.host}", self._public_origin):
            return _page(403, "Cross-origin requests are refused.")
        if not self.token or hmac.compare_digest(request.cookies.get(COOKIE, ""), self._cookie):
            return None
        given = request.query.get("token")
        if request.path == "/" and given is not None and hmac.compare_digest(given.encode(), self.token.encode()):
            rest = {k: v for k, v in request.query.items() if k != "token"}
            response = web.HTTPSeeOther("/" + (f"?{urlencode(rest)}" if rest else ""))
            secure = request.scheme == "https" or self._public_origin.startswith("https:")
            response.set_cookie(COOKIE, self._cookie, httponly=True, samesite="Strict", path="/", secure=secure)
            return response
        return _page(401, "This console needs the token: open /?token=… with the service's [api] token once.")

    def _own_name(self, name: str) -> bool:
        if name in self._names or name.endswith(".localhost"):
            return True
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            return False
        return ip.is_loopback or self._wildcard  # an IP literal cannot be rebound to another server


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def _page(status: int, text: str) -> web.Response:
    body = f"<!doctype html><title>empsync</title><p>{html.escape(text)}</p>"
    return web.Response(status=status, text=body, content_type="text/html", headers={"Cache-Control": "no-store"})


def run_web(config: Config, *, host: str, port: int, public_url: str | None, target_url: str | None) -> int:
    """Serve until SIGINT/SIGTERM; 0 then."""
    server = ConsoleServer(
        tab_command(config, target_url), host=host, port=port, token=config.api.token, public_url=public_url
    )
    try:
        server.serve()
    except OSError as exc:
        raise ConfigError(
            "--port", f"cannot listen on {host}:{port} ({exc.strerror or exc})", "choose another --port"
        ) from None
    return 0
