"""Hyperswarm for Python: join topics, find peers, keep one connection per peer.

    swarm = Swarm(SwarmConfig(keypair=kp, bootstrap=[("127.0.0.1", 49737)]))
    discovery = swarm.join(topic, server=True, client=True)
    await discovery.flushed()
    async for conn, info in swarm: ...        # or swarm.on_connection(cb)
    await swarm.leave(topic); await swarm.destroy()

The decisions (which peer to dial, when to retry, which duplicate to keep,
how many peers) live in the sans-IO `mesh.swarm_logic`; this module only runs
them: lookups and announces on the DHT, dials through `mesh.connect`, incoming
connections from `mesh.server`.
"""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mesh import swarm_logic as sl
from mesh.connect import connect
from mesh.connect_errors import DuplicateConnectionError
from mesh.crypto import KeyPair
from mesh.encoding import Address
from mesh.errors import ClosedError, MeshError
from mesh.server import create_server
from mesh.swarm_discovery import Discovery

Firewall = Callable[[bytes], bool]


@dataclass(frozen=True)
class SwarmConfig:
    """keypair: our identity (announce signatures and the Noise static key).
    bootstrap: DHT bootstrap nodes (required: we never fall back to public ones).
    firewall: called with a remote public key; True refuses it before any data.
    max_peers / max_parallel: connection limits (hyperswarm: 64 / 3).
    connect_timeout: seconds for one dial (handshake + stream).
    seed: seeds the jitter of refreshes and retries (tests), None = random.
    firewalled: passed to the DHT we build (None = detect; True = never tell
    peers we are reachable, which makes them use the LAN / wait paths).
    """

    keypair: KeyPair
    bootstrap: tuple[Address, ...] = ()
    host: str = "127.0.0.1"
    port: int = 0
    max_peers: int = sl.MAX_PEERS
    max_parallel: int = sl.MAX_PARALLEL
    firewall: Firewall | None = None
    connect_timeout: float = 20.0
    seed: int | None = None
    firewalled: bool | None = None


@dataclass
class PeerInfo:
    """What a connection event carries besides the connection."""

    public_key: bytes
    topics: list[bytes] = field(default_factory=list)
    client: bool = False  # we dialled it


ConnectionCallback = Callable[[object, PeerInfo], None | Awaitable[None]]


