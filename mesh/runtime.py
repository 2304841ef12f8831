"""MeshRuntime: the mesh objects one process needs, built once and shared.

    runtime = MeshRuntime(RuntimeConfig(keypair=kp, bootstrap=(("127.0.0.1", 49737),)),
                          emit=print_event)
    await runtime.start()            # DHT bootstrapped, Swarm on it, RPC server ready
    runtime.dht                      # mesh.dht.DHT (runtime.address, runtime.public_key)
    runtime.swarm                    # mesh.swarm.Swarm on that DHT
    runtime.rpc                      # mesh.rpc.RpcServer, attached to every Swarm connection
    runtime.client                   # mesh.rpc.RpcClient: calls by public key (dht.connect)
    runtime.peer(conn)               # the RpcPeer (calling side) on a Swarm connection
    runtime.peers(topic)             # RpcPeers on connections found through `topic` (None: all dialled)
    await runtime.connection(topic, timeout)  # first Swarm connection found through topic
    await runtime.settle(topic, timeout)      # topic looked up, dials to what it found done
    runtime.look_up(topic); await runtime.forget(topic)   # dial a topic's members without announcing
    await runtime.stop()             # leave topics, close connections, destroy the DHT

It is also what a worker role runs on (`workers.base.Mesh`-shaped): `.swarm`,
`.rpc`, `attach_connections = False` (the runtime attaches every connection
itself, including those made before the role started) and `.peers`.
`emit(event, **fields)` reports "connection"/"disconnection" per Swarm
connection and "announced" {topic} once a server join has been announced.
`mesh` never imports `workers`: roles are imported by name (mesh.node).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import crypto
from .dht import DHT, DHTConfig
from .encoding import Address
from .rpc import RpcClient, RpcConfig, RpcPeer, RpcServer
from .swarm import PeerInfo, Swarm, SwarmConfig

Emit = Callable[..., None]


def _no_emit(event: str, **fields: Any) -> None:
    pass


@dataclass(frozen=True)
class RuntimeConfig:
    """keypair: the node's identity (Swarm, RPC server channel, DHT announces).
    bootstrap: DHT bootstrap nodes (never public ones: required for a network).
    host/port: the UDP socket (port 0: any).  persistent: store records for
    others at once (bootstrap-like nodes with a reachable address).
    rpc: limits of the RPC server and client.  max_peers: Swarm connection cap.
    """

    keypair: crypto.KeyPair
    bootstrap: tuple[Address, ...] = ()
    host: str = "127.0.0.1"
    port: int = 0
    persistent: bool = False
    rpc: RpcConfig = field(default_factory=RpcConfig)
    max_peers: int = 64

    def dht_config(self) -> DHTConfig:
        return DHTConfig(bootstrap=self.bootstrap, host=self.host, port=self.port,
                         ephemeral=False if self.persistent else None,
                         firewalled=False if self.persistent else None)


class _Refreshed:
    """A Discovery handle whose `flushed()` waits for a given refresh."""

    def __init__(self, discovery: Any, refresh: asyncio.Task):
        self._discovery = discovery
        self._refresh = refresh

    async def flushed(self) -> bool:
        await asyncio.shield(self._refresh)
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._discovery, name)


class _SwarmView:
    """The Swarm as a worker sees it: joins are reported ("announced") once flushed."""

    def __init__(self, runtime: "MeshRuntime"):
        self._rt = runtime

    def join(self, topic: bytes, *, server: bool = True, client: bool = True):
        before = self._rt._joined.get(topic)
        # Read before swarm.join: it updates that same Discovery in place (server=True).
        lookup_only = before is not None and not before.server
        discovery = self._rt.swarm.join(topic, server=server, client=client)
        self._rt._joined[topic] = discovery
        if server and lookup_only:
            # A topic only looked up so far: its first flush is long done, so wait
            # for an announce of its own before calling it announced.
            discovery = _Refreshed(discovery, self._rt._spawn(discovery.refresh()))
        if server:
            self._rt._spawn(self._rt._report_announce(topic, discovery))
        return discovery

    async def leave(self, topic: bytes) -> None:
        self._rt._joined.pop(topic, None)
        await self._rt.swarm.leave(topic)
        self._rt.emit("left", topic=topic.hex())

    def on_connection(self, callback: Callable[[Any, Any], Any]) -> None:
        self._rt._callbacks.append(callback)
        for conn, info in list(self._rt._open.values()):  # connections made before the role started
            callback(conn, info)


class MeshRuntime:
    """See the module docstring. Not reusable after `stop()`."""

    attach_connections = False  # for workers.base: the runtime attaches connections itself

    def __init__(self, config: RuntimeConfig, *, emit: Emit | None = None, dht: DHT | None = None):
        self.config = config
        self.emit = emit or _no_emit
        self.dht: DHT | None = dht
        self._own_dht = dht is None
        self.swarm: Swarm | None = None
        self.rpc = RpcServer(config.rpc)
        self.client: RpcClient | None = None
        self._open: dict[int, tuple[Any, PeerInfo]] = {}
        self._peers: dict[int, RpcPeer] = {}
        self._callbacks: list[Callable[[Any, Any], Any]] = []
        self._waiters: list[tuple[Callable[[Any, PeerInfo], bool], asyncio.Future]] = []
        self._tasks: set[asyncio.Task] = set()
        self._joined: dict[bytes, Any] = {}  # discoveries of the topics joined through worker_swarm
        self._view = _SwarmView(self)
        self.started = False
        self.stopped = False

    # ------------------------------------------------------------ lifecycle

    @property
    def public_key(self) -> bytes:
        return self.config.keypair.public_key

    @property
    def address(self) -> Address:
        return self.dht.address

    async def start(self) -> None:
        """Bootstrap the DHT and start the Swarm; raises what DHT.ready raises."""
        if self.started:
            return
        self.started = True
        if self.dht is None:
            self.dht = DHT(self.config.dht_config())
        await self.dht.ready()
        swarm_config = SwarmConfig(keypair=self.config.keypair, bootstrap=tuple(self.config.bootstrap),
                                   max_peers=self.config.max_peers)
        self.swarm = Swarm(swarm_config, dht=self.dht)
        self.swarm.on_connection(self._on_connection)
        await self.swarm.ready()
        keypair = self.config.keypair
        self.client = RpcClient(lambda pk: self.dht.connect(pk, keypair), self.config.rpc)

    async def stop(self) -> None:
        """Unannounce every topic, close connections and the RPC client, destroy the DHT."""
        if self.stopped:
            return
        self.stopped = True
        for _, fut in self._waiters:
            if not fut.done():
                fut.cancel()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.client is not None:
            await self.client.close()
        if self.swarm is not None:
            await self.swarm.destroy()
        if self._own_dht and self.dht is not None and not self.dht.destroyed:
            await self.dht.destroy()

    async def __aenter__(self) -> "MeshRuntime":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # ------------------------------------------------------------ for workers (workers.base.Mesh shape)

    @property
    def worker_swarm(self) -> _SwarmView:
        return self._view

    def peers(self, topic: bytes | None = None) -> list[RpcPeer]:
        """RPC peers on the open connections we dialled after finding them on
        `topic` (None: on any topic). Incoming connections are left out: a
        caller (a gateway, a test client) need not serve RPC at all."""
        out = []
        for key, (conn, info) in list(self._open.items()):
            if info.client and (topic is None or topic in info.topics):
                out.append(self.peer(conn))
        return out

    def peer(self, conn: Any) -> RpcPeer:
        """The calling side of RPC on a Swarm connection (one per connection)."""
        key = id(conn)
        peer = self._peers.get(key)
        if peer is None or peer.is_closed:
            peer = RpcPeer(conn, self.config.rpc)
            self._peers[key] = peer
        return peer

    async def connection(self, topic: bytes | None = None, timeout: float = 30.0, *,
                         public_key: bytes | None = None) -> Any:
        """The first open Swarm connection to a peer found on `topic` (None: any)
        and/or with `public_key`, waiting up to `timeout` (asyncio.TimeoutError)."""
        def fits(conn: Any, info: PeerInfo) -> bool:
            return ((topic is None or topic in info.topics)
                    and (public_key is None or info.public_key == public_key))

        for conn, info in list(self._open.values()):
            if fits(conn, info):
                return conn
        fut = asyncio.get_running_loop().create_future()
        entry = (fits, fut)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def look_up(self, topic: bytes) -> bool:
        """Look `topic` up as a client (to dial its members) unless this runtime's
        roles already joined it; True if this call joined it."""
        if topic in self._joined:
            return False
        self._view.join(topic, server=False, client=True)
        return True

    async def forget(self, topic: bytes) -> None:
        """Leave a topic joined only by `look_up` (one that is announced stays)."""
        discovery = self._joined.get(topic)
        if discovery is not None and not discovery.server:
            await self._view.leave(topic)

    async def settle(self, topic: bytes, timeout: float = 30.0) -> None:
        """Wait until `topic`'s first lookup is done and no dial is in flight, so
        `peers(topic)` holds every peer found so far (asyncio.TimeoutError)."""
        async def settled() -> None:
            discovery = self._joined.get(topic)
            if discovery is not None:
                await discovery.flushed()
            await self.swarm.flush(timeout)
        await asyncio.wait_for(settled(), timeout)

    # ------------------------------------------------------------ internals

    def _on_connection(self, conn: Any, info: PeerInfo) -> None:
        key = id(conn)
        self.rpc.attach(conn)
        self._open[key] = (conn, info)
        self.emit("connection", public_key=info.public_key.hex(), topics=[t.hex() for t in info.topics],
                  client=info.client)
        conn.closed.add_done_callback(lambda _f: self._closed(key, info))
        for fits, fut in list(self._waiters):
            if not fut.done() and fits(conn, info):
                fut.set_result(conn)
        for cb in self._callbacks:
            result = cb(conn, info)
            if asyncio.iscoroutine(result):
                self._spawn(result)

    def _closed(self, key: int, info: PeerInfo) -> None:
        self._open.pop(key, None)
        self._peers.pop(key, None)
        self.emit("disconnection", public_key=info.public_key.hex())

    async def _report_announce(self, topic: bytes, discovery: Any) -> None:
        await discovery.flushed()
        self.emit("announced", topic=topic.hex())

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


@dataclass(frozen=True)
class RoleMesh:
    """What a worker role is started with: `workers.base.Mesh`'s fields plus
    `peers(topic_key)` (RPC peers found on a topic), `connection(topic_key,
    timeout)` (wait for one), `settle(topic_key, timeout)` (wait for the topic's
    lookup and dials), `look_up(topic_key)` / `forget(topic_key)` (find a topic's
    members without announcing it) and the runtime itself for anything else."""

    swarm: Any
    rpc: Any
    peers: Callable[[bytes | None], list]
    connection: Callable[..., Any]
    settle: Callable[..., Any]
    look_up: Callable[[bytes], bool]
    forget: Callable[[bytes], Any]
    runtime: MeshRuntime
    attach_connections: bool = False


def role_mesh(runtime: MeshRuntime) -> RoleMesh:
    return RoleMesh(swarm=runtime.worker_swarm, rpc=runtime.rpc, peers=runtime.peers,
                    connection=runtime.connection, settle=runtime.settle, look_up=runtime.look_up,
                    forget=runtime.forget, runtime=runtime)
