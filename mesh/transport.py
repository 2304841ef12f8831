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
from mesh.udx.mux import grow_buffers

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


def udx_mux(dht) -> UDXMux:
    """The UDX mux on `dht`'s socket (created and registered on first use)."""
    mux = _muxes.get(dht)
    if mux is None:
        mux = UDXMux(lambda data, addr: dht.send_raw(data, addr, dht.io.server))
        mux.use_endpoint(dht.io.server)
        dht.set_udx_handler(lambda data, addr, _socket: mux.on_datagram(data, addr))
        grow_buffers(dht.io.server)
        _muxes[dht] = mux
    return mux


def new_stream(dht, hold_early: bool = False) -> UDXStream:
    """A stream on `dht`'s mux; with `hold_early`, packets that arrive before
    `connect_stream` are kept and processed then (`UDXStream.hold_early`)."""
    stream = udx_mux(dht).create_stream()
    if hold_early:
        stream.hold_early()
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


# Packet size between two peers that both read large datagrams
# (noise_payload.UDX_LARGE_DATAGRAMS) over a loopback path, where no link MTU
# applies: a 64 KiB RPC batch is 4 packets instead of 57, and the per-packet
# work of both ends shrinks with it. 16 KiB keeps a window of them well inside
# the 2 MiB socket buffers.
LOOPBACK_LARGE_MTU = 16384


def connect_stream(stream: UDXStream, remote_id: int, address: Address | None,
                   on_connected: Callable[[], None] | None = None, large_datagrams: bool = False) -> None:
    """Point `stream` at the peer's stream; with no address, the peer's first
    packet supplies it, and the stream is destroyed if none comes in time.
    `on_connected` runs once the peer's address is known (at once if given).
    `large_datagrams`: the peer said it reads them; used on loopback paths."""
    if large_datagrams:
        stream.loopback_mtu = LOOPBACK_LARGE_MTU
    stream.on_connected = on_connected
    if address is None:
        handle = asyncio.get_running_loop().call_later(FIRST_PACKET_TIMEOUT, _expire_unconnected, stream)
        stream.closed.add_done_callback(lambda _f: handle.cancel())
    stream.connect(remote_id, address)


def _expire_unconnected(stream: UDXStream) -> None:
    if not stream.connected:
        from mesh.connect_errors import HandshakeTimeoutError

        stream.destroy(HandshakeTimeoutError("no packet from the peer's stream"))


def secure_connection(stream: UDXStream, result: NoiseResult) -> Connection:
    """The secret-stream connection over `stream`, keyed by the handshake."""
    return Connection(stream, result)
