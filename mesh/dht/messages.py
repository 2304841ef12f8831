"""The DHT wire format: dht-rpc framing and the hyperdht command bodies (sans-IO).

Layouts follow PROTOCOL.md sections 1.2-1.3 and 2.2. Every decoder takes bytes,
tolerates unknown trailing bytes (hyperdht grows by appending optional fields)
and raises only `DecodeError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from .. import crypto
from .. import encoding as enc
from ..encoding import Address, Reader
from ..errors import DecodeError, EncodeError

REQUEST_ID = 0x03  # (type 0 << 4) | version 3
RESPONSE_ID = 0x13  # (type 1 << 4) | version 3

# dht-rpc internal commands (flag bit 2 set)
PING, PING_NAT, FIND_NODE, DOWN_HINT, DELAYED_PING = 0, 1, 2, 3, 4
# hyperdht user commands
PEER_HANDSHAKE, PEER_HOLEPUNCH, FIND_PEER, LOOKUP, ANNOUNCE, UNANNOUNCE = 0, 1, 2, 3, 4, 5
MUTABLE_PUT, MUTABLE_GET, IMMUTABLE_PUT, IMMUTABLE_GET, PLUGIN = 6, 7, 8, 9, 10

# response error codes
ERR_UNKNOWN_COMMAND, ERR_INVALID_TOKEN, ERR_SEQ_REUSED, ERR_SEQ_TOO_LOW = 1, 2, 16, 17

# handshake / holepunch modes
FROM_CLIENT, FROM_SERVER, FROM_RELAY, FROM_SECOND_RELAY, REPLY = 0, 1, 2, 3, 4

NS_PEER_HANDSHAKE, NS_PEER_HOLEPUNCH, NS_ANNOUNCE, NS_UNANNOUNCE, NS_MUTABLE_PUT, NS_PLUGIN = crypto.namespace(
    "hyperswarm/dht", [0, 1, 4, 5, 6, 10]
)

MAX_CLOSER_NODES = 20


@lru_cache(maxsize=1 << 15)
def _ipv4(addr: Address) -> bytes:
    # the same few thousand addresses are encoded over and over (closer nodes)
    return enc.ipv4(addr)


@lru_cache(maxsize=1 << 15)
def _addr(b: bytes) -> Address:
    return (f"{b[0]}.{b[1]}.{b[2]}.{b[3]}", b[4] | (b[5] << 8))


def _read_addrs(r: Reader, max_items: int) -> list[Address]:
    n = r.uint()
    if n > max_items:
        raise DecodeError(f"array of {n} addresses is too long")
    raw = r.take(6 * n)
    return [_addr(raw[i:i + 6]) for i in range(0, 6 * n, 6)]


@lru_cache(maxsize=1 << 15)
def node_id(addr: Address) -> bytes:
    """A node's id: BLAKE2b-256 of its 6-byte ipv4Address (ids cannot be chosen)."""
    return crypto.hash(_ipv4(addr))


# ---------------------------------------------------------------- dht-rpc framing

@dataclass(slots=True)
class Request:
    tid: int
    to: Address
    command: int
    internal: bool = False
    id: bytes | None = None
    token: bytes | None = None
    target: bytes | None = None
    value: bytes | None = None


@dataclass(slots=True)
class Response:
    tid: int
    to: Address
    id: bytes | None = None
    token: bytes | None = None
    closer_nodes: list[Address] = field(default_factory=list)
    error: int = 0
    value: bytes | None = None


def encode_request(r: Request) -> bytes:
    flags = (
        (1 if r.id else 0) | (2 if r.token else 0) | (4 if r.internal else 0)
        | (8 if r.target else 0) | (16 if r.value else 0)
    )
    parts = [bytes((REQUEST_ID, flags)), enc.uint16(r.tid), _ipv4(r.to)]
    if r.id:
        parts.append(enc.fixed(r.id, 32))
    if r.token:
        parts.append(enc.fixed(r.token, 32))
    parts.append(enc.uint(r.command))
    if r.target:
        parts.append(enc.fixed(r.target, 32))
    if r.value:
        parts.append(enc.buffer(r.value))
    return b"".join(parts)


