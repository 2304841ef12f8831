"""A tiny Chrome DevTools Protocol client over aiohttp's websocket, for the dashboard test."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import signal

import aiohttp

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """Headless Chromium with one page attached (flattened session)."""

    def __init__(self, proc, ws, http):
        self.proc, self.ws, self.http = proc, ws, http
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._events: asyncio.Queue = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())
        self.session: str | None = None

    @classmethod
    async def launch(cls, user_data_dir: str, timeout: float = 30.0) -> "Browser":
        proc = await asyncio.create_subprocess_exec(
            chromium_path(), *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}", "about:blank",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            start_new_session=True)   # its own process group, so close() can end its helpers too
        try:
            url = await asyncio.wait_for(cls._devtools_url(proc), timeout)
        except (asyncio.TimeoutError, RuntimeError):
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise
        http = aiohttp.ClientSession()
        ws = await http.ws_connect(url, max_msg_size=0)
        browser = cls(proc, ws, http)
        target = await browser.send("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = await browser.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True},
                                      session=False)
        browser.session = attached["sessionId"]
        await browser.send("Page.enable")
        return browser

    @staticmethod
    async def _devtools_url(proc) -> str:
        while True:
            line = await proc.stderr.readline()
            if not line:
                raise RuntimeError("chromium exited before DevTools started")
            m = re.search(rb"DevTools listening on (ws://\S+)", line)
            if m:
                return m.group(1).decode()

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self._pending:
                self._pending.pop(data["id"]).set_result(data)
            elif "method" in data:
                self._events.put_nowait(data)

    async def send(self, method: str, params: dict | None = None, session: bool = True, timeout: float = 20.0):
        msg_id = next(self._ids)
        msg = {"id": msg_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        fut = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        await self.ws.send_str(json.dumps(msg))
        reply = await asyncio.wait_for(fut, timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    async def wait_event(self, method: str, timeout: float = 20.0) -> dict:
        async def next_matching():
            while True:
                event = await self._events.get()
                if event["method"] == method:
                    return event
        return await asyncio.wait_for(next_matching(), timeout)

    async def navigate(self, url: str) -> None:
        while not self._events.empty():
            self._events.get_nowait()
        await self.send("Page.navigate", {"url": url})
        await self.wait_event("Page.loadEventFired")

    async def evaluate(self, expression: str, timeout: float = 20.0):
        result = await self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                      "returnByValue": True}, timeout=timeout)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JS error: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def close(self) -> None:
        with contextlib.suppress(RuntimeError, ConnectionError, asyncio.TimeoutError):
            await self.send("Browser.close", session=False, timeout=5)
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.ws.close()
        await self.http.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except asyncio.TimeoutError:
            os.killpg(self.proc.pid, signal.SIGKILL)   # the group this test started, by its id
            await self.proc.wait()
