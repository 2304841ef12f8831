"""`testnet(n)`: n persistent nodes on 127.0.0.1, like hyperdht/testnet."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from ..net import Network, UDPNetwork
from .node import DHT, DHTConfig


class Testnet:
    def __init__(self, network: Network, host: str):
        self.network = network
        self.host = host
        self.nodes: list[DHT] = []
        self.bootstrap: list[tuple[str, int]] = []

    async def add_persistent(self) -> DHT:
        node = DHT(DHTConfig(bootstrap=tuple(self.bootstrap), host=self.host, ephemeral=False, firewalled=False),
                   self.network)
        await node.ready()
        if not self.bootstrap:
            self.bootstrap.append(node.address)
        self.nodes.append(node)
        return node

    async def create_node(self, **opts) -> DHT:
        """An extra (by default ephemeral) node joined through the testnet."""
        cfg = dict(bootstrap=tuple(self.bootstrap), host=self.host, ephemeral=True)
        cfg.update(opts)
        node = DHT(DHTConfig(**cfg), self.network)
        await node.ready()
        self.nodes.append(node)
        return node

    async def destroy(self) -> None:
        for node in reversed(self.nodes):
            await node.destroy()
        self.nodes.clear()

    def __iter__(self):
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)


@asynccontextmanager
async def testnet(n: int = 10, network: Network | None = None, host: str = "127.0.0.1", parallel: int = 1):
    """Start n persistent nodes (the first one is the bootstrap node); destroy them on exit.
    `parallel` > 1 bootstraps that many nodes at a time after the first."""
    net = Testnet(network or UDPNetwork(), host)
    try:
        if n > 0:
            await net.add_persistent()
        while len(net.nodes) < n:
            batch = min(parallel, n - len(net.nodes))
            await asyncio.gather(*[net.add_persistent() for _ in range(batch)])
        yield net
    finally:
        await net.destroy()
