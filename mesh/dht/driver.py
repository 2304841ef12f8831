"""Runs a `Query` engine over the RPC driver: an async iterator of replies,
then an optional commit to the closest replies (announce, put)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import TimeoutError_
from .io import Reply
from .query import Query, QueryNode

if TYPE_CHECKING:
    from .node import DHT

QUERY_RETRIES = 3


class QueryRun:
    """Iterate to get the (mapped) successful replies as they arrive.

    `map_fn(reply)` turns a reply into the yielded value, or None to skip it.
    After the iteration ends, `closest_replies` holds the k closest replies
    that carried a node id, ready for a commit.
    """

    def __init__(self, dht: "DHT", target: bytes, command: int, value: bytes | None = None, *,
                 internal: bool = False, map_fn: Callable[[Reply], object] | None = None,
                 nodes: list | None = None, concurrency: int | None = None):
        self.dht = dht
        self.command = command
        self.value = value
        self.internal = internal
        self.map_fn = map_fn
        self.query = Query(target, dht.table.id, concurrency=concurrency or dht.config.concurrency)
        self._ready: deque = deque()
        self._wake: asyncio.Future | None = None
        self._slow: set[int] = set()
        self._outgoing: dict[int, object] = {}
        self._started = False
        self.requests = 0

    def _seed(self, nodes) -> None:
        q = self.query
        if nodes:
            for addr in nodes:
                q.add(addr, None)
            q.set_table_retry(self._table_nodes)
            return
        table = self.dht.table.closest(q.target)
        for n in table:
            q.add(n.address, n.id)
        if table:
            q.from_table = True
        if len(table) < q.k:
            for addr in self.dht.bootstrap_nodes():
                q.add(addr, None)

    def _table_nodes(self):
        return [(n.address, n.id) for n in self.dht.table.closest(self.query.target)]

    def _pump(self) -> None:
        io = self.dht.io
        for node in self.query.next_visits():
            self.requests += 1
            key = id(node)
            self._outgoing[key] = io.request(
                node.address, self.command, internal=self.internal, target=self.query.target, value=self.value,
                retries=QUERY_RETRIES,
                on_reply=lambda r, n=node: self._on_reply(n, r),
                on_error=lambda e, n=node: self._on_error(n, e),
                on_cycle=lambda n=node: self._on_cycle(n),
            )
        if self.query.done:
            self._notify()

    def _notify(self) -> None:
        w = self._wake
        if w is not None and not w.done():
            w.set_result(None)

    def _was_slow(self, node: QueryNode) -> bool:
        key = id(node)
        self._outgoing.pop(key, None)
        if key in self._slow:
            self._slow.discard(key)
            return True
        return False

    def _on_reply(self, node: QueryNode, reply: Reply) -> None:
        self.query.on_reply(node, reply, reply.from_id, reply.closer_nodes, reply.error, self._was_slow(node))
        if reply.error == 0:
            value = self.map_fn(reply) if self.map_fn else reply
            if value is not None:
                self._ready.append(value)
        self._notify()
        self._pump()

    def _on_error(self, node: QueryNode, err: Exception) -> None:
        slow = self._was_slow(node)
        if isinstance(err, TimeoutError_):
            refs = self.query.on_timeout(node, slow)
            self.dht._on_timeout(node.address, node.id)
            for ref in refs:
                self.dht._send_down_hint(ref, node.address)
        else:
            self.query.on_error(node, slow)
        self._pump()

    def _on_cycle(self, node: QueryNode) -> None:
        key = id(node)
        if key not in self._slow:
            self._slow.add(key)
            self.query.on_slow(node)
            self._pump()

    def start(self, nodes=None) -> "QueryRun":
        if not self._started:
            self._started = True
            self.dht.stats["queries"] += 1
            self._seed(nodes)
            self._pump()
        return self

    def __aiter__(self):
        return self._iterate()

    async def _iterate(self):
        self.start()
        loop = asyncio.get_running_loop()
        try:
            while True:
                while self._ready:
                    yield self._ready.popleft()
                if self.query.done:
                    return
                self._wake = loop.create_future()
                await self._wake
                self._wake = None
        finally:
            self.close()

    def close(self) -> None:
        for out in self._outgoing.values():
            out.cancel()
        self._outgoing.clear()

    async def finished(self) -> list:
        """Run to the end; returns every yielded value."""
        return [v async for v in self]

    @property
    def closest_replies(self) -> list[Reply]:
        return [r for r in self.query.closest_replies() if r.token is not None]

    async def commit(self, make_request: Callable[[Reply], tuple[int, bytes | None] | None],
                     limit: int | None = None) -> list[Reply]:
        """For each closest reply (the `limit` closest), send the write
        `make_request(reply)` returns (command, value) with that reply's token;
        returns the replies of the nodes that accepted it."""
        calls = []
        for r in self.closest_replies[:limit]:
            spec = make_request(r)
            if spec is None:
                continue
            command, value = spec
            calls.append(self.dht.request(r.from_address, command, target=self.query.target, value=value, token=r.token))
        results = await asyncio.gather(*calls, return_exceptions=True)
        ok = []
        for res in results:
            if isinstance(res, BaseException):
                if not isinstance(res, Exception):
                    raise res
                continue
            if res.error == 0:
                ok.append(res)
        return ok

