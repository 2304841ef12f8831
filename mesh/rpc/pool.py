"""RpcClient: a pool of RPC connections by public key, like HyperswarmRPC's.

One connection per server public key, made on first use with the injected
`connect(public_key) -> awaitable Connection` (dht.connect in production).
When the last request on a connection finishes, a linger timer (default 10 s)
starts; if nothing else uses it by then the connection is destroyed. A closed
connection leaves the pool and the next request connects again.

Unlike @hyperswarm/rpc, a request counts as active until its response arrives,
so the linger timer never cuts a slow request short.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from . import codec
from .config import RpcConfig
from .errors import ChannelClosedError, RpcError, RpcTimeoutError
from .peer import RpcPeer
from .session import Connection

Connect = Callable[[bytes], Awaitable[Connection]]


class _Entry:
    __slots__ = ("connecting", "peer", "active", "linger")

    def __init__(self, connecting: asyncio.Task):
        self.connecting = connecting
        self.peer: RpcPeer | None = None
        self.active = 0
        self.linger: asyncio.TimerHandle | None = None


class RpcClient:
    def __init__(self, connect: Connect, config: RpcConfig | None = None, *, capability: bytes | None = None):
        self._connect = connect
        self.config = config or RpcConfig()
        self.capability = capability
        self._pool: dict[bytes, _Entry] = {}
        self._closed = False

    @property
    def size(self) -> int:
        return len(self._pool)

    async def request(self, public_key: bytes, method: str, value: Any = None, *, timeout: float | None = None,
                      encoding: str | codec.Encoding | None = None, inband_errors: bool = False) -> Any:
        """Call `method` on the server with `public_key`, connecting if needed.

        The timeout covers connecting as well as the request. Raises what
        RpcPeer.request raises, and whatever `connect` raises.
        """
        if timeout is None:
            timeout = self.config.default_timeout
        try:
            async with asyncio.timeout(timeout):
                entry = await self._acquire(public_key)
                try:
                    return await entry.peer.request(method, value, encoding=encoding, inband_errors=inband_errors)
                finally:
                    self._release(public_key, entry)
        except TimeoutError as e:
            if isinstance(e, RpcError):
                raise
            raise RpcTimeoutError(f"timeout of {int(timeout * 1000)}ms exceeded") from None

    async def event(self, public_key: bytes, method: str, value: Any = None, *,
                    encoding: str | codec.Encoding | None = None) -> None:
        entry = await self._acquire(public_key)
        try:
            entry.peer.event(method, value, encoding=encoding)
        finally:
            self._release(public_key, entry)

    async def _acquire(self, public_key: bytes) -> _Entry:
        if self._closed:
            raise ChannelClosedError("RPC client closed")
        entry = self._pool.get(public_key)
        if entry is None or (entry.peer is not None and entry.peer.is_closed):
            entry = _Entry(asyncio.get_running_loop().create_task(self._open(public_key)))
            entry.connecting.add_done_callback(lambda t, e=entry: self._connected(public_key, e, t))
            self._pool[public_key] = entry
        entry.active += 1
        if entry.linger is not None:
            entry.linger.cancel()
            entry.linger = None
        try:
            entry.peer = await asyncio.shield(entry.connecting)
        except BaseException:
            entry.active -= 1
            if self._pool.get(public_key) is entry and entry.connecting.done():
                del self._pool[public_key]
            raise
        return entry

    def _connected(self, public_key: bytes, entry: _Entry, task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is not None:
            if self._pool.get(public_key) is entry:
                del self._pool[public_key]
            return
        entry.peer = task.result()
        if entry.active == 0:  # every caller gave up while we connected: linger, then go
            entry.active = 1
            self._release(public_key, entry)

    async def _open(self, public_key: bytes) -> RpcPeer:
        conn = await self._connect(public_key)
        peer = RpcPeer(conn, self.config, capability=self.capability, id=public_key)
        peer.closed.add_done_callback(lambda _f: self._forget(public_key, peer, conn))
        return peer

    def _forget(self, public_key: bytes, peer: RpcPeer, conn: Connection) -> None:
        entry = self._pool.get(public_key)
        if entry is not None and entry.peer is peer:
            del self._pool[public_key]
            if entry.linger is not None:
                entry.linger.cancel()
        conn.destroy()  # as @hyperswarm/rpc: a closed RPC channel ends its connection

    def _release(self, public_key: bytes, entry: _Entry) -> None:
        entry.active -= 1
        if entry.active == 0 and self._pool.get(public_key) is entry:
            loop = asyncio.get_running_loop()
            entry.linger = loop.call_later(self.config.pool_linger, self._expire, public_key, entry)

    def _expire(self, public_key: bytes, entry: _Entry) -> None:
        if entry.active == 0 and self._pool.get(public_key) is entry:
            del self._pool[public_key]
            if entry.peer is not None:
                entry.peer.conn.destroy()

    async def close(self) -> None:
        """Destroy every pooled connection; later requests raise CHANNEL_CLOSED."""
        self._closed = True
        entries, self._pool = list(self._pool.values()), {}
        for entry in entries:
            if entry.linger is not None:
                entry.linger.cancel()
            if entry.peer is not None:
                entry.peer.conn.destroy()
            elif not entry.connecting.done():
                entry.connecting.cancel()
