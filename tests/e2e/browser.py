"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol, as a person's
browser would show a page: navigate, wait for what the page renders, click, read, screenshot.

The protocol is JSON over a WebSocket; aiohttp (the fake server's HTTP stack, in the test extra)
is the client, so no browser-automation package is needed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class ChromiumUnavailable(Exception):
    """No headless Chromium on this machine."""


def find_chromium() -> Path:
    """``$CHROMIUM``, else the first of the usual names on PATH."""
    named = os.environ.get("CHROMIUM")
    found = named or next((p for p in map(shutil.which, CANDIDATES) if p), None)
    if not found or not Path(found).is_file():
        raise ChromiumUnavailable(
            f"no Chromium found (looked for $CHROMIUM, then {', '.join(CANDIDATES)} on PATH); "
            "on Debian: apt-get install chromium (`make chromium` does it as root)"
        )
    return Path(found)


class Browser:
    """One headless Chromium with one page. ``async with Browser(...) as page:``."""

    def __init__(self, width: int = 1280, height: int = 800, scale: float = 1.0) -> None:
        self.width, self.height, self.scale = width, height, scale
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-")
        self._process: subprocess.Popen[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._socket: aiohttp.ClientWebSocketResponse[bool] | None = None
        self._next_id = 0

    def _launch(self, timeout: float = 30.0) -> int:
        """Start Chromium; the DevTools port it chose (written to its profile when ready)."""
        binary = find_chromium()
        profile = Path(self._profile.name)
        args = [
            str(binary),
            "--headless",
            "--remote-debugging-port=0",  # loopback only; the port is written to the profile
            f"--user-data-dir={profile}",
            f"--window-size={self.width},{self.height}",
            f"--force-device-scale-factor={self.scale}",
            "--hide-scrollbars",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-gpu",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--metrics-recording-only",
            "--no-proxy-server",
            "--lang=en-US",
            *(["--no-sandbox"] if os.geteuid() == 0 else []),  # Chromium refuses root otherwise
            "about:blank",
        ]
        with (profile / "stderr.log").open("wb") as log:
            self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
        marker = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (marker.is_file() and marker.read_text().strip()):
            if self._process.poll() is not None:
                raise AssertionError(f"chromium exited at start:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"chromium not ready after {timeout} s:\n{self.log_tail()}")
            time.sleep(0.05)
        return int(marker.read_text().splitlines()[0])

    async def __aenter__(self) -> Browser:
        try:
            port = await asyncio.to_thread(self._launch)
            self._session = aiohttp.ClientSession(trust_env=False)
            async with self._session.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            (page,) = [t for t in targets if t["type"] == "page"]
            self._socket = await self._session.ws_connect(
                page["webSocketDebuggerUrl"], max_msg_size=0
            )
            await self.send("Page.enable")
            await self.send("Runtime.enable")
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def log_tail(self, lines: int = 20) -> str:
        log = Path(self._profile.name) / "stderr.log"
        text = log.read_text(errors="replace") if log.is_file() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    async def close(self) -> None:
        if self._socket is not None:
            await self._socket.close()
            self._socket = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self._profile.cleanup()

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One protocol command; its result (events that arrive meanwhile are not needed)."""
        assert self._socket is not None, "the browser is not running"
        self._next_id += 1
        command_id = self._next_id
        await self._socket.send_str(
            json.dumps({"id": command_id, "method": method, "params": params})
        )
        while True:
            message = await self._socket.receive(timeout=60)
            if message.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"DevTools connection ended: {message}\n{self.log_tail()}")
            reply = json.loads(message.data)
            if reply.get("id") == command_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, what: str, timeout: float = 30.0) -> Any:
        """Poll until the expression is truthy in the page; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                text = await self.evaluate("document.body ? document.body.innerText : ''")
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}; page:\n{text}"
                )
            await asyncio.sleep(0.1)

    async def screenshot(self, clip_height: float | None = None) -> bytes:
        """A PNG of the viewport (or of its top ``clip_height`` CSS pixels)."""
        params: dict[str, Any] = {"format": "png"}
        if clip_height is not None:
            clip = {"x": 0, "y": 0, "width": self.width, "height": clip_height, "scale": 1}
            params["clip"] = clip
        shot = await self.send("Page.captureScreenshot", **params)
        return base64.b64decode(shot["data"])
