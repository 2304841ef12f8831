"""Keeping a `DHT` node healthy (mixed into `DHT`): NAT sampling, the PING_NAT
firewall check, persistence, the routing table's upkeep (ping-before-evict,
removal on timeouts, DOWN_HINTs) and the 5-second maintenance tick."""

from __future__ import annotations

import asyncio

from .. import encoding as enc
from ..encoding import Address
from . import messages as m
from .driver import QueryRun
from .io import Reply
from .nat import NatSampler
from .routing import Node

TICK = 5.0
PING_EVERY_TICKS = 8
REFRESH_TICKS = 60
STABLE_TICKS = 240
MAX_REPINGS = 3
DOWN_HINTS_PER_TICK = 50


class Upkeep:
    # ------------------------------------------------------------ persistence / NAT
    def _set_firewalled(self, firewalled: bool) -> None:
        if firewalled != self.firewalled:
            # requests now leave from the other socket: old samples describe the wrong port
            self.nat = NatSampler()
        self.firewalled = firewalled
        self.io.firewalled = firewalled

    def _make_persistent(self, addr: Address) -> None:
        self.ephemeral = False
        self.io.ephemeral = False
        self.id = m.node_id(addr)
        self.table.set_id(self.id)
        self.io.table_id = self.id

    async def _check_firewall(self) -> None:
        """PING_NAT from the client socket asking for an answer to our server port;
        answers that arrive on the server socket prove we are reachable."""
        nodes = [n.address for n in self.table.closest(self.table.id, 5)]
        for b in self.bootstrap_nodes():
            if len(nodes) >= 5:
                break
            if b not in nodes:
                nodes.append(b)
        if not nodes:
            return
        value = enc.uint16(self.address[1])
        replies = await asyncio.gather(
            *[self.request(a, m.PING_NAT, internal=True, value=value, socket=self.io.client) for a in nodes],
            return_exceptions=True,
        )
        ok = [r for r in replies if isinstance(r, Reply) and r.socket is self.io.server]
        need = 3 if len(nodes) >= 3 else 1
        hosts = {r.to[0] for r in ok}
        if len(ok) >= need and len(hosts) == 1 and all(r.to[1] == self.address[1] for r in ok):
            self._set_firewalled(False)

    # ------------------------------------------------------------ table upkeep
    def _closest_addresses(self, target: bytes) -> list[Address]:
        return [n.address for n in self.table.closest(target)]

    def _on_response(self, reply: Reply, external: bool) -> None:
        if not external and (reply.from_id is not None or self.nat.size < 3):
            self.nat.add(reply.to)
        if reply.from_id is not None and not external:
            self._add_node(reply.from_address, reply.from_id)

    def _add_node(self, addr: Address, id_: bytes) -> None:
        existing = self.table.get(id_)
        if existing is not None:
            existing.seen = self._tick
            return
        node = Node(id_, addr, self._tick)
        oldest = self.table.add(node)
        if oldest is not None and self._repinging < MAX_REPINGS:
            self._repinging += 1
            self._ping_node(oldest, repinging=True)

    def _ping_node(self, node: Node, repinging: bool = False) -> None:
        def ok(_reply):
            if repinging:
                self._repinging -= 1
            self.table.keep(node, self._tick) if repinging else setattr(node, "pinged", self._tick)

        def fail(_err):
            if repinging:
                self._repinging -= 1
            self.table.evict(node)

        self.io.request(node.address, m.PING, internal=True, on_reply=ok, on_error=fail)

    def _on_timeout(self, addr: Address, id_: bytes | None) -> None:
        if id_ is not None:
            self.table.remove(id_)

    def _send_down_hint(self, ref: Address, down: Address) -> None:
        if self._down_hints >= DOWN_HINTS_PER_TICK:
            return
        self._down_hints += 1
        self.io.request(ref, m.DOWN_HINT, internal=True, value=enc.ipv4(down), retries=1,
                        on_reply=_ignore, on_error=_ignore)

    def _on_tick(self) -> None:
        if self.destroyed:
            return
        self._tick += 1
        self._down_hints = 0
        self._tick_handle = self.io.loop.call_later(TICK, self._on_tick)
        if self._tick % PING_EVERY_TICKS == 0:
            for n in self.table.oldest(3 if len(self.io.inflight) > 2 else 5):
                self._ping_node(n)
        idle = self._tick - self._last_query_tick >= REFRESH_TICKS
        if (idle or (len(self.table) < self.table.k and self._tick % 64 == 0)) and self._bootstrap_done():
            self._last_query_tick = self._tick
            self.spawn(self._refresh())
        if self.config.ephemeral is None and self.ephemeral:
            self._adaptive_tick()

    def _bootstrap_done(self) -> bool:
        return self._ready is not None and self._ready.done()

    async def _refresh(self) -> None:
        node = self.table.random_node(self._rng)
        target = node.id if node else self.table.id
        await QueryRun(self, target, m.FIND_NODE, internal=True, concurrency=2).finished()

    def _adaptive_tick(self) -> None:
        pub = self.nat.address
        if self.firewalled or pub is None or pub[1] != self.address[1]:
            self._stable = 0
            return
        self._stable += 1
        if self._stable >= STABLE_TICKS:
            self._make_persistent(pub)


def _ignore(_x) -> None:
    return None
