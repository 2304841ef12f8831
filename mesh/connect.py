"""The client side of a HyperDHT connection: `await connect(dht, public_key, keypair=kp)`.

1. PEER_HANDSHAKE (Noise IK message 1) to the known relay addresses and to
   every node a FIND_PEER query finds holding the server's route, at most
   `PARALLEL` attempts in flight; the first valid REPLY wins.
2. The server's noise payload says where its stream is; `mesh.paths` picks the
   path (direct, LAN shortcut after a PING, or wait for the server).
3. UDX stream + secret-stream: the returned Connection.

Errors (mesh.connect_errors): PeerNotFoundError (no route), PeerConnectionFailedError
(routes, no answer), HandshakeTimeoutError, ConnectionRefusedByPeer (the server's
firewall said no), ServerIncompatibleError, HolepunchRequiredError.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from mesh import crypto
from mesh.connect_errors import (
    ConnectionRefusedByPeer, HandshakeTimeoutError, HolepunchRequiredError, PeerConnectionFailedError,
    PeerNotFoundError, ServerIncompatibleError,
)
from mesh.dht import messages as m
from mesh.encoding import Address
from mesh.errors import ClosedError, CryptoError, DecodeError, MeshError
from mesh.noise import NoiseWrap
from mesh.noise_payload import ERROR_NONE, ERROR_VERSION_MISMATCH, NoisePayload, UdxInfo
from mesh.paths import Path, PathKind, choose_client_path
from mesh.transport import (
    connect_stream, firewall_of, handshake_socket, new_stream, our_addresses, path_stats,
    secure_connection,
)

PARALLEL = 3
HANDSHAKE_TIMEOUT = 10.0
LAN_PING_TIMEOUT = 1.0


@dataclass
class HandshakeReply:
    relay_address: Address  # where we sent the request
    client_address: Address | None  # us, as that node saw us
    server_address: Address  # the server, as the relay saw it
    relayed: bool
    noise: bytes


async def connect(dht, public_key: bytes, *, keypair: crypto.KeyPair,
                  relay_addresses: list[Address] | tuple = (), timeout: float = HANDSHAKE_TIMEOUT,
                  lan: bool = True):
    """Open a secure connection to the server listening on `public_key`."""
    await dht.ready()
    stream = new_stream(dht, hold_early=True)
    try:
        wrap = NoiseWrap(keypair, public_key)
        msg1 = wrap.send(NoisePayload(
            firewall=firewall_of(dht), addresses4=our_addresses(dht), udx=UdxInfo(id=stream.local_id, large_datagrams=True),
        ))
        try:
            reply = await asyncio.wait_for(
                _handshake(dht, public_key, msg1, list(relay_addresses)), timeout)
        except asyncio.TimeoutError:
            raise HandshakeTimeoutError("no handshake reply in %.1f s" % timeout) from None
        remote = _read_reply(wrap, reply.noise)
        path = _choose(dht, reply, remote, lan)
        stats = path_stats(dht)
        stats[path.kind.value] = stats.get(path.kind.value, 0) + 1
        address = await _open_path(dht, path)
        conn = secure_connection(stream, wrap.final())  # before early packets are replayed
        connect_stream(stream, remote.udx.id, address, large_datagrams=remote.udx.large_datagrams)
        return conn
    except BaseException as e:
        # with the reason: a failed stream does not linger in the mux like a clean close
        stream.destroy(e if isinstance(e, MeshError) else ClosedError("connect cancelled"))
        raise


def _read_reply(wrap: NoiseWrap, noise: bytes) -> NoisePayload:
    try:
        remote = wrap.recv(noise)
    except (DecodeError, CryptoError) as e:
        raise ServerIncompatibleError("bad handshake reply: %s" % e, "BAD_HANDSHAKE_REPLY") from e
    if remote.version != 1 or remote.error == ERROR_VERSION_MISMATCH:
        raise ServerIncompatibleError("server speaks another handshake version", "SERVER_INCOMPATIBLE")
    if remote.error != ERROR_NONE:
        raise ConnectionRefusedByPeer("server aborted the handshake (error %d)" % remote.error,
                                      "SERVER_ERROR")
    if remote.udx is None:
        raise ServerIncompatibleError("server sent no UDX stream info", "SERVER_ERROR")
    return remote


def _choose(dht, reply: HandshakeReply, remote: NoisePayload, lan: bool) -> Path:
    return choose_client_path(
        relayed=reply.relayed,
        relay_address=reply.relay_address,
        server_address=reply.server_address,
        client_address=reply.client_address,
        server_firewall=remote.firewall,
        server_addresses=list(remote.addresses4),
        server_holepunchable=bool(remote.holepunch and remote.holepunch.relays),
        client_firewall=firewall_of(dht),
        local_addresses=[tuple(dht.address)],
        lan=lan,
    )


async def _open_path(dht, path: Path) -> Address | None:
    """The address to point our stream at (None: wait for the server's packet)."""
    if path.kind is PathKind.DIRECT:
        return path.address
    if path.kind is PathKind.PASSIVE:
        return None
    if path.kind is PathKind.LAN:
        try:
            await dht.request(path.address, m.PING, internal=True, retries=1,
                              timeout=LAN_PING_TIMEOUT, socket=handshake_socket(dht))
        except MeshError as e:
            raise HolepunchRequiredError("LAN address %s:%d did not answer" % path.address) from e
        return path.address
    # PathKind.HOLEPUNCH: the NAT traversal of a later issue plugs in here.
    raise HolepunchRequiredError("peer is behind a NAT on another host; holepunching is not implemented")


async def _handshake(dht, public_key: bytes, msg1: bytes, relays: list[Address]) -> HandshakeReply:
    """Send message 1 through relays until one answers; raises if none can."""
    return await _RelayRace(dht, public_key, msg1).run(relays)


class _RelayRace:
    """The known relays and every node FIND_PEER finds holding the route are asked
    in turn, PARALLEL at a time; the first valid reply wins, the rest are cancelled."""

    def __init__(self, dht, public_key: bytes, msg1: bytes):
        self.dht = dht
        self.public_key = public_key
        self.target = crypto.hash(public_key)
        self.value = m.encode_handshake(m.Handshake(m.FROM_CLIENT, msg1))
        self.sem = asyncio.Semaphore(PARALLEL)
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()
        self.tried: set[Address] = set()
        self.attempts: list[asyncio.Task] = []
        self.errors: list[MeshError] = []

    async def run(self, relays: list[Address]) -> HandshakeReply:
        search = asyncio.ensure_future(self._search(relays))
        try:
            while not self.done.done():
                waiting = [t for t in self.attempts + [search] if not t.done()]
                if not waiting:
                    self._give_up(search)
                await asyncio.wait(waiting + [self.done], return_when=asyncio.FIRST_COMPLETED)
            return self.done.result()
        finally:
            search.cancel()
            for t in self.attempts:
                t.cancel()
            await asyncio.gather(search, *self.attempts, return_exceptions=True)

    def _give_up(self, search: asyncio.Task) -> None:
        if search.exception() is not None:
            raise search.exception()
        if not self.tried:
            raise PeerNotFoundError("no DHT node knows a route to %s" % self.public_key.hex()[:16])
        raise PeerConnectionFailedError(
            "%d relays tried, none answered the handshake" % len(self.tried)
        ) from (self.errors[-1] if self.errors else None)

    async def _search(self, relays: list[Address]) -> None:
        for addr in relays:
            self._start(addr)
        async for found in self.dht.find_peer_iter(self.public_key):
            if self.done.done():
                return
            self._start(found.from_address)

    def _start(self, addr: Address) -> None:
        addr = (addr[0], addr[1])
        if addr not in self.tried and not self.done.done():
            self.tried.add(addr)
            self.attempts.append(asyncio.ensure_future(self._attempt(addr)))

    async def _attempt(self, addr: Address) -> None:
        async with self.sem:
            if self.done.done():
                return
            try:
                reply = await _ask(self.dht, self.target, self.value, addr)
            except MeshError as e:
                self.errors.append(e)
                return
            if not self.done.done():
                self.done.set_result(reply)


async def _ask(dht, target: bytes, value: bytes, addr: Address) -> HandshakeReply:
    res = await dht.request(addr, m.PEER_HANDSHAKE, target=target, value=value,
                            socket=handshake_socket(dht))
    if not res.value:
        raise PeerConnectionFailedError("%s:%d has no route to the server" % addr)
    try:
        hs = m.decode_handshake(res.value)
    except DecodeError as e:
        raise PeerConnectionFailedError("bad handshake reply from %s:%d" % addr) from e
    if hs.mode != m.REPLY or not hs.noise or tuple(res.from_address) != tuple(addr):
        raise PeerConnectionFailedError("bad handshake reply from %s:%d" % addr)
    return HandshakeReply(
        relay_address=tuple(addr),
        client_address=tuple(res.to) if res.to else None,
        server_address=tuple(hs.peer_address) if hs.peer_address else tuple(addr),
        relayed=hs.peer_address is not None,
        noise=hs.noise,
    )
