"""compact-encoding primitives (the Holepunch wire encoding), shared by every codec.

Integers are little-endian. `uint` is a varint: one byte up to 0xfc, else a
0xfd/0xfe/0xff marker and a 2/4/8-byte integer. A `buffer` is a uint length and
the bytes (length 0 decodes as None). An `ipv4Address` is 4 address bytes and a
uint16 port. Decoders read from a `Reader` and raise only `DecodeError`; callers
decide whether trailing bytes are allowed (hyperdht tolerates them, so that new
optional fields can be added).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from .errors import DecodeError, EncodeError

T = TypeVar("T")

Address = tuple[str, int]
"""An IPv4 address and port, e.g. ("127.0.0.1", 49737)."""

MAX_UINT = (1 << 64) - 1


class Reader:
    """A cursor over bytes; each read advances it or raises DecodeError."""

    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf: bytes | bytearray | memoryview, pos: int = 0, end: int | None = None):
        self.buf = bytes(buf) if not isinstance(buf, bytes) else buf
        self.pos = pos
        self.end = len(self.buf) if end is None else end

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def take(self, n: int) -> bytes:
        p = self.pos
        if n < 0 or self.end - p < n:
            raise DecodeError(f"out of bounds: need {n} bytes, have {self.end - p}")
        self.pos = p + n
        return self.buf[p : p + n]

    def rest(self) -> bytes:
        b = self.buf[self.pos : self.end]
        self.pos = self.end
        return b

    def uint8(self) -> int:
        p = self.pos
        if p >= self.end:
            raise DecodeError("out of bounds: need 1 byte")
        self.pos = p + 1
        return self.buf[p]

    def uint16(self) -> int:
        return int.from_bytes(self.take(2), "little")

    def uint24(self) -> int:
        return int.from_bytes(self.take(3), "little")

    def uint32(self) -> int:
        return int.from_bytes(self.take(4), "little")

    def uint64(self) -> int:
        return int.from_bytes(self.take(8), "little")

    def uint(self) -> int:
        a = self.uint8()
        if a <= 0xFC:
            return a
        if a == 0xFD:
            return self.uint16()
        if a == 0xFE:
            return self.uint32()
        return self.uint64()

    def fixed(self, n: int) -> bytes:
        return self.take(n)

    def fixed32(self) -> bytes:
        return self.take(32)

    def fixed64(self) -> bytes:
        return self.take(64)

    def buffer(self) -> bytes | None:
        n = self.uint()
        return self.take(n) if n else None

    def string(self) -> str:
        n = self.uint()
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError as e:
            raise DecodeError("invalid UTF-8 in string") from e

    def ipv4(self) -> Address:
        b = self.take(6)
        return (f"{b[0]}.{b[1]}.{b[2]}.{b[3]}", b[4] | (b[5] << 8))

    def ipv6(self) -> tuple[str, int]:
        b = self.take(18)
        groups = [f"{int.from_bytes(b[i:i + 2], 'big'):x}" for i in range(0, 16, 2)]
        return (":".join(groups), b[16] | (b[17] << 8))

    def array(self, item: Callable[[], T], max_items: int = 1 << 16) -> list[T]:
        n = self.uint()
        if n > max_items or n > self.remaining:
            raise DecodeError(f"array of {n} items is too long")
        return [item() for _ in range(n)]

    def done(self) -> None:
        """Require that every byte was consumed."""
        if self.pos != self.end:
            raise DecodeError(f"{self.end - self.pos} unexpected trailing bytes")


# ---------------------------------------------------------------- encoders

def uint(n: int) -> bytes:
    if n <= 0xFC:
        if n < 0:
            raise EncodeError("uint must be non-negative")
        return bytes((n,))
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    if n <= 0xFFFFFFFF:
        return b"\xfe" + n.to_bytes(4, "little")
    if n <= MAX_UINT:
        return b"\xff" + n.to_bytes(8, "little")
    raise EncodeError("uint out of range")


def uint16(n: int) -> bytes:
    return n.to_bytes(2, "little")


def uint24(n: int) -> bytes:
    return n.to_bytes(3, "little")


def uint32(n: int) -> bytes:
    return n.to_bytes(4, "little")


def uint64(n: int) -> bytes:
    return n.to_bytes(8, "little")


def buffer(b: bytes | None) -> bytes:
    if not b:
        return b"\x00"
    return uint(len(b)) + bytes(b)


def string(s: str) -> bytes:
    b = s.encode("utf-8")
    return uint(len(b)) + b


def fixed(b: bytes, n: int) -> bytes:
    if len(b) != n:
        raise EncodeError(f"expected {n} bytes, got {len(b)}")
    return bytes(b)


def ipv4(addr: Address) -> bytes:
    host, port = addr
    try:
        parts = bytes(int(x) for x in host.split("."))
    except ValueError as e:
        raise EncodeError(f"not an IPv4 address: {host!r}") from e
    if len(parts) != 4 or not 0 <= port <= 0xFFFF:
        raise EncodeError(f"not an IPv4 address and port: {addr!r}")
    return parts + port.to_bytes(2, "little")


def array(items: Iterable[T], item: Callable[[T], bytes]) -> bytes:
    items = list(items)
    return uint(len(items)) + b"".join(item(i) for i in items)
