"""`Connection`: the secure, message-framed connection between two peers.

It joins an established UDX stream and a finished Noise handshake into
hyperdht's secret-stream: every `write(message)` is one encrypted frame and
arrives as one message. Silence is filled with keepalive frames every
`keepalive` seconds and a peer that stays silent for `timeout` seconds is
declared dead, so a vanished peer is seen as closed within a bounded time.

Wiring under the DHT handshake (client side; the server mirrors it):

    stream = mux.create_stream()                     # its id goes in our payload
    noise = NoiseWrap(keypair, server_public_key)
    msg1 = noise.send(NoisePayload(udx=UdxInfo(id=stream.local_id), ...))
    remote = noise.recv(msg2)                        # CryptoError if forged
    stream.connect(remote.udx.id, server_address)    # server: connect(id) and the
    conn = Connection(stream, noise.final())         # first packet gives the address

Reading: `async for message in conn` / `await conn.recv()`, or push:
`conn.on_message = fn`, or `conn.deliver_to(on_message, on_done)` (queued
messages first, then each as its packet is processed; on_done once at the end).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ClosedError, CryptoError, DecodeError, TimeoutError_
from .noise import NoiseResult
from .secret_stream import MAX_FRAME, SecretStream
from .udx.stream import UDXStream


@dataclass(frozen=True)
class ConnectionConfig:
    keepalive: float = 5.0  # send an empty frame after this much write silence
    timeout: float = 20.0  # close when nothing arrives for this long (0 = never)
    max_frame: int = MAX_FRAME  # largest frame accepted from the peer (bytes)
    close_timeout: float = 10.0  # close(): destroy if the peer has not ended by then


class Connection:
    """A secret-stream over UDX (see the module doc). Attributes:

    public_key, remote_public_key, handshake_hash, is_initiator, stream (the UDX
    stream), counters; `closed` is a future whose result is None after a clean
    close or the exception that ended the connection (never raised by it).
    """

    def __init__(self, stream: UDXStream, noise: NoiseResult, config: ConnectionConfig = ConnectionConfig()):
        self._loop = asyncio.get_running_loop()
        self.stream = stream
        self.config = config
        self.public_key = noise.public_key
        self.remote_public_key = noise.remote_public_key
        self.handshake_hash = noise.handshake_hash
        self.is_initiator = noise.is_initiator
        self.holepunch_secret = noise.holepunch_secret
        self._ss = SecretStream(noise.is_initiator, noise.handshake_hash, noise.tx, noise.rx, max_frame=config.max_frame)
        self.counters = self._ss.counters
        self.closed: asyncio.Future = self._loop.create_future()
        self.close_error: BaseException | None = None
        self.on_message: Callable[[bytes], None] | None = None
        self.on_datagram: Callable[[bytes], None] | None = None
        self.on_close: Callable[[BaseException | None], None] | None = None
        self._inbox: deque[bytes] = deque()
        self._on_done: Callable[[BaseException | None], None] | None = None
        self._waiter: asyncio.Future | None = None
        self._ending = False
        now = self._loop.time()
        self._last_rx = self._last_tx = now
        self._timer: asyncio.TimerHandle | None = None
        stream.on_data = self._on_data
        stream.on_end = self._on_end
        stream.on_close = self._on_stream_close
        stream.on_message = self._on_udx_message
        if stream.engine.closed:
            self._finish(stream.engine.close_error or ClosedError("UDX stream already closed"))
            return
        stream.write(self._ss.header_frame)
        self._arm_timer()
        # the peer may have spoken between the stream's connect and now
        for chunk in stream.take_buffered():
            self._on_data(memoryview(chunk))
        if stream._eof and not self.closed.done():
            self._on_end()

    # ------------------------------------------------------------ writing

    def write(self, message: bytes) -> bool:
        """Send one message (one frame); False means `await drain()` before more.

        Raises ClosedError once closed, EncodeError above 16 MiB - 18 bytes."""
        if self.closed.done() or self._ending:
            raise ClosedError("connection is closed")
        self._last_tx = self._loop.time()
        return self.stream.write(self._ss.encrypt(message))

    async def drain(self) -> None:
        """Wait for UDX backpressure to clear; raises ClosedError if the connection ends."""
        try:
            await self.stream.drain()
        except ClosedError as e:
            raise ClosedError("connection is closed") from self.close_error or e

    def send(self, datagram: bytes) -> None:
        """Unordered, unreliable encrypted datagram (secret-stream `send`)."""
        if self.closed.done():
            raise ClosedError("connection is closed")
        self.stream.send(self._ss.seal_datagram(datagram))

    # ------------------------------------------------------------ reading

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        while not self._inbox:
            if self.closed.done() or self.stream._eof:
                raise StopAsyncIteration
            self._waiter = self._loop.create_future()
            await self._waiter
        return self._inbox.popleft()

    async def recv(self) -> bytes:
        """The next message; raises ClosedError when the connection has ended."""
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            raise ClosedError("connection is closed") from self.close_error

    def deliver_to(self, on_message: Callable[[bytes], None],
                   on_done: Callable[[BaseException | None], None]) -> None:
        """Push reading: `on_message(m)` for every message (those already queued
        first), called as the packet is processed rather than one loop turn
        later through a task; `on_done(exc)` once no more will come (the peer
        ended, or the connection closed: None, or what closed it)."""
        self.on_message = on_message
        self._on_done = on_done
        while self._inbox and self.on_message is on_message:
            on_message(self._inbox.popleft())
        if self.closed.done() or self.stream._eof:
            self._done(self.close_error)

    def _done(self, exc: BaseException | None) -> None:
        cb, self._on_done = self._on_done, None
        if cb is not None:
            cb(exc)

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def _on_data(self, data: memoryview) -> None:
        self._last_rx = self._loop.time()
        try:
            messages = self._ss.feed(data)
        except (CryptoError, DecodeError) as e:
            self.destroy(e)
            return
        cb = self.on_message
        if cb is not None:
            for m in messages:
                cb(m)
        elif messages:
            self._inbox.extend(messages)
            self._wake()

    def _on_udx_message(self, data: bytes) -> None:
        self._last_rx = self._loop.time()
        try:
            m = self._ss.open_datagram(data)
        except CryptoError:
            return  # counted by the secret-stream; a forged datagram is dropped
        if self.on_datagram is not None:
            self.on_datagram(m)

    def _on_end(self) -> None:
        self._wake()
        self._done(None)
        if not self._ending:  # no half-open connections: answer the peer's END
            self._ending = True
            self.stream.end()

    # ------------------------------------------------------------ closing

    async def close(self) -> None:
        """Graceful close: END our side, wait for the peer's (destroy after close_timeout)."""
        if not self.closed.done() and not self._ending:
            self._ending = True
            self.stream.end()
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), self.config.close_timeout)
        except asyncio.TimeoutError:
            self.destroy(TimeoutError_("peer did not close in time"))

    def destroy(self, exc: BaseException | None = None) -> None:
        """Abort now (the peer gets a UDX DESTROY)."""
        if self.closed.done():
            return
        self.stream.destroy(exc)
        self._finish(exc)

    def _on_stream_close(self, exc: BaseException | None) -> None:
        self._finish(exc)

    def _finish(self, exc: BaseException | None) -> None:
        if self.closed.done():
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.close_error = exc
        self.closed.set_result(exc)
        self._wake()
        self._done(exc)
        if self.on_close is not None:
            self.on_close(exc)

    # ------------------------------------------------------------ keepalive / dead peer

    def _arm_timer(self) -> None:
        cfg = self.config
        ds = []
        if cfg.keepalive > 0:
            ds.append(self._last_tx + cfg.keepalive)
        if cfg.timeout > 0:
            ds.append(self._last_rx + cfg.timeout)
        if ds:
            self._timer = self._loop.call_at(min(ds), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.closed.done():
            return
        now = self._loop.time()
        cfg = self.config
        if cfg.timeout > 0 and now - self._last_rx >= cfg.timeout:
            self.destroy(TimeoutError_(f"peer silent for {cfg.timeout:g} s"))
            return
        if cfg.keepalive > 0 and now - self._last_tx >= cfg.keepalive and not self._ending:
            self._last_tx = now
            self.stream.write(self._ss.encrypt(b""))
        self._arm_timer()
