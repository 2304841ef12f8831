"""The UDX packet header (libudx wire format, PROTOCOL.md 4.1).

20 bytes, little-endian: magic 0xff, version 1, type bits, data offset,
receiver's stream id, receive window (bytes), seq, ack; then, for SACK, the
SACK blocks (u32 start, u32 end-exclusive pairs) whose length is the data
offset; then the payload. A nonzero data offset on a non-SACK packet is
padding (libudx MTU probes) to skip.
"""

from __future__ import annotations

import struct

from ..errors import DecodeError

MAGIC = 0xFF
VERSION = 1
HEADER_SIZE = 20
PREFIX = b"\xff\x01"

DATA, END, SACK, MESSAGE, DESTROY, HEARTBEAT = 1, 2, 4, 8, 16, 32
DATA_OR_END = DATA | END
MAX_SACK_BLOCKS = 32
MTU_STEP = 32  # libudx's MTU probe increment (padding bytes)

HEADER = struct.Struct("<BBBBIIII")
_PAIR = struct.Struct("<II")
U32 = 0xFFFFFFFF


def encode(typ: int, remote_id: int, rwnd: int, seq: int, ack: int, payload: bytes = b"", data_offset: int = 0) -> bytes:
    """One packet; `seq`/`ack` are reduced mod 2^32."""
    return HEADER.pack(MAGIC, VERSION, typ, data_offset, remote_id, rwnd, seq & U32, ack & U32) + payload


def encode_sack(remote_id: int, rwnd: int, seq: int, ack: int, blocks: list[tuple[int, int]]) -> bytes:
    """A SACK-carrying ACK with up to MAX_SACK_BLOCKS (start, end) ranges."""
    blocks = blocks[:MAX_SACK_BLOCKS]
    body = b"".join(_PAIR.pack(s & U32, e & U32) for s, e in blocks)
    return HEADER.pack(MAGIC, VERSION, SACK, len(body), remote_id, rwnd, seq & U32, ack & U32) + body


def decode_header(data: bytes) -> tuple[int, int, int, int, int, int]:
    """(type, data_offset, id, rwnd, seq, ack); DecodeError if not a UDX packet."""
    if len(data) < HEADER_SIZE:
        raise DecodeError("UDX packet shorter than its 20-byte header")
    magic, version, typ, off, rid, rwnd, seq, ack = HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise DecodeError("not a UDX packet (bad magic or version)")
    return typ, off, rid, rwnd, seq, ack


def split_body(typ: int, data_offset: int, data: bytes) -> tuple[list[tuple[int, int]], memoryview]:
    """(sack blocks as wire u32 pairs, payload) of a packet; DecodeError if the offset overruns."""
    body_len = len(data) - HEADER_SIZE
    blocks: list[tuple[int, int]] = []
    if typ & SACK:
        hlen = data_offset if 0 < data_offset < body_len else body_len
        n = min(hlen // 8, MAX_SACK_BLOCKS * 2)
        blocks = [_PAIR.unpack_from(data, HEADER_SIZE + 8 * i) for i in range(n)]
        if not data_offset:
            return blocks, memoryview(b"")
    if data_offset > body_len:
        raise DecodeError("UDX data offset beyond the packet")
    return blocks, memoryview(data)[HEADER_SIZE + data_offset :]
