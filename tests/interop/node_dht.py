"""Drives tests/interop/node/dht-node.js (a real Node hyperdht peer) over JSON lines."""

from __future__ import annotations

import asyncio
import itertools
import json
import pathlib

HARNESS = pathlib.Path(__file__).resolve().parent / "node"


class NodeError(Exception):
    pass


class NodeDHT:
    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self._rid = itertools.count(1)

    @classmethod
    async def start(cls) -> "NodeDHT":
        proc = await asyncio.create_subprocess_exec(
            "node", str(HARNESS / "dht-node.js"), cwd=str(HARNESS),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 24,
        )
        return cls(proc)

    async def cmd(self, name: str, timeout: float = 60.0, **kw) -> dict:
        rid = next(self._rid)
        self.proc.stdin.write((json.dumps({"rid": rid, "cmd": name, **kw}) + "\n").encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise NodeError(f"node harness exited during {name}")
        res = json.loads(line)
        if not res.get("ok"):
            raise NodeError(res.get("error"))
        return res

    async def close(self) -> None:
        if self.proc.returncode is None:
            try:
                await self.cmd("destroy", timeout=20)
            except (NodeError, asyncio.TimeoutError, BrokenPipeError, ConnectionResetError):
                pass
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
