"""The asyncio driver of one connection's protomux: reads messages, writes output.

A Session owns reading its connection: by push where the connection offers it
(`Connection.deliver_to`: messages are handled as their packet is processed),
else with a reader task (`async for message in conn`); every protocol on that
connection registers through it. `session_for(conn)` returns
the connection's one Session. A protomux rule break destroys the connection
with the ProtocolError, as protomux does; the end of the connection closes
every channel.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import ClosedError, DecodeError
from ..eventloop import at_iteration_end
from ..net import at_batch_end
from .mux import ChannelClosed, ChannelMessage, ChannelOpened, Mux

log = logging.getLogger(__name__)


class Connection(Protocol):
    """What the RPC layer needs from a secure connection (see HELPERS.md)."""

    remote_public_key: bytes
    public_key: bytes
    handshake_hash: bytes
    is_initiator: bool

    def write(self, message: bytes) -> Any: ...
    async def drain(self) -> None: ...
    def __aiter__(self) -> Any: ...
    def destroy(self, exc: BaseException | None = None) -> None: ...


class ChannelHandler(Protocol):
    """What a Session calls on the object in a channel's user_data."""

    def on_open(self) -> None: ...
    def on_message(self, type_: int, payload: memoryview) -> None: ...
    def on_close(self, remote: bool) -> None: ...


_sessions: weakref.WeakKeyDictionary[Any, Session] = weakref.WeakKeyDictionary()
_by_id: dict[int, Session] = {}  # for connection objects that cannot be weakly referenced


def session_for(conn: Connection) -> Session:
    """The Session of `conn`, created on first use."""
    try:
        s = _sessions.get(conn)
        if s is None:
            s = _sessions[conn] = Session(conn)
        return s
    except TypeError:
        s = _by_id.get(id(conn))
        if s is None or s.conn is not conn:
            s = _by_id[id(conn)] = Session(conn)
        return s


# A corked batch above this is written before a drain, so that the wait covers it.
_LARGE_BATCH = 64 * 1024


