"""Datagram networks: the real one (asyncio UDP) and the interface the fakes share.

A `Network` binds endpoints; an endpoint sends datagrams and hands received ones
to the `on_datagram(data, addr)` callback given at bind time. The DHT, UDX and
every simulation are written against this interface, so a test can swap the
real UDP stack for `mesh.sim.SimNetwork` and run hundreds of nodes in one
process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from .encoding import Address

OnDatagram = Callable[[bytes, Address], None]


class DatagramEndpoint(Protocol):
    local_address: Address

    def sendto(self, data: bytes, addr: Address) -> None: ...

    def close(self) -> None: ...


class Network(Protocol):
    async def bind(self, host: str, port: int, on_datagram: OnDatagram) -> DatagramEndpoint: ...


LOOPBACK_PREFIX = "127."


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: OnDatagram):
        self.on_datagram = on_datagram
        self.errors = 0

    def datagram_received(self, data: bytes, addr) -> None:
        self.on_datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        # ICMP port-unreachable and friends: the request timeout handles them.
        self.errors += 1


class UDPEndpoint:
    """A bound UDP socket. Sends to non-loopback hosts are refused unless allowed."""

    def __init__(self, transport: asyncio.DatagramTransport, protocol: _UDPProtocol, allow_remote: bool):
        self._transport = transport
        self._protocol = protocol
        self._allow_remote = allow_remote
        sock = transport.get_extra_info("sockname")
        self.local_address: Address = (sock[0], sock[1])
        self.refused_sends = 0

    def sendto(self, data: bytes, addr: Address) -> None:
        if not self._allow_remote and not addr[0].startswith(LOOPBACK_PREFIX):
            self.refused_sends += 1
            return
        if not self._transport.is_closing():
            self._transport.sendto(data, addr)

    def close(self) -> None:
        self._transport.close()


class UDPNetwork:
    """The real network. `allow_remote=False` (the default) confines traffic to 127.0.0.0/8."""

    def __init__(self, allow_remote: bool = False):
        self.allow_remote = allow_remote

    async def bind(self, host: str, port: int, on_datagram: OnDatagram) -> UDPEndpoint:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _UDPProtocol(on_datagram), local_addr=(host, port)
        )
        return UDPEndpoint(transport, protocol, self.allow_remote)
