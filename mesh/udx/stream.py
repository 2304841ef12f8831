"""The asyncio face of one UDX stream: a `UDXEngine` plus a timer, a read
queue and write backpressure. Streams are made by `UDXMux.create_stream`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..encoding import Address
from ..errors import ClosedError
from .engine import UDXConfig, UDXEngine

if TYPE_CHECKING:
    from .mux import UDXMux

# Packets held for a stream before its peer's id is known: the peer's initial
# window at most (it cannot send more before hearing from us).
EARLY_PACKETS = 32


class UDXStream:
    """A reliable, ordered byte stream over a `UDXMux`.

    write(data) -> bool (False: wait for `drain()`), `await read()` -> bytes
    (b"" at the peer's END), `async for chunk in stream`, `end()`, `destroy()`,
    `send(message)` (unreliable datagram), `closed` (a future whose result is
    None after a graceful close or the exception that closed the stream).
    Setting `on_data` (a callable taking a memoryview valid only during the
    call) bypasses the read queue; `on_end`, `on_message`, `on_close` likewise.
    `on_connected` runs once the peer's address is known: in `connect` when it
    is given, else after the first packet from the peer has been processed.

    A stream whose id goes out before the peer's id is known (the client side of
    a handshake: the server may send before its reply is read) calls
    `hold_early()`: packets that arrive before `connect` are kept (a bounded
    number, the rest dropped and counted in the mux's `early_dropped`) and
    processed by `connect`.
    """

    def __init__(self, mux: "UDXMux", local_id: int, config: UDXConfig):
        self._mux = mux
        self._loop = asyncio.get_running_loop()
        self.engine = UDXEngine(local_id, self._transmit, _EngineListener(self), config)
        self.local_id = local_id
        self.remote_id: int | None = None
        self.remote_address: Address | None = None
        self._pending_seq = (0, 0)
        self._chunks: deque[bytes] = deque()
        self._eof = False
        self._read_waiter: asyncio.Future | None = None
        self._drain_waiter: asyncio.Future | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.closed: asyncio.Future = self._loop.create_future()
        self.on_data: Callable[[memoryview], None] | None = None
        self.on_end: Callable[[], None] | None = None
        self.on_message: Callable[[bytes], None] | None = None
        self.on_close: Callable[[BaseException | None], None] | None = None
        self.on_connected: Callable[[], None] | None = None
        self._early: list[tuple["UDXMux", bytes, Address]] | None = None
        self._early_limit = 0
        # Set before connecting when the peer reads datagrams larger than any
        # link MTU: used if the peer's address turns out to be on loopback.
        self.loopback_mtu: int | None = None

    # ------------------------------------------------------------ setup

    @property
    def connected(self) -> bool:
        return self.engine.remote_id is not None

    @property
    def counters(self) -> dict[str, int]:
        return self.engine.counters

    def hold_early(self, limit: int = EARLY_PACKETS) -> None:
        """Keep up to `limit` packets that arrive before `connect`; `connect` processes them."""
        if self.remote_id is None and self._early is None:
            self._early = []
            self._early_limit = limit

    def connect(self, remote_id: int, address: Address | None = None, *, seq: int = 0, ack: int = 0) -> None:
        """Set the peer's stream id; with no address, the first packet for us supplies it."""
        self.remote_id = remote_id
        self._pending_seq = (seq, ack)
        if address is not None:
            self._connect_to(address)
            self._connected()
        early, self._early = self._early, None
        for mux, data, addr in early or ():
            mux.on_datagram(data, addr)  # through the mux (socket) it arrived on

    def _hold(self, mux: "UDXMux", data: bytes, addr: Address) -> bool:
        """A packet before `connect`: kept if holding and there is room."""
        early = self._early
        if early is None or len(early) >= self._early_limit:
            return False
        early.append((mux, data, addr))
        return True

    def _connect_to(self, address: Address) -> None:
        assert self.remote_id is not None
        self.remote_address = address
        if self.loopback_mtu is not None and address[0].startswith("127."):
            self.engine.set_mtu(self.loopback_mtu)
        seq, ack = self._pending_seq
        self.engine.connect(self.remote_id, self._loop.time(), seq, ack)
        self._schedule()

    def _connected(self) -> None:
        cb, self.on_connected = self.on_connected, None
        if cb is not None and not self.engine.closed:
            cb()

    # ------------------------------------------------------------ writing

    def write(self, data: bytes) -> bool:
        """Queue bytes; False means the buffer is full: `await drain()`."""
        mux = self._mux
        mux.hold()
        try:
            ok = self.engine.write(data, self._loop.time())
        finally:
            mux.release()
        self._schedule()
        return ok

    async def drain(self) -> None:
        """Wait until the write buffer is below its high-water mark; raises ClosedError."""
        e = self.engine
        while e.write_buffered >= e.config.high_water:
            if e.closed:
                raise ClosedError("UDX stream closed") from e.close_error
            e._want_writable = True
            self._drain_waiter = self._loop.create_future()
            await self._drain_waiter
        if e.closed:
            raise ClosedError("UDX stream closed") from e.close_error

    def end(self) -> None:
        self.engine.end(self._loop.time())
        self._schedule()

    def send(self, message: bytes) -> None:
        """Unreliable datagram (UDX MESSAGE)."""
        self.engine.send_message(message, self._loop.time())

    def destroy(self, exc: BaseException | None = None) -> None:
        self.engine.destroy(self._loop.time(), exc)

    # ------------------------------------------------------------ reading

    async def read(self) -> bytes:
        """The next chunk of bytes; b"" once the peer ended; raises if destroyed."""
        while not self._chunks:
            if self._eof:
                return b""
            if self.engine.closed:
                if self.engine.close_error is not None:
                    raise ClosedError("UDX stream closed") from self.engine.close_error
                return b""
            self._read_waiter = self._loop.create_future()
            await self._read_waiter
        chunk = self._chunks.popleft()
        self.engine.consumed(len(chunk), self._loop.time())
        return chunk

    def take_buffered(self) -> list[bytes]:
        """Hand over what arrived before an `on_data` callback was set (and mark it read)."""
        chunks = list(self._chunks)
        self._chunks.clear()
        n = sum(map(len, chunks))
        if n:
            self.engine.consumed(n, self._loop.time())
        return chunks

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        chunk = await self.read()
        if not chunk:
            raise StopAsyncIteration
        return chunk

    # ------------------------------------------------------------ engine events

    def _transmit(self, data: bytes) -> None:
        self._mux.send(data, self.remote_address)

    def _wake_reader(self) -> None:
        w = self._read_waiter
        if w is not None:
            self._read_waiter = None
            if not w.done():
                w.set_result(None)

    def _engine_data(self, data: memoryview) -> None:
        cb = self.on_data
        if cb is not None:
            cb(data)
            self.engine.consumed(len(data), self._loop.time())
        else:
            self._chunks.append(bytes(data))
            self._wake_reader()

    def _engine_end(self) -> None:
        self._eof = True
        self._wake_reader()
        if self.on_end is not None:
            self.on_end()

    def _engine_message(self, data: memoryview) -> None:
        if self.on_message is not None:
            self.on_message(bytes(data))

    def _engine_writable(self) -> None:
        w = self._drain_waiter
        if w is not None:
            self._drain_waiter = None
            if not w.done():
                w.set_result(None)

    def _engine_close(self, exc: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._early = None
        self._mux._forget(self)
        self._wake_reader()
        self._engine_writable()
        if not self.closed.done():
            self.closed.set_result(exc)
        if self.on_close is not None:
            self.on_close(exc)

    # ------------------------------------------------------------ timer

    def _schedule(self) -> None:
        d = self.engine.next_deadline()
        # A timer that fires with nothing due costs a wake-up of the process. On
        # a request/reply connection that was one per request: the delayed ACK
        # armed for the request, which the reply then carried. So a timer is
        # cancelled when nothing is due, and moved when it is more than 1 ms early.
        if d is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = self._timer_at = None
            return
        at = self._timer_at
        if at is None or d < at - 0.0005 or d > at + 0.001:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = d
            self._timer = self._loop.call_at(d, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        mux = self._mux
        mux.hold()
        try:
            self.engine.handle_timer(self._loop.time())
        finally:
            mux.release()
        self._schedule()


class _EngineListener:
    """Adapts engine callbacks to a UDXStream without name clashes with its public hooks."""

    __slots__ = ("on_data", "on_end", "on_message", "on_writable", "on_close")

    def __init__(self, s: UDXStream):
        self.on_data = s._engine_data
        self.on_end = s._engine_end
        self.on_message = s._engine_message
        self.on_writable = s._engine_writable
        self.on_close = s._engine_close
