"""The iterative Kademlia query as a state machine (sans-IO).

The driver asks `next_visits()` for nodes to send the query command to, feeds
back `on_reply` / `on_timeout` / `on_error` / `on_slow`, and stops when `done`.
The engine keeps the k closest replies (by XOR to the target, replies with a
valid id only) for a commit step, and reports which referrers should receive a
DOWN_HINT for a node that timed out.
"""

from __future__ import annotations

import heapq
from itertools import count

from ..encoding import Address
from .messages import node_id

K = 20
CONCURRENCY = 10
_DONE = 1
_DOWN = 2


class QueryNode:
    __slots__ = ("address", "id", "dist")

    def __init__(self, address: Address, id_: bytes | None, dist: int):
        self.address = address
        self.id = id_
        # unknown ids (bootstrap nodes) have dist -1 and sort first: they are our only way in
        self.dist = dist


class Query:
    __slots__ = (
        "target", "_t", "k", "concurrency", "own_id", "_pending", "_seen", "_n",
        "inflight", "slow", "closest", "successes", "errors", "from_table", "_table_retry",
    )

    def __init__(self, target: bytes, own_id: bytes | None = None, k: int = K, concurrency: int = CONCURRENCY):
        self.target = target
        self._t = int.from_bytes(target, "big")
        self.k = k
        self.concurrency = concurrency
        self.own_id = own_id
        self._pending: list[tuple[int, int, QueryNode]] = []
        self._seen: dict[Address, object] = {}
        self._n = count()
        self.inflight = 0
        self.slow = 0
        # sorted by distance: (dist, reply); reply is whatever the driver passed in
        self.closest: list[tuple[int, object]] = []
        self.successes = 0
        self.errors = 0
        self.from_table = False
        # the driver sets this to a callable returning table nodes for one retry
        self._table_retry = None

    # ---- seeding
    def add(self, address: Address, id_: bytes | None = None, ref: Address | None = None) -> bool:
        """Consider a node; returns False when it is not among the k closest so far."""
        dist = -1 if id_ is None else int.from_bytes(id_, "big") ^ self._t
        closer = self._is_closer(dist)
        refs = self._seen.get(address)
        if refs is _DONE:
            return closer
        if refs is _DOWN:
            return closer
        if refs is not None:
            if ref is not None:
                refs.append(ref)
            return closer
        if not closer:
            return False
        self._seen[address] = [] if ref is None else [ref]
        node = QueryNode(address, id_, dist)
        heapq.heappush(self._pending, (dist, next(self._n), node))
        return True

    def set_table_retry(self, fn) -> None:
        self._table_retry = fn

    def _is_closer(self, dist: int) -> bool:
        return dist < 0 or len(self.closest) < self.k or dist < self.closest[-1][0]

    # ---- driving
    def next_visits(self) -> list[QueryNode]:
        out = []
        limit = self.concurrency + self.slow
        while self.inflight < limit and self._pending:
            _, _, node = heapq.heappop(self._pending)
            if node.id is not None and not self._is_closer(node.dist):
                continue
            self.inflight += 1
            out.append(node)
        if not out and not self._pending and self.inflight == 0 and self.successes < self.k / 4:
            retry, self._table_retry = self._table_retry, None
            if retry is not None and not self.from_table:
                self.from_table = True
                for addr, id_ in retry():
                    self.add(addr, id_)
                return self.next_visits()
        return out

    @property
    def done(self) -> bool:
        """Nothing left to ask, or only retries of slow nodes outstanding while
        the k closest are already known (as dht-rpc)."""
        if self._pending:
            return False
        return self.inflight == 0 or (self.slow == self.inflight and len(self.closest) >= self.k)

    def _finish(self, node: QueryNode, was_slow: bool) -> None:
        self.inflight -= 1
        if was_slow:
            self.slow -= 1

    def on_reply(self, node: QueryNode, reply, reply_id: bytes | None, closer_nodes: list[Address],
                 error: int = 0, was_slow: bool = False) -> None:
        self._finish(node, was_slow)
        self._seen[node.address] = _DONE
        if error == 0:
            self.successes += 1
        else:
            self.errors += 1
        if error == 0 and reply_id is not None:
            d = int.from_bytes(reply_id, "big") ^ self._t
            if self._is_closer(d):
                self._push_closest(d, reply)
        for addr in closer_nodes:
            nid = node_id(addr)
            if nid == self.own_id:
                continue
            if not self.add(addr, nid, node.address):
                break

    def on_slow(self, node: QueryNode) -> None:
        """The first try timed out and a retry is in flight: let another request go."""
        self.slow += 1

    def on_timeout(self, node: QueryNode, was_slow: bool = False) -> list[Address]:
        """The node never answered. Returns the nodes that referred it (send them DOWN_HINT)."""
        refs = self._seen.get(node.address)
        self._seen[node.address] = _DOWN
        self._finish(node, was_slow)
        self.errors += 1
        return list(refs) if isinstance(refs, list) else []

    def on_error(self, node: QueryNode, was_slow: bool = False) -> None:
        self._seen[node.address] = _DONE
        self._finish(node, was_slow)
        self.errors += 1

    def _push_closest(self, dist: int, reply) -> None:
        c = self.closest
        for i, (d, _) in enumerate(c):
            if d == dist:
                return
        c.append((dist, reply))
        c.sort(key=lambda x: x[0])
        if len(c) > self.k:
            c.pop()

    def closest_replies(self) -> list:
        return [r for _, r in self.closest]
