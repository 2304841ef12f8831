"""protomux (sans-IO): channels over one message stream, wire-compatible with protomux 3.12.

Feed each received message to `receive()`; take what to send from
`data_to_send()` and what happened from `events()`. Nothing here does I/O or
reads a clock. The rules follow protomux's index.js:

* channel ids are the sender's local ids, numbered from 1 and reused when freed;
  an open must name a free remote slot at most one past the highest seen
  ("Invalid open message", fatal);
* opens pair by (protocol, id); a remote open with no local channel asks the
  `pair` hook, which may open one at once; if it does not, the open is rejected
  (not fatal). Messages for an opened-but-unpaired remote channel are buffered;
* a reject for an id we have not opened is fatal ("Invalid reject message");
  closes and messages for unknown ids are ignored;
* a received batch holding several messages is answered with a batch (the mux
  corks while it handles one).

Fatal errors raise ProtocolError (or DecodeError for malformed bytes): the
caller must destroy the connection, as protomux does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import mux_codec as mc
from .errors import DuplicateChannelError, ProtocolError

MAX_BUFFERED = 32 * 1024  # protomux pauses the stream past this many buffered bytes
MAX_BATCH = 8 * 1024 * 1024  # protomux flushes a batch at this size
BATCH_ITEM_LIMIT = 16 * 1024  # bigger messages skip the batch (no extra copy), order kept


class Channel:
    """One side of a protomux channel. `remote_handshake` is set when it pairs."""

    __slots__ = ("protocol", "id", "handshake", "remote_handshake", "local_id", "remote_id", "opened", "closed",
                 "user_data")

    def __init__(self, protocol: str, id: bytes | None, handshake: bytes, user_data: Any):  # noqa: A002
        self.protocol, self.id, self.handshake, self.user_data = protocol, id, handshake, user_data
        self.remote_handshake: bytes | None = None
        self.local_id = 0
        self.remote_id = 0
        self.opened = False
        self.closed = False

    def __repr__(self) -> str:
        return f"<Channel {self.protocol} local={self.local_id} remote={self.remote_id} opened={self.opened}>"


@dataclass(slots=True)
class _Pending:
    """A remote open that has not paired with a local channel yet."""
    protocol: str
    id: bytes | None
    handshake: bytes
    messages: list = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ChannelOpened:
    channel: Channel


@dataclass(frozen=True, slots=True)
class ChannelMessage:
    channel: Channel
    type: int
    payload: memoryview


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    channel: Channel
    remote: bool


Event = ChannelOpened | ChannelMessage | ChannelClosed
PairHook = Callable[[str, "bytes | None", bytes], "bool | None"]
MAX_PENDING_BUFFER = 4 * 1024 * 1024  # beyond this, a deferred open is rejected and its messages dropped


def _key(protocol: str, id: bytes | None) -> tuple[str, bytes]:  # noqa: A002
    return (protocol, id or b"")


class Mux:
    """The protomux state machine for one connection."""

    def __init__(self, pair: PairHook | None = None):
        # called on an unpaired remote open; may call open_channel(), or return True
        # to keep the open pending (buffered) for a local channel that opens later
        self.pair = pair
        self._local: dict[int, Channel] = {}
        self._local_len = 0
        self._free: list[int] = []
        self._outgoing: dict[tuple[str, bytes], deque[int]] = {}  # unpaired local ids by key
        self._remote: dict[int, Channel | _Pending] = {}
        self._remote_len = 0  # like protomux's _remote.length: opens may grow it by one
        self._incoming: dict[tuple[str, bytes], deque[int]] = {}  # pending remote ids by key
        self._tombstones: set[int] = set()  # local ids closed before they paired
        self._out: list[bytes] = []
        self._events: list[Event] = []
        self._cork = 0
        self._batch: list[tuple[int, bytes]] | None = None
        self._batch_size = 0
        self.buffered = 0
        self.counters: dict[str, int] = {}

    # ------------------------------------------------------------ outputs

    def data_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def events(self) -> list[Event]:
        ev, self._events = self._events, []
        return ev

    @property
    def corked(self) -> bool:
        return self._batch is not None

    @property
    def batch_bytes(self) -> int:
        """Roughly how many bytes the open batch holds."""
        return self._batch_size

    @property
    def paused(self) -> bool:
        """True while buffered messages for unpaired channels exceed protomux's limit."""
        return self.buffered > MAX_BUFFERED

    def _count(self, reason: str) -> None:
        self.counters[reason] = self.counters.get(reason, 0) + 1

    def _write(self, message: bytes) -> None:
        if self._batch is None:
            self._out.append(message)
            return
        if len(message) > BATCH_ITEM_LIMIT:
            self._flush_batch()
            self._out.append(message)
            return
        cid, rest = mc.split_channel(message)
        if self._batch_size + len(rest) >= MAX_BATCH:
            self._flush_batch()
        self._batch.append((cid, rest))
        self._batch_size += len(rest) + 10

    def _flush_batch(self) -> None:
        batch = self._batch
        self._batch, self._batch_size = [], 0
        if len(batch) == 1:  # a batch of one is sent as the plain message
            self._out.append(_unsplit(*batch[0]))
        elif batch:
            self._count("batches_sent")
            self._out.append(mc.encode_batch(batch))

    def cork(self) -> None:
        """Collect outgoing messages into one batch until the matching uncork()."""
        self._cork += 1
        if self._batch is None:
            self._batch, self._batch_size = [], 0

    def uncork(self) -> None:
        self._cork -= 1
        if self._cork == 0 and self._batch is not None:
            self._flush_batch()
            self._batch = None

    # ------------------------------------------------------------ local side

    def open_channel(self, protocol: str, id: bytes | None = None, handshake: bytes = b"",  # noqa: A002
                     user_data: Any = None) -> Channel:
        """Open a channel (sends the open); raises DuplicateChannelError if one is open."""
        key = _key(protocol, id)
        for ch in self._local.values():
            if _key(ch.protocol, ch.id) == key:
                raise DuplicateChannelError(f"a {protocol!r} channel with this id is already open")
        ch = Channel(protocol, id, handshake, user_data)
        if self._free:
            ch.local_id = self._free.pop()
        else:
            self._local_len += 1
            ch.local_id = self._local_len
        self._local[ch.local_id] = ch
        self._write(mc.encode_open(ch.local_id, protocol, id, handshake))
        incoming = self._incoming.get(key)
        if incoming:
            rid = incoming.popleft()
            pending = self._remote[rid]
            self._pair(ch, rid, pending)
        else:
            self._outgoing.setdefault(key, deque()).append(ch.local_id)
        return ch

    def send(self, channel: Channel, type_: int, payload: bytes) -> bool:
        """Send a message on a channel; False if the channel is closed."""
        if channel.closed:
            return False
        self._write(mc.encode_message(channel.local_id, type_, payload))
        return True

    def close(self, channel: Channel) -> None:
        if channel.closed:
            return
        self._write(mc.encode_close(channel.local_id))
        self._close(channel, remote=False)

    def shutdown(self) -> None:
        """The stream ended or was destroyed: every channel closes (as if remotely)."""
        for ch in list(self._local.values()):
            self._close(ch, remote=True)

    def _pair(self, ch: Channel, rid: int, pending: _Pending) -> None:
        ch.remote_id = rid
        ch.remote_handshake = pending.handshake
        ch.opened = True
        self._remote[rid] = ch
        self._events.append(ChannelOpened(ch))
        for type_, payload in pending.messages:
            self.buffered -= len(payload) + 512
            self._events.append(ChannelMessage(ch, type_, payload))
        pending.messages.clear()

    def _close(self, ch: Channel, remote: bool) -> None:
        if ch.closed:
            return
        ch.closed = True
        self._local.pop(ch.local_id, None)
        if ch.remote_id:
            self._remote.pop(ch.remote_id, None)
            self._free.append(ch.local_id)
        else:
            self._tombstones.add(ch.local_id)  # reserved until the peer's open or reject
        self._events.append(ChannelClosed(ch, remote))

    # ------------------------------------------------------------ remote side

    def receive(self, message: bytes | memoryview) -> None:
        """Handle one received message. Raises ProtocolError/DecodeError when fatal."""
        if not message:
            return  # keepalive
        if len(message) > 1 and 0 < message[0] <= 0xFC and message[1] <= 0xFC:
            # fast path for the common case: one message on a paired channel with small ids
            slot = self._remote.get(message[0])
            if type(slot) is Channel:
                view = message if type(message) is memoryview else memoryview(message)
                self._events.append(ChannelMessage(slot, message[1], view[2:]))
                return
        items = mc.decode(message)
        corked = len(items) > 1
        if corked:
            self._count("batches_received")
            self.cork()
        try:
            for item in items:
                if type(item) is mc.Message:
                    self._on_message(item)
                elif type(item) is mc.Open:
                    self._on_open(item)
                elif type(item) is mc.Close:
                    self._on_close(item)
                else:
                    self._on_reject(item)
        finally:
            if corked:
                self.uncork()

    def _on_message(self, m: mc.Message) -> None:
        slot = self._remote.get(m.remote_id)
        if slot is None:
            self._count("unknown_channel")
            return
        if type(slot) is _Pending:
            if self.buffered + len(m.payload) + 512 > MAX_PENDING_BUFFER:
                self._count("pending_overflow")
                self.reject(m.remote_id)
                return
            slot.messages.append((m.type, m.payload))
            self.buffered += len(m.payload) + 512
            return
        self._events.append(ChannelMessage(slot, m.type, m.payload))

    def _on_open(self, o: mc.Open) -> None:
        rid = o.remote_id
        if rid == 0:
            self._write(mc.encode_reject(0))  # the control channel cannot be opened
            return
        if rid == self._remote_len + 1:
            self._remote_len = rid
        elif rid > self._remote_len or rid in self._remote:
            raise ProtocolError("Invalid open message")
        key = _key(o.protocol, o.id)
        outgoing = self._outgoing.get(key)
        if outgoing:
            lid = outgoing.popleft()
            if not outgoing:
                del self._outgoing[key]
            if lid in self._tombstones:  # we closed it before it paired
                self._tombstones.discard(lid)
                self._free.append(lid)
                return
            self._pair(self._local[lid], rid, _Pending(o.protocol, o.id, o.handshake))
            return
        self._remote[rid] = _Pending(o.protocol, o.id, o.handshake)
        self._incoming.setdefault(key, deque()).append(rid)
        keep = self.pair(o.protocol, o.id, o.handshake) if self.pair is not None else False
        if type(self._remote.get(rid)) is _Pending and not keep:
            self.reject(rid)
        elif not self._incoming.get(key, True):
            del self._incoming[key]

    def reject(self, remote_id: int) -> None:
        """Refuse a pending remote open (drops its buffered messages)."""
        pending = self._remote.pop(remote_id, None)
        if type(pending) is _Pending:
            self.buffered -= sum(len(p) + 512 for _, p in pending.messages)
            key = _key(pending.protocol, pending.id)
            incoming = self._incoming.get(key)
            if incoming is not None:
                if remote_id in incoming:
                    incoming.remove(remote_id)
                if not incoming:
                    del self._incoming[key]
        self._count("rejected_open")
        self._write(mc.encode_reject(remote_id))

    def _on_reject(self, r: mc.Reject) -> None:
        for key, outgoing in self._outgoing.items():
            if r.local_id in outgoing:
                outgoing.remove(r.local_id)
                if not outgoing:
                    del self._outgoing[key]
                if r.local_id in self._local:
                    self._close(self._local[r.local_id], remote=True)
                self._tombstones.discard(r.local_id)
                self._free.append(r.local_id)
                return
        raise ProtocolError("Invalid reject message")

    def _on_close(self, c: mc.Close) -> None:
        slot = self._remote.get(c.remote_id)
        if type(slot) is Channel:
            self._close(slot, remote=True)
        elif type(slot) is _Pending:
            self.reject(c.remote_id)  # the peer gave up on a deferred open: free its id
        else:
            self._count("close_unknown_channel")


def _unsplit(cid: int, rest: bytes) -> bytes:
    return mc.enc_uint(cid) + rest