def encode_response(r: Response) -> bytes:
    flags = (
        (1 if r.id else 0) | (2 if r.token else 0) | (4 if r.closer_nodes else 0)
        | (8 if r.error else 0) | (16 if r.value else 0)
    )
    parts = [bytes((RESPONSE_ID, flags)), enc.uint16(r.tid), _ipv4(r.to)]
    if r.id:
        parts.append(enc.fixed(r.id, 32))
    if r.token:
        parts.append(enc.fixed(r.token, 32))
    if r.closer_nodes:
        parts.append(enc.uint(len(r.closer_nodes)) + b"".join(map(_ipv4, r.closer_nodes)))
    if r.error:
        parts.append(enc.uint(r.error))
    if r.value:
        parts.append(enc.buffer(r.value))
    return b"".join(parts)


def decode_message(buf: bytes) -> Request | Response:
    """Decode one dht-rpc datagram (request or response)."""
    if len(buf) < 10:
        raise DecodeError("datagram too short")
    kind, flags = buf[0], buf[1]
    if kind != REQUEST_ID and kind != RESPONSE_ID:
        raise DecodeError(f"not a dht-rpc message: first byte {kind:#04x}")
    if flags > 0xFC:
        return _decode_slow(buf)
    # the fixed header is read by index: this runs for every datagram
    tid = buf[2] | (buf[3] << 8)
    to = _addr(buf[4:10])
    pos = 10
    id_ = token = None
    if flags & 1:
        id_ = buf[pos:pos + 32]
        pos += 32
    if flags & 2:
        token = buf[pos:pos + 32]
        pos += 32
    if pos > len(buf):
        raise DecodeError("datagram too short for its id/token")
    r = Reader(buf, pos)
    if kind == REQUEST_ID:
        command = r.uint()
        target = r.fixed32() if flags & 8 else None
        value = r.buffer() if flags & 16 else None
        return Request(tid, to, command, bool(flags & 4), id_, token, target, value)
    closer = _read_addrs(r, MAX_CLOSER_NODES * 4) if flags & 4 else []
    error = r.uint() if flags & 8 else 0
    value = r.buffer() if flags & 16 else None
    return Response(tid, to, id_, token, closer, error, value)


def _decode_slow(buf: bytes) -> Request | Response:
    r = Reader(buf, 1)
    flags = r.uint()
    tid = r.uint16()
    to = r.ipv4()
    id_ = r.fixed32() if flags & 1 else None
    token = r.fixed32() if flags & 2 else None
    if buf[0] == REQUEST_ID:
        command = r.uint()
        target = r.fixed32() if flags & 8 else None
        value = r.buffer() if flags & 16 else None
        return Request(tid, to, command, bool(flags & 4), id_, token, target, value)
    closer = _read_addrs(r, MAX_CLOSER_NODES * 4) if flags & 4 else []
    error = r.uint() if flags & 8 else 0
    value = r.buffer() if flags & 16 else None
    return Response(tid, to, id_, token, closer, error, value)


# ---------------------------------------------------------------- hyperdht bodies

@dataclass(frozen=True, slots=True)
class PeerRecord:
    public_key: bytes
    relay_addresses: tuple[Address, ...] = ()


def encode_peer(p: PeerRecord) -> bytes:
    return enc.fixed(p.public_key, 32) + enc.array(p.relay_addresses, enc.ipv4)


def _read_peer(r: Reader) -> PeerRecord:
    return PeerRecord(r.fixed32(), tuple(r.array(r.ipv4)))


def decode_peer(buf: bytes) -> PeerRecord:
    return _read_peer(Reader(buf))


@dataclass(slots=True)
class Announce:
    peer: PeerRecord | None = None
    refresh: bytes | None = None
    signature: bytes | None = None
    bump: int = 0


def encode_announce(a: Announce) -> bytes:
    flags = (1 if a.peer else 0) | (2 if a.refresh else 0) | (4 if a.signature else 0) | (8 if a.bump else 0)
    parts = [enc.uint(flags)]
    if a.peer:
        parts.append(encode_peer(a.peer))
    if a.refresh:
        parts.append(enc.fixed(a.refresh, 32))
    if a.signature:
        parts.append(enc.fixed(a.signature, 64))
    if a.bump:
        parts.append(enc.uint(a.bump))
    return b"".join(parts)


