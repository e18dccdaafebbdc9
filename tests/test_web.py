"""``empsync web``: the console in a browser, each tab attached to the running service.

The guard in front of textual-serve is checked over real HTTP against a real
``empsync web`` process; the console itself in a real headless Chromium,
driven over the DevTools protocol: it opens the page, waits for the console,
presses f, sees the run's toast, and saves a screenshot.
"""

from __future__ import annotations

import shlex
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from core import config as cfg
from core.service import SyncService
from tui.web import tab_command

from .browser import BrowserMissing, Chromium
from .conftest import IN_CI, employee, run_cli, write_docs, write_toml
from .notify_support import closed_port
from .service_support import Headless, running, runs_table, wait_for, wait_leading

pytestmark = pytest.mark.integration

TOKEN = "web-console-token-4b1e9"


class Web(Headless):
    """``empsync web`` as a real process, its log collected."""

    def __init__(self, config_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = closed_port()
        super().__init__(config_path, "--port", str(self.port), *args, env=env, command="web")
        self.base = f"http://127.0.0.1:{self.port}"


@contextmanager
def web(config_path: Path, *args: str, **kw) -> Iterator[Web]:
    process = Web(config_path, *args, **kw)
    try:
        process.wait_line("Console in a browser on")
        yield process
    finally:
        process.close()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


@pytest.fixture
def web_config(make_config, sqlite_url, tmp_path) -> Path:
    config = make_config(sqlite_url, sync={"interval": 3600}, api={"token": TOKEN})
    return write_toml(tmp_path / "sync.toml", config)


def test_the_guard_wants_the_token_this_host_and_this_origin(web_config):
    with web(web_config) as server:
        code, _, page = get(server.base + "/")
        assert code == 401 and "token" in page
        assert get(server.base + "/?token=wrong-token-000000000")[0] == 401
        code, headers, _ = get(server.base + f"/?token={TOKEN}&fontsize=14")
        assert code == 303 and headers["Location"] == "/?fontsize=14", "the token leaves the address bar"
        cookie = headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
        jar = {"Cookie": cookie.split(";", 1)[0]}
        code, _, page = get(server.base + "/", jar)
        assert code == 200 and f'data-session-websocket-url="ws://127.0.0.1:{server.port}/ws"' in page
        # DNS rebinding: a page of another name that resolves here is not this console.
        assert get(server.base + "/", {**jar, "Host": f"evil.example:{server.port}"})[0] == 403
        # A page elsewhere cannot open a tab's WebSocket, with or without the cookie.
        for headers in ({}, jar):
            with pytest.raises(InvalidStatus) as info:
                connect(
                    f"ws://127.0.0.1:{server.port}/ws",
                    additional_headers=headers,
                    origin="http://evil.example",
                    open_timeout=10,
                )
            assert info.value.response.status_code == 403
        with pytest.raises(InvalidStatus) as info:
            connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=10)
        assert info.value.response.status_code == 401
    assert TOKEN not in server.text(), "the token was logged"


def test_behind_a_reverse_proxy_the_public_origin_is_its_own(web_config):
    public = "https://console.example.com"
    with web(web_config, "--public-url", public) as server:
        proxied = {"Host": "console.example.com"}
        code, headers, _ = get(server.base + f"/?token={TOKEN}", proxied)
        assert code == 303 and "Secure" in headers["Set-Cookie"]
        jar = {**proxied, "Cookie": headers["Set-Cookie"].split(";", 1)[0]}
        code, _, page = get(server.base + "/", {**jar, "Origin": public})
        assert code == 200 and 'data-session-websocket-url="wss://console.example.com/ws"' in page
        assert get(server.base + "/", {**jar, "Origin": "https://evil.example"})[0] == 403


def test_beyond_loopback_it_needs_a_token_and_a_free_port(make_config, sqlite_url, tmp_path):
    config = make_config(sqlite_url)
    path = write_toml(tmp_path / "open.toml", config)
    done = run_cli("web", "--config", str(path), "--host", "0.0.0.0", "--port", str(closed_port()))
    assert done.returncode == 2 and "api.token" in done.stderr and "Traceback" not in done.stderr
    with web(path) as server:
        done = run_cli("web", "--config", str(path), "--port", str(server.port))
        assert done.returncode == 2 and "--port" in done.stderr and "Traceback" not in done.stderr
    done = run_cli("web", "--config", str(path), "--port", "70000")
    assert done.returncode == 2 and "--port" in done.stderr
    done = run_cli("web", "--config", str(path), "--public-url", "empsync.example.com")
    assert done.returncode == 2 and "--public-url" in done.stderr


def test_each_tab_runs_an_attached_console_with_this_config(tmp_path):
    path = tmp_path / "my configs" / "sync.toml"
    path.parent.mkdir()
    path.write_text("[fields.name]\n")
    config = cfg.load(str(path), env={})
    command = shlex.split(tab_command(config, "sqlite:///a b.db"))
    assert command == [
        sys.executable, "-m", "tui", "--attach", "--config", str(path.resolve()), "--target-url", "sqlite:///a b.db",
    ]  # fmt: skip


@pytest.fixture
def chromium(tmp_path):
    try:
        browser = Chromium(tmp_path)
    except BrowserMissing as exc:
        if IN_CI:
            pytest.fail(f"{exc} (CI=true: a missing browser is a failure)", pytrace=False)
        pytest.skip(str(exc))
    yield browser
    browser.close()


def consoles_of(config_path: Path) -> list[int]:
    """The pids of the tab consoles (``--attach``) running on this config."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # it ended in the meantime
        if b"--attach" in argv and str(config_path).encode() in argv:
            pids.append(int(entry.name))
    return pids


def test_the_console_in_a_browser_runs_a_force_sync(make_config, sqlite_url, firestore_client, tmp_path, chromium):
    write_docs(firestore_client, {f"e{i}": employee(i) for i in range(6)})
    config = make_config(sqlite_url, sync={"interval": 3600, "force_interval": 3600}, api={"token": TOKEN})
    path = write_toml(tmp_path / "sync.toml", config)
    leader = SyncService(cfg.load(str(path), env={}))
    with running(leader), web(path) as server:
        wait_leading(leader)
        page = chromium.page()
        try:
            page.call("Page.navigate", url=f"{server.base}/?token={TOKEN}")
            page.wait_text("empsync", timeout=90)  # the console's header: the tab's console is up
            wait_for(lambda: page.evaluate("document.body.classList.contains('-first-byte')"), 30, "the first byte")
            page.evaluate("document.querySelector('.xterm-helper-textarea').focus()")
            page.press("f")
            page.wait_text("Force sync done", timeout=90)
            shot = page.screenshot(tmp_path / "web-console.png")
            # Stopped while the tab is open, the server ends the tab's console too.
            server.process.send_signal(signal.SIGTERM)
            assert server.process.wait(20) == 0, server.text()[-3000:]
            wait_for(lambda: not consoles_of(path), 10, "the tab's console to end with the server")
        finally:
            page.close()
    print(f"\nscreenshot of the console in a browser: {shot}")
    assert shot.stat().st_size > 10_000
    assert any(r["kind"] == "force" and r["trigger"] == "console" and r["status"] == "ok" for r in runs_table(config))
