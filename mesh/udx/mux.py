"""Routes UDX datagrams to streams by the receiver's stream id.

The mux owns no socket: it is given `send(data, addr)` and fed datagrams with
`on_datagram(data, addr)`, so it can share the DHT's UDP socket (datagrams
starting 0xff 0x01) or sit on any `mesh.net` endpoint (`UDXMux.bind`). A stream
whose peer id is known but whose address is not (`connect(remote_id)`) is
connected by the first packet that carries its id (PROTOCOL.md 3.4); a stream
that is not connected yet drops packets (`unconnected`) unless it holds them
(`UDXStream.hold_early`: `early_held`, or `early_dropped` once its buffer is full).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from ..encoding import Address
from ..net import DatagramEndpoint, Network
from . import packet as P
from .engine import UDXConfig
from .stream import UDXStream

_HEADER = P.HEADER


def _nothing() -> None:
    pass


class UDXMux:
    def __init__(
        self,
        send: Callable[[bytes, Address], None],
        config: UDXConfig = UDXConfig(),
        streams: dict[int, UDXStream] | None = None,
    ):
        self.send = send
        # Bracket a burst of sends (`hold()` ... `release()`) so that the socket
        # can pass them to the kernel together; no-ops unless `use_endpoint` set them.
        self.hold: Callable[[], None] = _nothing
        self.release: Callable[[], None] = _nothing
        self.config = config
        # Muxes of one node's several sockets may share one id table: an unconnected
        # stream then attaches to whichever socket its first packet arrives on.
        self.streams: dict[int, UDXStream] = {} if streams is None else streams
        self.endpoint: DatagramEndpoint | None = None
        self.counters = dict.fromkeys(
            ("garbage", "unknown_stream", "unconnected", "early_held", "early_dropped", "wrong_address"), 0)

    @classmethod
    async def bind(cls, network: Network, host: str = "127.0.0.1", port: int = 0, config: UDXConfig = UDXConfig()) -> "UDXMux":
        """A mux on its own endpoint of `network` (for tests, benchmarks, tools)."""
        mux = cls(lambda d, a: None, config)
        ep = await network.bind(host, port, mux.on_datagram)
        grow_buffers(ep)
        mux.endpoint = ep
        mux.send = ep.sendto
        mux.use_endpoint(ep)
        return mux

    def use_endpoint(self, ep: DatagramEndpoint) -> None:
        """Bracket bursts with `ep`'s hold/release when it has them (mesh.net.UDPEndpoint)."""
        hold, release = getattr(ep, "hold", None), getattr(ep, "release", None)
        if hold is not None and release is not None:
            self.hold, self.release = hold, release

    @property
    def address(self) -> Address | None:
        return self.endpoint.local_address if self.endpoint else None

    def create_stream(self, local_id: int | None = None, config: UDXConfig | None = None) -> UDXStream:
        """A new stream under `local_id` (random unused 32-bit id by default)."""
        if local_id is None:
            local_id = int.from_bytes(os.urandom(4), "little")
            while local_id in self.streams:
                local_id = int.from_bytes(os.urandom(4), "little")
        elif local_id in self.streams:
            raise ValueError(f"UDX stream id {local_id} is in use")
        s = UDXStream(self, local_id, config or self.config)
        self.streams[local_id] = s
        return s

    def on_datagram(self, data: bytes, addr: Address) -> bool:
        """Handle one datagram; False if it is not a UDX packet for a live stream."""
        if len(data) < 20 or data[0] != 0xFF or data[1] != 1:
            self.counters["garbage"] += 1
            return False
        _m, _v, typ, off, rid, rwnd, seq, ack = _HEADER.unpack_from(data)
        s = self.streams.get(rid)
        if s is None:
            self.counters["unknown_stream"] += 1
            return False
        if s.remote_address == addr:
            s.engine.receive(typ, off, rwnd, seq, ack, data, s._loop.time())
            s._schedule()
            return True
        if s.remote_address is not None:
            self.counters["wrong_address"] += 1
            return False
        if s.remote_id is None:
            if s._early is None:
                self.counters["unconnected"] += 1
                return False
            if not s._hold(self, data, addr):
                self.counters["early_dropped"] += 1
                return False
            self.counters["early_held"] += 1
            return True
        s._mux = self
        s._connect_to(addr)
        s.engine.receive(typ, off, rwnd, seq, ack, data, s._loop.time())
        s._schedule()
        s._connected()
        return True

    def _forget(self, s: UDXStream) -> None:
        if self.streams.get(s.local_id) is not s:
            return
        if s.engine.close_error is None and s.engine.config.linger > 0:
            # a clean close: stay to re-ack the peer's END in case our last ACK was lost
            s._loop.call_later(s.engine.config.linger, self._drop, s)
        else:
            del self.streams[s.local_id]

    def _drop(self, s: UDXStream) -> None:
        if self.streams.get(s.local_id) is s:
            del self.streams[s.local_id]

    def destroy_all(self) -> None:
        for s in list(self.streams.values()):
            s.destroy()

    def close(self) -> None:
        """Destroy every stream and close the endpoint if the mux owns one."""
        self.destroy_all()
        if self.endpoint is not None:
            self.endpoint.close()


def grow_buffers(ep: DatagramEndpoint, size: int = 1 << 21) -> None:
    """Best effort: socket buffers of at least 2 MiB. A burst of a peer's window
    overflows the default (208 KiB): the kernel drops it and the peer's congestion
    control backs off (measured: Node -> Python over a DHT socket with default
    buffers, 5-19 MB/s with reordering and duplicates; with 2 MiB, 60+ MB/s)."""
    grow = getattr(ep, "set_buffer_size", None)
    if grow is not None:
        grow(size)


async def wait_closed(stream: UDXStream, timeout: float) -> BaseException | None:
    return await asyncio.wait_for(asyncio.shield(stream.closed), timeout)