class Swarm:
    def __init__(self, config: SwarmConfig, dht=None, network=None):
        """Use `dht` if given (not destroyed with the swarm), else build one
        from the config on `network` (default: real UDP) in `ready()`."""
        self.config = config
        self.keypair = config.keypair
        self.dht = dht
        self._own_dht = dht is None
        self._network = network
        self.rng = random.Random(config.seed)
        self.table = sl.PeerTable(
            self.keypair.public_key, config.max_peers, config.max_parallel, self.rng
        )
        self.connections: dict[bytes, object] = {}
        self.peer_infos: dict[bytes, PeerInfo] = {}  # of the open connections
        self._dialing: dict[bytes, bool] = {}  # public key -> superseded by an incoming connection
        self.stats = dict.fromkeys(
            ("dialled", "dial_failed", "incoming", "duplicates", "firewalled", "over_limit"), 0
        )
        self._discoveries: dict[bytes, Discovery] = {}
        self._callbacks: list[ConnectionCallback] = []
        self._queue: asyncio.Queue = asyncio.Queue()
        self._server = None
        self._server_ready: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()  # set while no dial is in flight or due
        self._dialer: asyncio.Task | None = None
        self._ready: asyncio.Task | None = None
        self.destroyed = False

    # -- lifecycle -----------------------------------------------------------
    async def ready(self) -> None:
        """Bootstrap the DHT (once)."""
        if self._ready is None:
            self._ready = asyncio.ensure_future(self._start())
        await asyncio.shield(self._ready)

    async def _start(self) -> None:
        if self.dht is None:
            from mesh.dht import DHT, DHTConfig  # the DHT package is optional for a given dht
            from mesh.net import UDPNetwork

            cfg = DHTConfig(bootstrap=tuple(self.config.bootstrap), host=self.config.host,
                            port=self.config.port, firewalled=self.config.firewalled)
            self.dht = DHT(cfg, network=self._network or UDPNetwork())
        await self.dht.ready()
        self._dialer = asyncio.ensure_future(self._dial_loop())

    async def destroy(self) -> None:
        """Leave every topic (unannounce), close every connection and the DHT we own."""
        if self.destroyed:
            return
        self.destroyed = True
        for d in list(self._discoveries.values()):
            await d.destroy()
        self._discoveries.clear()
        if self._dialer is not None:
            self._dialer.cancel()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, *( [self._dialer] if self._dialer else []),
                             return_exceptions=True)
        for conn in list(self.connections.values()):
            conn.destroy(ClosedError("swarm destroyed"))
        self.connections.clear()
        self.peer_infos.clear()
        if self._server is not None:
            await self._server.close()
        if self._own_dht and self.dht is not None:
            await self.dht.destroy()
        self._queue.put_nowait(None)

    # -- topics --------------------------------------------------------------
    def join(self, topic: bytes, server: bool = True, client: bool = True) -> Discovery:
        """Announce (server) and/or look up (client) `topic`; returns its handle."""
        if self.destroyed:
            raise ClosedError("swarm destroyed")
        if len(topic) != 32:
            raise ValueError("a topic is 32 bytes")
        d = self._discoveries.get(topic)
        if d is not None:
            d.update(server=server, client=client)
            return d
        d = Discovery(self, topic, server=server, client=client)
        self._discoveries[topic] = d
        d.start()
        return d

    async def leave(self, topic: bytes) -> None:
        """Stop announcing and looking up `topic` (unannounces it)."""
        d = self._discoveries.pop(topic, None)
        self.table.left(topic)
        if d is not None:
            await d.destroy()

    async def flush(self, timeout: float = 30.0) -> None:
        """Wait until every discovery flushed and no dial is in flight."""
        await asyncio.gather(*(d.flushed() for d in self._discoveries.values()))
        self._settled.clear()  # the dialer sets it again once it saw what the flush found
        self._wake.set()
        await asyncio.wait_for(self._settled.wait(), timeout)

    # -- used by Discovery ---------------------------------------------------
    async def ensure_server(self) -> object:
        """Listen on our key pair once; returns the listening server."""
        if self._server_ready is None:
            self._server = create_server(self.dht, firewall=self._firewall)
            self._server.on_connection(self._on_incoming)
            self._server_ready = asyncio.ensure_future(self._server.listen(self.keypair))
        await asyncio.shield(self._server_ready)
        return self._server

    def peers_found(self, topic: bytes, peers) -> None:
        """A lookup reply for `topic` named these PeerRecords."""
        now = asyncio.get_running_loop().time()
        for rec in peers:
            peer = self.table.found(rec.public_key, list(rec.relay_addresses), topic, now)
            info = self.peer_infos.get(rec.public_key)
            if peer is not None and info is not None and topic not in info.topics:
                info.topics.append(topic)
        self._wake.set()

    def client_topics_changed(self) -> None:
        self.table.client_topics = {t for t, d in self._discoveries.items() if d.client}
        self._wake.set()

    # -- connections ---------------------------------------------------------
    def on_connection(self, callback: ConnectionCallback) -> None:
        """Call `callback(conn, peer_info)` for each new connection (instead of
        delivering it to `async for conn, info in swarm`)."""
        self._callbacks.append(callback)

    def __aiter__(self):
        return self

    async def __anext__(self):
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)
            raise StopAsyncIteration
        return item

    def _firewall(self, remote_public_key: bytes, *_payload) -> bool:
        if remote_public_key == self.keypair.public_key:
            return True
        peer = self.table.peers.get(remote_public_key)
        if peer is not None and peer.banned:
            self.stats["firewalled"] += 1
            return True
        hook = self.config.firewall
        if hook is not None and hook(remote_public_key):
            self.table.ban(remote_public_key, asyncio.get_running_loop().time())
            self.stats["firewalled"] += 1
            return True
        return False

    async def _dial_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            for peer in self.table.dials(loop.time()):
                self.table.dial_started(peer.public_key)
                self._spawn(self._dial(peer))
            deadline = self.table.next_deadline()
            if self.table.connecting_count == 0:
                self._settled.set()
            else:
                self._settled.clear()
            self._wake.clear()
            timeout = None if deadline is None else max(deadline - loop.time(), 0.01)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dial(self, peer: sl.PeerState) -> None:
        self.stats["dialled"] += 1
        pk = peer.public_key
        if self._firewall(pk):
            self.table.closed(pk, asyncio.get_running_loop().time())
            return
        self._dialing[pk] = False  # True once an incoming connection superseded this dial
        try:
            conn = await asyncio.wait_for(
                connect(self.dht, pk, keypair=self.keypair, relay_addresses=peer.relay_addresses),
                self.config.connect_timeout,
            )
        except (MeshError, asyncio.TimeoutError):
            self.stats["dial_failed"] += 1
            if not self._dialing.pop(pk, False):
                self.table.closed(pk, asyncio.get_running_loop().time())
            self._wake.set()
            return
        if self._dialing.pop(pk, False):
            self.stats["duplicates"] += 1
            conn.destroy(DuplicateConnectionError("duplicate connection"))
        else:
            self._add_connection(conn, client=True)
        self._wake.set()

    def _on_incoming(self, conn) -> None:
        self.stats["incoming"] += 1
        pk = conn.remote_public_key
        if self.destroyed or (pk not in self.connections and not self.table.accepts_incoming()):
            self.stats["over_limit"] += 1
            conn.destroy(ClosedError("too many peers"))
            return
        if pk in self._dialing and pk not in self.connections:
            # Both sides are dialling: the same tie break as for two open connections,
            # with our pending dial as the existing one (hyperswarm counts it too).
            if not sl.keep_new_connection(self.keypair.public_key, pk, conn.is_initiator, False):
                self.stats["duplicates"] += 1
                conn.destroy(DuplicateConnectionError("duplicate connection"))
                return
            self._dialing[pk] = True
        self._add_connection(conn, client=False)

    def _add_connection(self, conn, client: bool) -> None:
        pk = conn.remote_public_key
        now = asyncio.get_running_loop().time()
        existing = self.connections.get(pk)
        if existing is not None:
            self.stats["duplicates"] += 1
            keep_new = sl.keep_new_connection(
                self.keypair.public_key, pk, conn.is_initiator, _exchanged_data(existing)
            )
            if not keep_new:
                if client:
                    self.table.opened(pk, now)  # the dial slot ends; the peer stays connected
                conn.destroy(DuplicateConnectionError("duplicate connection"))
                return
            self.connections.pop(pk)  # its close must not count as a lost peer
            self.peer_infos.pop(pk, None)
            existing.destroy(DuplicateConnectionError("duplicate connection"))
        peer = self.table.opened(pk, now)
        info = PeerInfo(pk, list(peer.topics), client)
        self.connections[pk] = conn
        self.peer_infos[pk] = info
        self._spawn(self._watch(conn))
        if not self._callbacks:  # iterate or register callbacks: a queue nobody reads would grow
            self._queue.put_nowait((conn, info))
        for cb in self._callbacks:
            result = cb(conn, info)
            if inspect.isawaitable(result):
                self._spawn(result)

    async def _watch(self, conn) -> None:
        await asyncio.wait([conn.closed])  # the close reason does not change the bookkeeping
        pk = conn.remote_public_key
        if self.connections.get(pk) is not conn:
            return
        del self.connections[pk]
        self.peer_infos.pop(pk, None)
        if not self.destroyed:
            self.table.closed(pk, asyncio.get_running_loop().time())
            self._wake.set()


def _exchanged_data(conn) -> bool:
    """Whether an open connection was in use (it delivered application messages).

    hyperswarm counts raw bytes, secret-stream headers included, so every open
    connection counts and two peers dialling each other at once can each drop
    the one the other kept; counting messages keeps the key tie break for fresh
    connections and still replaces a used one the peer must have lost."""
    return conn.counters.get("messages", 0) > 0
