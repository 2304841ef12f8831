"""An in-memory connected pair with the secure Connection's interface, for tests.

`pipe()` returns (a, b): what one writes the other reads, one message per
write, in order. `drain()` blocks while more than `high_water` bytes are unread
by the peer, so a slow reader (`slow_reader=True`: b reads only as many
messages as the test allows with `b.release(n)`) exercises backpressure. Keys
and the handshake hash are random; `a` is the initiator.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque

from ..crypto import keypair
from ..errors import ClosedError


class PipeConnection:
    def __init__(self, public_key: bytes, remote_public_key: bytes, handshake_hash: bytes, is_initiator: bool,
                 high_water: int):
        self.public_key = public_key
        self.remote_public_key = remote_public_key
        self.handshake_hash = handshake_hash
        self.is_initiator = is_initiator
        self.high_water = high_water
        self.peer: PipeConnection
        self._loop = asyncio.get_running_loop()
        self._inbox: deque[bytes] = deque()
        self._unread = 0  # bytes in our inbox, what the peer's drain() watches
        self._reader: asyncio.Future | None = None
        self._drainers: list[asyncio.Future] = []
        self._credit: int | None = None  # slow reader: messages it may still read
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self.error: BaseException | None = None
        self.bytes_written = 0

    @staticmethod
    def _wake(fut: asyncio.Future | None) -> None:
        if fut is not None and not fut.done():
            fut.set_result(None)

    # ------------------------------------------------------------ sending

    def write(self, message: bytes) -> bool:
        """Queue one message for the peer; False when the caller should drain()."""
        if self.closed.done():
            raise ClosedError("connection closed")
        peer = self.peer
        message = bytes(message)
        self.bytes_written += len(message)
        peer._inbox.append(message)
        peer._unread += len(message)
        self._wake(peer._reader)
        return peer._unread <= self.high_water

    async def drain(self) -> None:
        """Wait until the peer has fewer than high_water bytes unread (or the pipe closed)."""
        peer = self.peer
        while peer._unread > self.high_water and not self.closed.done():
            fut = self._loop.create_future()
            peer._drainers.append(fut)
            await fut

    # ------------------------------------------------------------ receiving

    def __aiter__(self) -> PipeConnection:
        return self

    async def __anext__(self) -> bytes:
        while True:
            if self.closed.done():
                raise StopAsyncIteration
            if self._inbox and (self._credit is None or self._credit > 0):
                message = self._inbox.popleft()
                self._unread -= len(message)
                if self._credit is not None:
                    self._credit -= 1
                if self._drainers and self._unread <= self.high_water:
                    drainers, self._drainers = self._drainers, []
                    for fut in drainers:
                        self._wake(fut)
                return message
            self._reader = self._loop.create_future()
            await self._reader
            self._reader = None

    def set_slow_reader(self) -> None:
        """From now on read only as many messages as release() allows."""
        self._credit = 0

    def release(self, n: int | None = None) -> None:
        """Let a slow reader read `n` more messages (None: stop being slow)."""
        self._credit = None if n is None else (self._credit or 0) + n
        self._wake(self._reader)

    @property
    def unread_bytes(self) -> int:
        return self._unread

    # ------------------------------------------------------------ closing

    async def close(self) -> None:
        self.destroy()

    def destroy(self, exc: BaseException | None = None) -> None:
        """Close both ends at once, as a destroyed stream does."""
        for side in (self, self.peer):
            if not side.closed.done():
                side.error = exc
                side.closed.set_result(None)
                side._wake(side._reader)
                for fut in side._drainers:
                    side._wake(fut)
                side._drainers = []
            # the other side's writer may wait on our inbox
        for side in (self, self.peer):
            for fut in side.peer._drainers:
                side._wake(fut)


def pipe(*, high_water: int = 64 * 1024, slow_reader: bool = False) -> tuple[PipeConnection, PipeConnection]:
    """A connected pair (initiator, responder); slow_reader makes the responder slow."""
    ka, kb = keypair(), keypair()
    hh = os.urandom(64)
    a = PipeConnection(ka.public_key, kb.public_key, hh, True, high_water)
    b = PipeConnection(kb.public_key, ka.public_key, hh, False, high_water)
    a.peer, b.peer = b, a
    if slow_reader:
        b.set_slow_reader()
    return a, b