def decode_announce(buf: bytes) -> Announce:
    r = Reader(buf)
    flags = r.uint()
    peer = _read_peer(r) if flags & 1 else None
    refresh = r.fixed32() if flags & 2 else None
    signature = r.fixed64() if flags & 4 else None
    bump = r.uint() if flags & 8 else 0
    return Announce(peer, refresh, signature, bump)


def announce_signable(target: bytes, node_id_: bytes, token: bytes, ann: Announce, ns: bytes = NS_ANNOUNCE) -> bytes:
    """The 64 bytes an announce (or, with NS_UNANNOUNCE, an unannounce) signs."""
    if ann.peer is None:
        raise EncodeError("an announce signature needs a peer")
    inner = crypto.hash_batch([target, node_id_, token, encode_peer(ann.peer), ann.refresh or b""])
    return ns + inner


@dataclass(slots=True)
class LookupReply:
    peers: list[PeerRecord]
    bump: int = 0


def encode_lookup_reply(raw_peers: list[bytes], bump: int = 0) -> bytes:
    """lookupRawReply from already-encoded peer records."""
    return enc.uint(len(raw_peers)) + b"".join(raw_peers) + enc.uint(bump)


def decode_lookup_reply(buf: bytes) -> LookupReply:
    r = Reader(buf)
    peers = r.array(lambda: _read_peer(r))
    bump = r.uint() if r.remaining else 0
    return LookupReply(peers, bump)


@dataclass(slots=True)
class MutablePut:
    public_key: bytes
    seq: int
    value: bytes | None
    signature: bytes


def encode_mutable_put(m: MutablePut) -> bytes:
    return enc.fixed(m.public_key, 32) + enc.uint(m.seq) + enc.buffer(m.value) + enc.fixed(m.signature, 64)


def decode_mutable_put(buf: bytes) -> MutablePut:
    r = Reader(buf)
    return MutablePut(r.fixed32(), r.uint(), r.buffer(), r.fixed64())


@dataclass(slots=True)
class MutableGet:
    seq: int
    value: bytes | None
    signature: bytes


def encode_mutable_get(m: MutableGet) -> bytes:
    return enc.uint(m.seq) + enc.buffer(m.value) + enc.fixed(m.signature, 64)


def decode_mutable_get(buf: bytes) -> MutableGet:
    r = Reader(buf)
    return MutableGet(r.uint(), r.buffer(), r.fixed64())


def mutable_signable(seq: int, value: bytes | None) -> bytes:
    return NS_MUTABLE_PUT + crypto.hash(enc.uint(seq) + enc.buffer(value))


def decode_uint(buf: bytes) -> int:
    return Reader(buf).uint()


@dataclass(slots=True)
class Handshake:
    mode: int
    noise: bytes | None
    peer_address: Address | None = None
    relay_address: Address | None = None


def encode_handshake(h: Handshake) -> bytes:
    flags = (1 if h.peer_address else 0) | (2 if h.relay_address else 0)
    out = enc.uint(flags) + enc.uint(h.mode) + enc.buffer(h.noise)
    if h.peer_address:
        out += enc.ipv4(h.peer_address)
    if h.relay_address:
        out += enc.ipv4(h.relay_address)
    return out


def decode_handshake(buf: bytes) -> Handshake:
    r = Reader(buf)
    flags = r.uint()
    mode = r.uint()
    noise = r.buffer()
    peer = r.ipv4() if flags & 1 else None
    relay = r.ipv4() if flags & 2 else None
    return Handshake(mode, noise, peer, relay)


@dataclass(slots=True)
class Holepunch:
    mode: int
    id: int
    payload: bytes | None
    peer_address: Address | None = None


def encode_holepunch(h: Holepunch) -> bytes:
    out = enc.uint(1 if h.peer_address else 0) + enc.uint(h.mode) + enc.uint(h.id) + enc.buffer(h.payload)
    if h.peer_address:
        out += enc.ipv4(h.peer_address)
    return out


def decode_holepunch(buf: bytes) -> Holepunch:
    r = Reader(buf)
    flags = r.uint()
    mode = r.uint()
    id_ = r.uint()
    payload = r.buffer()
    peer = r.ipv4() if flags & 1 else None
    return Holepunch(mode, id_, payload, peer)
