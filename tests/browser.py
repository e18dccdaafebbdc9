"""A real headless Chromium (Debian's package), driven over the Chrome DevTools Protocol.

The protocol is JSON over a WebSocket, so the websockets client the project
already depends on is the whole driver: no chromedriver, no Node. Every host
but loopback resolves to nothing, so a page can reach only this machine.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import subprocess
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
    "--window-size=1280,800",
    "--remote-debugging-port=0",
)
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78DEHMc]")


class BrowserMissing(Exception):
    pass


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    raise BrowserMissing("chromium is not installed (Debian: apt-get install chromium)")


class Chromium:
    def __init__(self, tmp: Path) -> None:
        self.profile = tmp / "chromium-profile"  # a new, empty one
        self.profile.mkdir()
        self.log = (tmp / "chromium.log").open("wb")
        self.process = subprocess.Popen(
            [find_chromium(), *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.port = self._devtools_port()

    def _devtools_port(self, timeout: float = 60) -> int:
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker.exists() and (lines := marker.read_text().split()):
                return int(lines[0])
            if self.process.poll() is not None:
                raise BrowserMissing(f"chromium exited {self.process.returncode}: see {self.log.name}")
            time.sleep(0.1)
        raise BrowserMissing(f"chromium did not open its DevTools port within {timeout:.0f} s")

    def page(self) -> Page:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10) as response:
            targets = json.loads(response.read())
        return Page(next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page"))

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.log.close()


class Page:
    """One tab; it also keeps what its WebSockets received, as terminal text without escapes."""

    def __init__(self, url: str) -> None:
        self._stack = ExitStack()
        self.ws: ClientConnection = self._stack.enter_context(connect(url, max_size=None, open_timeout=10))
        self._ids = itertools.count(1)
        self._received: list[bytes] = []
        self.call("Page.enable")
        self.call("Network.enable")

    def call(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = self._next(deadline - time.monotonic())
            if message is not None and message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def _next(self, timeout: float) -> dict[str, Any] | None:
        if timeout <= 0:
            raise TimeoutError("no answer from the browser")
        try:
            message = json.loads(self.ws.recv(timeout=timeout))
        except TimeoutError:
            return None
        if message.get("method") == "Network.webSocketFrameReceived":
            response = message["params"]["response"]
            data = response["payloadData"]
            self._received.append(base64.b64decode(data) if response.get("opcode") == 2 else data.encode())
        return message

    def terminal_text(self) -> str:
        return _ANSI.sub("", b"".join(self._received).decode("utf-8", "replace"))

    def wait_text(self, needle: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while needle not in (text := self.terminal_text()):
            if time.monotonic() >= deadline:
                raise AssertionError(f"{needle!r} never reached the page; its terminal showed:\n{text[-3000:]}")
            self._next(min(1.0, deadline - time.monotonic()))
        return text

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def press(self, key: str) -> None:
        """A key typed by a person: down and up, with its character."""
        code = f"Key{key.upper()}"
        common = {"key": key, "code": code, "windowsVirtualKeyCode": ord(key.upper())}
        self.call("Input.dispatchKeyEvent", type="keyDown", text=key, **common)
        self.call("Input.dispatchKeyEvent", type="keyUp", **common)

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self) -> None:
        self._stack.close()
