"""Starts the Node udx-peer.js / noise-peer.js harness processes and talks JSON lines with them."""

from __future__ import annotations

import asyncio
import json
import pathlib

HARNESS = pathlib.Path(__file__).resolve().parents[1] / "interop" / "node"


class NodeProc:
    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc

    @classmethod
    async def start(cls, script: str, *args: str) -> "NodeProc":
        proc = await asyncio.create_subprocess_exec(
            "node", str(HARNESS / script), *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=str(HARNESS), limit=1 << 24,
        )
        return cls(proc)

    async def line(self, timeout: float = 30.0) -> dict:
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not raw:
            raise EOFError("node peer exited")
        return json.loads(raw)

    async def until(self, key: str, timeout: float = 30.0) -> dict:
        while True:
            msg = await self.line(timeout)
            if key in msg:
                return msg

    def send(self, obj: dict) -> None:
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
