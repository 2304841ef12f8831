"""Where the connection layer meets the DHT socket and the stream stack.

One UDX mux per DHT shares the DHT's server socket (datagrams starting 0xff
0x01 are routed to it); every handshake of ours is sent from that same socket,
so the address a peer learns from the handshake is the one our streams use.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable

from mesh.connection import Connection
from mesh.encoding import Address
from mesh.noise import NoiseResult
from mesh.noise_payload import FIREWALL_OPEN, FIREWALL_UNKNOWN
from mesh.udx import UDXMux, UDXStream

# How long a stream waits for the peer's first packet when it cannot dial
# (hyperdht's HANDSHAKE_INITIAL_TIMEOUT).
FIRST_PACKET_TIMEOUT = 10.0

_muxes: "weakref.WeakKeyDictionary[object, UDXMux]" = weakref.WeakKeyDictionary()
_path_stats: "weakref.WeakKeyDictionary[object, dict[str, int]]" = weakref.WeakKeyDictionary()


def path_stats(dht) -> dict[str, int]:
    """How many client connections on `dht` took each path (direct, lan, passive, ...)."""
    stats = _path_stats.get(dht)
    if stats is None:
        stats = _path_stats[dht] = {}
    return stats


# Packets for a stream whose peer id we do not know yet: the server may start
# sending the moment it answered the handshake, and its first packets can be
# read before the reply that names its stream id. Kept per stream, replayed on
# connect (a few packets at most: the peer's initial window).
EARLY_PACKETS = 32
_early: "weakref.WeakKeyDictionary[UDXMux, dict[int, list]]" = weakref.WeakKeyDictionary()
# Streams waiting for the peer's first packet: stream id -> callback once it came.
_waiting: "weakref.WeakKeyDictionary[UDXMux, dict[int, Callable[[], None]]]" = weakref.WeakKeyDictionary()


def udx_mux(dht) -> UDXMux:
    """The UDX mux on `dht`'s socket (created and registered on first use)."""
    mux = _muxes.get(dht)
    if mux is None:
        mux = UDXMux(lambda data, addr: dht.send_raw(data, addr, dht.io.server))
        early: dict[int, list] = {}
        waiting: dict[int, Callable[[], None]] = {}
        _early[mux] = early
        _waiting[mux] = waiting

        def on_udx(data: bytes, addr: Address, _socket) -> None:
            if len(data) < 8:
                mux.on_datagram(data, addr)  # counted as garbage there
                return
            sid = int.from_bytes(data[4:8], "little")
            if mux.on_datagram(data, addr):
                if sid in waiting and mux.streams[sid].connected:
                    waiting.pop(sid)()
                return
            held = early.get(sid)
            if held is not None and len(held) < EARLY_PACKETS:
                held.append((data, addr))

        dht.set_udx_handler(on_udx)
        _muxes[dht] = mux
    return mux


def new_stream(dht, hold_early: bool = False) -> UDXStream:
    """A stream on `dht`'s mux; with `hold_early`, packets that arrive before
    `connect_stream` are kept and replayed then."""
    mux = udx_mux(dht)
    stream = mux.create_stream()
    if hold_early:
        early = _early[mux]
        early[stream.local_id] = []
        stream.closed.add_done_callback(lambda _f: early.pop(stream.local_id, None))
    return stream


def handshake_socket(dht):
    """The endpoint our handshakes go out on: the one our UDX streams use."""
    return dht.io.server


def firewall_of(dht) -> int:
    """What we tell peers about our reachability."""
    return FIREWALL_UNKNOWN if dht.firewalled else FIREWALL_OPEN


def our_addresses(dht) -> list[Address]:
    """Addresses a peer may reach our streams at: public (when reachable), then local."""
    out: list[Address] = []
    public = dht.public_address if not dht.firewalled else None
    if public:
        out.append(tuple(public))
    local = tuple(dht.address)
    if local not in out:
        out.append(local)
    return out


def connect_stream(stream: UDXStream, remote_id: int, address: Address | None,
                   on_connected: Callable[[], None] | None = None) -> None:
    """Point `stream` at the peer's stream; with no address, the peer's first
    packet supplies it, and the stream is destroyed if none comes in time.
    `on_connected` runs once the peer's address is known (at once if given)."""
    mux = stream._mux
    stream.connect(remote_id, address)
    if address is None:
        loop = asyncio.get_running_loop()
        handle = loop.call_later(FIRST_PACKET_TIMEOUT, _expire_unconnected, stream)
        waiting = _waiting[mux]
        if on_connected is not None:
            waiting[stream.local_id] = on_connected
        stream.closed.add_done_callback(lambda _f: (handle.cancel(),
                                                    waiting.pop(stream.local_id, None)))
    elif on_connected is not None:
        on_connected()
    held = _early.get(mux, {}).pop(stream.local_id, None)
    for data, addr in held or ():
        mux.on_datagram(data, addr)


def _expire_unconnected(stream: UDXStream) -> None:
    if not stream.connected:
        from mesh.connect_errors import HandshakeTimeoutError

        stream.destroy(HandshakeTimeoutError("no packet from the peer's stream"))


def secure_connection(stream: UDXStream, result: NoiseResult) -> Connection:
    """The secret-stream connection over `stream`, keyed by the handshake."""
    return Connection(stream, result)
