"""protomux frame codec (sans-IO): one protomux message <-> a list of items.

A message is `uint channel ‖ uint type ‖ body`. Channel 0 is the control
channel: type 0 batch, 1 open, 2 reject, 3 close (RPC.md section 1). Decoding
flattens a batch into its items. Bodies are memoryview slices of the message.
Only DecodeError is raised; unknown control types decode to nothing, as in
protomux.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import DecodeError
from .wire import Buf, enc_buffer, enc_string, enc_uint, read_bytes, read_string, read_uint

BATCH, OPEN, REJECT, CLOSE = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class Open:
    remote_id: int
    protocol: str
    id: bytes | None
    handshake: bytes  # the rest of the open message, may be empty


@dataclass(frozen=True, slots=True)
class Reject:
    local_id: int  # our own id, the one the peer is rejecting


@dataclass(frozen=True, slots=True)
class Close:
    remote_id: int


@dataclass(frozen=True, slots=True)
class Message:
    remote_id: int
    type: int
    payload: memoryview


Item = Open | Reject | Close | Message


# ---------------------------------------------------------------- encoders

def encode_open(local_id: int, protocol: str, id: bytes | None = None, handshake: bytes = b"") -> bytes:  # noqa: A002
    return b"\x00\x01" + enc_uint(local_id) + enc_string(protocol) + enc_buffer(id) + handshake


def encode_reject(remote_id: int) -> bytes:
    return b"\x00\x02" + enc_uint(remote_id)


def encode_close(local_id: int) -> bytes:
    return b"\x00\x03" + enc_uint(local_id)


def encode_message(local_id: int, type_: int, payload: Buf) -> bytes:
    if local_id <= 0xFC and type_ <= 0xFC:
        return bytes((local_id, type_)) + payload
    return enc_uint(local_id) + enc_uint(type_) + payload


def encode_batch(items: list[tuple[int, bytes]]) -> bytes:
    """One batch message from (channel, encoded message without its channel) items.

    An item is what `encode_message`/`encode_open`... produce minus the leading
    channel varint, i.e. `uint type ‖ body`; channel 0 items are control messages.
    """
    if not items:
        raise ValueError("empty batch")
    out = [b"\x00\x00", enc_uint(items[0][0])]
    prev = items[0][0]
    for cid, item in items:
        if cid != prev:
            out.append(b"\x00" + enc_uint(cid))
            prev = cid
        out.append(enc_uint(len(item)))
        out.append(item)
    return b"".join(out)


def split_channel(message: bytes) -> tuple[int, bytes]:
    """(channel, rest) of an encoded message, for putting it into a batch."""
    cid, pos = read_uint(message, 0, len(message))
    return cid, message[pos:]


# ---------------------------------------------------------------- decoder

def decode(message: Buf) -> list[Item]:
    """Decode one protomux message (a batch gives several items)."""
    view = message if isinstance(message, memoryview) else memoryview(message)
    end = len(view)
    out: list[Item] = []
    cid, pos = read_uint(view, 0, end)
    _decode_item(view, cid, pos, end, out, in_batch=False)
    return out


def _decode_item(buf: memoryview, cid: int, pos: int, end: int, out: list[Item], in_batch: bool) -> None:
    type_, pos = read_uint(buf, pos, end)
    if cid != 0:
        out.append(Message(cid, type_, buf[pos:end]))
    elif type_ == OPEN:
        rid, pos = read_uint(buf, pos, end)
        protocol, pos = read_string(buf, pos, end)
        start, stop, pos = read_bytes(buf, pos, end)
        out.append(Open(rid, protocol, bytes(buf[start:stop]) if stop > start else None, bytes(buf[pos:end])))
    elif type_ == REJECT:
        out.append(Reject(read_uint(buf, pos, end)[0]))
    elif type_ == CLOSE:
        out.append(Close(read_uint(buf, pos, end)[0]))
    elif type_ == BATCH:
        if in_batch:
            # protomux never nests batches; refusing them bounds recursion
            raise DecodeError("nested protomux batch")
        _decode_batch(buf, pos, end, out)
    # other control types: ignored, like protomux


def _decode_batch(buf: memoryview, pos: int, end: int, out: list[Item]) -> None:
    cid, pos = read_uint(buf, pos, end)
    while pos < end:
        n, pos = read_uint(buf, pos, end)
        if n == 0:
            cid, pos = read_uint(buf, pos, end)
            continue
        stop = min(pos + n, end)  # protomux clamps an overlong item to the batch
        _decode_item(buf, cid, pos, stop, out, in_batch=True)
        pos = stop
