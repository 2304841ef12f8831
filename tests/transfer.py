"""Bulk-transfer helpers shared by the connection tests: send with backpressure,
receive a known number of bytes and hash them."""

from __future__ import annotations

import hashlib


def data_of(n: int, tag: bytes) -> bytes:
    """`n` deterministic bytes derived from `tag`."""
    block = hashlib.sha256(tag).digest() * 2048  # 64 KiB
    return (block * (n // len(block) + 1))[:n]


async def send_all(conn, data: bytes, chunk: int = 65536) -> None:
    """Write `data` in messages of `chunk` bytes, waiting on drain() when the connection is full."""
    for i in range(0, len(data), chunk):
        if not conn.write(data[i:i + chunk]):
            await conn.drain()


async def recv_sha256(conn, n: int) -> str:
    """Read messages until `n` bytes arrived (exactly); their sha256 in hex."""
    h = hashlib.sha256()
    got = 0
    async for msg in conn:
        h.update(msg)
        got += len(msg)
        if got >= n:
            break
    assert got == n
    return h.hexdigest()
