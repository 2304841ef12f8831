"""Drives tests/interop/node/swarm-peer.js (a real Node hyperswarm peer) and
swarm-testnet.js (a Node hyperdht testnet) over JSON lines. Shared by the
interop tests and scripts/bench/connect.py."""

from __future__ import annotations

import asyncio
import hashlib
import json
import pathlib

HARNESS = pathlib.Path(__file__).resolve().parent / "node"


class NodeError(Exception):
    pass


def pattern(n: int) -> bytes:
    """The deterministic bytes swarm-peer.js sends (sha256 counter blocks)."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(b"mesh-pattern:%d" % i).digest()
        i += 1
    return bytes(out[:n])


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "node", *args, cwd=str(HARNESS),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 24,
    )


class NodeTestnet:
    """`node swarm-testnet.js N`: N persistent hyperdht nodes on 127.0.0.1."""

    def __init__(self, proc, bootstrap):
        self.proc = proc
        self.bootstrap = bootstrap

    @classmethod
    async def start(cls, n: int = 3, timeout: float = 30.0) -> "NodeTestnet":
        proc = await _spawn("swarm-testnet.js", str(n))
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        msg = json.loads(line)
        if msg.get("event") != "testnet":
            raise NodeError(msg)
        boot = [(h, int(p)) for h, p in (s.split(":") for s in msg["bootstrap"])]
        return cls(proc, boot)

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class NodePeer:
    """One `node swarm-peer.js` process: send commands, wait for events."""

    def __init__(self, proc):
        self.proc = proc
        self.events: list[dict] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())
        self.public_key: bytes = b""
        self.port = 0

    @classmethod
    async def start(cls, bootstrap, seed: bytes | None = None, allow: list[bytes] | None = None,
                    open_: bool = False, timeout: float = 30.0) -> "NodePeer":
        args = ["swarm-peer.js", "--bootstrap", ",".join(f"{h}:{p}" for h, p in bootstrap)]
        if open_:
            args.append("--open")
        if seed is not None:
            args += ["--seed", seed.hex()]
        if allow is not None:
            args += ["--allow", ",".join(k.hex() for k in allow)]
        peer = cls(await _spawn(*args))
        ready = await peer.wait("ready", timeout=timeout)
        peer.public_key = bytes.fromhex(ready["public_key"])
        peer.port = ready["port"]
        return peer

    async def _read(self) -> None:
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                self.events.append({"event": "exit"})
                self._changed.set()
                return
            self.events.append(json.loads(line))
            self._changed.set()

    def send(self, cmd: str, **kw) -> None:
        self.proc.stdin.write((json.dumps({"cmd": cmd, **kw}) + "\n").encode())

    async def wait(self, event: str, timeout: float = 30.0, start: int = 0, **match) -> dict:
        """The first event named `event` (at index >= start) whose fields match."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            for ev in self.events[start:]:
                if ev.get("event") == event and all(ev.get(k) == v for k, v in match.items()):
                    return ev
                if ev.get("event") in ("fatal", "exit") and event != "exit":
                    raise NodeError(f"node peer ended while waiting for {event}: {ev}")
            self._changed.clear()
            left = end - loop.time()
            if left <= 0:
                raise asyncio.TimeoutError(f"no {event} {match} from node peer; got {self.events[-5:]}")
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def cmd(self, cmd: str, reply: str, timeout: float = 60.0, **kw) -> dict:
        start = len(self.events)
        self.send(cmd, **kw)
        return await self.wait(reply, timeout=timeout, start=start)

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()

    async def close(self) -> None:
        if self.proc.returncode is None:
            try:
                self.send("exit")
                await asyncio.wait_for(self.proc.wait(), 15)
            except (asyncio.TimeoutError, BrokenPipeError, ConnectionResetError):
                self.proc.kill()
                await self.proc.wait()
        else:
            await self.proc.wait()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
