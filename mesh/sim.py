"""Simulation fakes: a virtual-time asyncio loop and an in-memory datagram network.

`VirtualTimeLoop` is an ordinary asyncio loop whose clock jumps to the next
timer whenever nothing is ready, so `asyncio.sleep(1200)` in a simulation costs
no wall time, and every engine that reads `loop.time()` sees the fake clock.
`SimNetwork` delivers datagrams between endpoints in the same loop with
configurable latency, loss, duplication and reordering, from a seeded RNG so a
failing run can be replayed. Use `run(coro)` to drive a simulation to completion.
"""

from __future__ import annotations

import asyncio
import random
import selectors
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .encoding import Address
from .net import OnDatagram

T = TypeVar("T")


class _VirtualSelector(selectors.DefaultSelector):
    """Polls real fds without blocking; a would-be wait advances virtual time."""

    def __init__(self, loop: "VirtualTimeLoop"):
        super().__init__()
        self._vloop = loop

    def select(self, timeout=None):
        events = super().select(0)
        if not events and timeout is None:
            # Nothing scheduled: only real I/O could wake us; wait for it for real.
            return super().select(None)
        if not events and timeout and timeout > 0:
            self._vloop._advance(timeout)
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on a virtual clock that starts at `start` seconds."""

    def __init__(self, start: float = 1_000.0):
        self._virtual_now = start
        super().__init__(_VirtualSelector(self))

    def time(self) -> float:
        return self._virtual_now

    def _advance(self, dt: float) -> None:
        self._virtual_now += dt


def run(main: Awaitable[T] | Callable[[], Awaitable[T]], start: float = 1_000.0) -> T:
    """Run a coroutine to completion on a fresh VirtualTimeLoop and close it."""
    loop = VirtualTimeLoop(start)
    try:
        asyncio.set_event_loop(loop)
        coro = main() if callable(main) else main
        return loop.run_until_complete(coro)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


class SimEndpoint:
    def __init__(self, net: "SimNetwork", address: Address, on_datagram: OnDatagram):
        self._net = net
        self.local_address = address
        self.on_datagram = on_datagram
        self.closed = False

    def sendto(self, data: bytes, addr: Address) -> None:
        if not self.closed:
            self._net._send(self.local_address, bytes(data), addr)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._net._endpoints.pop(self.local_address, None)


class SimNetwork:
    """In-memory datagrams between endpoints of one event loop.

    latency: one-way delay in seconds (plus up to `jitter`);
    loss / duplicate / reorder: probabilities per datagram (a reordered datagram
    is held back by an extra `reorder_delay`).
    """

    def __init__(
        self,
        *,
        latency: float = 0.001,
        jitter: float = 0.0,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        reorder_delay: float = 0.005,
        seed: int = 1,
    ):
        self.latency = latency
        self.jitter = jitter
        self.loss = loss
        self.duplicate = duplicate
        self.reorder = reorder
        self.reorder_delay = reorder_delay
        self.rng = random.Random(seed)
        self._endpoints: dict[Address, SimEndpoint] = {}
        self._next_port = 20_000
        self.sent = 0
        self.dropped = 0
        self.delivered = 0

    async def bind(self, host: str, port: int, on_datagram: OnDatagram) -> SimEndpoint:
        if port == 0:
            while (host, self._next_port) in self._endpoints:
                self._next_port += 1
            port = self._next_port
            self._next_port += 1
        addr = (host, port)
        if addr in self._endpoints:
            raise OSError(98, f"address already in use: {host}:{port}")
        ep = SimEndpoint(self, addr, on_datagram)
        self._endpoints[addr] = ep
        return ep

    def _send(self, src: Address, data: bytes, dst: Address) -> None:
        self.sent += 1
        rng = self.rng
        if self.loss and rng.random() < self.loss:
            self.dropped += 1
            return
        copies = 2 if self.duplicate and rng.random() < self.duplicate else 1
        loop = asyncio.get_running_loop()
        for _ in range(copies):
            delay = self.latency + (rng.random() * self.jitter if self.jitter else 0.0)
            if self.reorder and rng.random() < self.reorder:
                delay += self.reorder_delay
            loop.call_later(delay, self._deliver, src, data, dst)

    def _deliver(self, src: Address, data: bytes, dst: Address) -> None:
        ep = self._endpoints.get(dst)
        if ep is None or ep.closed:
            self.dropped += 1
            return
        self.delivered += 1
        ep.on_datagram(data, src)
