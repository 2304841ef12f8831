"""Offset-based compact-encoding readers for the RPC codecs.

mesh.encoding.Reader copies its input into `bytes`; the RPC layer instead reads
varints and strings at offsets in the received message and hands payloads on as
memoryview slices, so a 1 MB tensor is not copied on its way to np.frombuffer.
Every reader raises only DecodeError.
"""

from __future__ import annotations

from ..encoding import uint as enc_uint  # noqa: F401 - re-exported for the codecs
from ..errors import DecodeError

Buf = bytes | bytearray | memoryview


def read_uint(buf: Buf, pos: int, end: int) -> tuple[int, int]:
    """Return (value, next offset) of the varint at `pos`."""
    if pos >= end:
        raise DecodeError("out of bounds reading uint")
    a = buf[pos]
    if a <= 0xFC:
        return a, pos + 1
    n = 2 if a == 0xFD else 4 if a == 0xFE else 8
    if pos + 1 + n > end:
        raise DecodeError("out of bounds reading uint")
    return int.from_bytes(buf[pos + 1 : pos + 1 + n], "little"), pos + 1 + n


def read_bytes(buf: Buf, pos: int, end: int) -> tuple[int, int, int]:
    """Read a length-prefixed buffer; return (start, stop, next offset)."""
    n, pos = read_uint(buf, pos, end)
    if n > end - pos:
        raise DecodeError(f"out of bounds: buffer of {n} bytes, {end - pos} left")
    return pos, pos + n, pos + n


def read_string(buf: Buf, pos: int, end: int) -> tuple[str, int]:
    if pos < end and buf[pos] <= 0xFC:  # a one-byte length (method names): no helper calls
        start = pos + 1
        stop = start + buf[pos]
        if stop > end:
            raise DecodeError(f"out of bounds: buffer of {buf[pos]} bytes, {end - start} left")
    else:
        start, stop, _ = read_bytes(buf, pos, end)
    try:
        return str(buf[start:stop], "utf-8"), stop
    except UnicodeDecodeError as e:
        raise DecodeError("invalid UTF-8 in string") from e


def enc_string(s: str) -> bytes:
    b = s.encode("utf-8")
    return enc_uint(len(b)) + b


def enc_buffer(b: Buf | None) -> bytes:
    if not b:
        return b"\x00"
    return enc_uint(len(b)) + bytes(b)