class Session:
    def __init__(self, conn: Connection, cork_writes: bool = True):
        self.conn = conn
        # the messages of one event-loop iteration go out at its end as one
        # protomux batch (one secret-stream frame), as Node does when it answers
        # a batch. Not the first one at once: measured over a worker connection
        # (mlp-mid, 32 callers), a lone first request reached the worker ahead of
        # its turn's other 31 and ran as a 1-row batch every time (mean batch 10
        # instead of 31, 0.74 against 0.55 worker CPU-s/s at the same rate).
        self.cork_writes = cork_writes
        self._corked = False
        self._tick_sent = False
        self.mux = Mux(pair=self._pair)
        self.closed = False
        self.error: BaseException | None = None
        # (protocol, id or None) -> fn(id, handshake) that opens a channel for a remote open
        self._factories: dict[tuple[str, bytes | None], Callable[[bytes | None, bytes], None]] = {}
        self._deferred: set[tuple[str, bytes | None]] = set()
        self._draining: asyncio.Future | None = None
        self._write_blocked = False  # the connection's last write asked for a drain
        self._reader: asyncio.Task | None = None
        self._pushed = False  # the connection calls us per message (Connection.deliver_to)

    # ------------------------------------------------------------ API for protocols

    def open_channel(self, protocol: str, id: bytes | None, handshake: bytes, handler: ChannelHandler):  # noqa: A002
        """Open a channel whose events go to `handler`; starts reading the connection."""
        if self.closed:
            raise ClosedError("connection closed")
        ch = self.mux.open_channel(protocol, id, handshake, user_data=handler)
        self.flush()
        self._start()
        return ch

    def on_remote_open(self, protocol: str, id: bytes | None,  # noqa: A002
                       factory: Callable[[bytes | None, bytes], None]) -> None:
        """Call `factory(id, handshake)` for an unpaired remote open of `protocol`
        (and `id`, or any id when None); it may open a matching channel."""
        self._factories[(protocol, id)] = factory
        self._start()

    def defer_remote_open(self, protocol: str, id: bytes | None) -> None:  # noqa: A002
        """Keep a remote open of (protocol, id) pending, with its messages buffered,
        until a local channel opens for it (instead of rejecting it at once)."""
        self._deferred.add((protocol, id))

    def send(self, channel: Any, type_: int, payload: bytes) -> bool:
        if self.cork_writes and not self.closed and not self._corked:
            if not self._tick_sent:
                self._tick_sent = True
                # Inside the handling of received packets (a handler that answered
                # at once), the batch ends with that handling; else with this
                # loop iteration (mesh.eventloop).
                if not at_batch_end(self._end_tick):
                    at_iteration_end(self._end_tick)
            self._corked = True
            self.mux.cork()
        ok = self.mux.send(channel, type_, payload)
        self.flush()
        return ok

    def _end_tick(self) -> None:
        self._tick_sent = False
        self.uncork()

    def uncork(self) -> None:
        """Send the batch collected since the first send of this loop iteration."""
        if self._corked:
            self._corked = False
            self.mux.uncork()
            self.flush()

    def close_channel(self, channel: Any) -> None:
        self.mux.close(channel)
        self.flush()

    def flush(self) -> None:
        """Write what the mux produced, then hand its events to the channel handlers."""
        out = self.mux.data_to_send()
        if out and not self.closed:
            for message in out:
                try:
                    if self.conn.write(message) is False:
                        self._write_blocked = True
                except (ClosedError, ConnectionError, OSError) as e:
                    self._fail(e)
                    break
        for ev in self.mux.events():
            handler = ev.channel.user_data
            if type(ev) is ChannelMessage:
                handler.on_message(ev.type, ev.payload)
            elif type(ev) is ChannelOpened:
                handler.on_open()
            elif type(ev) is ChannelClosed:
                handler.on_close(ev.remote)

    def must_drain(self) -> bool:
        """Would `drain()` have anything to do (a large batch to write, or a write
        that reported a full buffer)? When False, callers may skip awaiting it."""
        return self._write_blocked or (self._corked and self.mux.batch_bytes > _LARGE_BATCH)

    async def drain(self) -> None:
        """Wait while the connection's send buffer is full. A batch that has grown
        large is written first so that the wait covers it."""
        if self._corked and self.mux.batch_bytes > _LARGE_BATCH:
            self.uncork()
        if self.closed:
            return
        # One conn.drain() at a time; concurrent callers (one per in-flight request)
        # share its result, so a transport that keeps a single drain waiter works too.
        if self._draining is not None:
            await asyncio.shield(self._draining)
            return
        fut = self._draining = asyncio.get_running_loop().create_future()
        try:
            await self.conn.drain()
            self._write_blocked = False
        finally:
            self._draining = None
            fut.set_result(None)

    # ------------------------------------------------------------ reading

    def _pair(self, protocol: str, id: bytes | None, handshake: bytes) -> bool:  # noqa: A002
        factory = self._factories.get((protocol, id)) or self._factories.get((protocol, None))
        if factory is not None:
            factory(id, handshake)
        return (protocol, id) in self._deferred

    def _start(self) -> None:
        if self._reader is not None or self._pushed or self.closed:
            return
        deliver_to = getattr(self.conn, "deliver_to", None)
        if deliver_to is not None:
            # Handled as the packet is processed: a request is answered (and a
            # response resolves its caller) without a loop turn through a reader task.
            self._pushed = True
            deliver_to(self._on_message, self._on_done)
        else:
            self._reader = asyncio.get_running_loop().create_task(self._read())

    def _on_message(self, message: bytes) -> None:
        if self.closed:
            return
        try:
            self.mux.receive(message)
            self.flush()
        except DecodeError as e:  # ProtocolError is a DecodeError: fatal, as in protomux
            log.debug("protomux error, destroying connection: %s", e)
            self.error = e
            self._shutdown()
            self.conn.destroy(e)
        except (ClosedError, ConnectionError, OSError) as e:
            self._fail(e)

    def _on_done(self, exc: BaseException | None) -> None:
        if self.error is None and exc is not None:
            self.error = exc
        self._shutdown()

    async def _read(self) -> None:
        try:
            async for message in self.conn:
                self.mux.receive(message)
                self.flush()
        except DecodeError as e:  # ProtocolError is a DecodeError: fatal, as in protomux
            log.debug("protomux error, destroying connection: %s", e)
            self.error = e
            self.conn.destroy(e)
        except (ClosedError, ConnectionError, OSError) as e:
            self.error = e
        finally:
            self._shutdown()

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        self._shutdown()

    def _shutdown(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._corked = False
        if _by_id.get(id(self.conn)) is self:
            del _by_id[id(self.conn)]
        self.mux.shutdown()
        self.flush()
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
