"""`DHT`: a HyperDHT-compatible node (dht-rpc + hyperdht commands).

The node owns a routing table, a store for what others announce, the RPC
driver (`io.py`) and one maintenance timer. Client verbs are built from one
primitive, the iterative query (`driver.QueryRun`): announce = LOOKUP + commit
ANNOUNCE to the closest replies, put = GET + commit PUT.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .. import crypto
from ..encoding import Address
from ..errors import ClosedError
from ..net import Network
from . import handlers
from . import messages as m
from .driver import QueryRun
from .io import IncomingRequest, Reply, RpcIO
from .nat import NatSampler
from .routing import RoutingTable
from .store import RECORD_MAX_AGE, GenerationCache, Store
from .upkeep import TICK, Upkeep
from .verbs import FindPeerResult, LookupResult, MutableResult, Verbs, _map_lookup, _OwnAnnounce

MAX_CHECKS = 10
MAX_DELAYED_PING_MS = 10_000


@dataclass(frozen=True)
class DHTConfig:
    """bootstrap: nodes to join through, as (host, port) or "host:port" (empty = the
    first node of a network).
    ephemeral: True never stores for others; False is persistent at once (needs a
    reachable address: bootstrappers, testnets); None decides adaptively after
    ~20 minutes of stable, unfirewalled uptime, as Node does.
    firewalled: None = detect with PING_NAT; False/True = trust the caller."""

    bootstrap: tuple[Address, ...] = ()
    host: str = "127.0.0.1"
    port: int = 0
    ephemeral: bool | None = None
    firewalled: bool | None = None
    concurrency: int = 10
    request_timeout: float = 1.0


@dataclass(slots=True)
class HostedServer:
    """A server whose handshakes this node answers (see `DHT.register_server`)."""

    public_key: bytes
    record: bytes
    on_handshake: Callable | None
    on_holepunch: Callable | None


class DHT(Upkeep, Verbs):
    def __init__(self, config: DHTConfig | None = None, network: Network | None = None):
        if network is None:
            from ..net import UDPNetwork
            network = UDPNetwork()
        self.config = config or DHTConfig()
        self.network = network
        self.io = RpcIO(network, self.config.host, self.config.port, self._on_request, self._on_response)
        self.io.closest_addresses = self._closest_addresses
        self.stats = self.io.stats
        self.stats.update(queries=0, relayed=0)
        self.table = RoutingTable(crypto.random_bytes(32))
        self.nat = NatSampler()
        self.id: bytes | None = None
        self.firewalled = True
        self.ephemeral = True
        self.destroyed = False
        self.store: Store | None = None
        self.refreshes: GenerationCache | None = None
        self.servers: dict[bytes, HostedServer] = {}
        self._default_keypair: crypto.KeyPair | None = None  # for dht.connect() without a key pair
        self._ready: asyncio.Task | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._tick = random.randrange(100)
        self._last_query_tick = 0
        self._stable = 0
        self._repinging = 0
        self._checks = 0
        self._down_hints = 0
        self._tasks: set[asyncio.Task] = set()
        self._announces: dict[tuple[bytes, bytes], _OwnAnnounce] = {}
        self._bootstrap = tuple(_parse_bootstrap(b) for b in self.config.bootstrap)
        self._rng = random.Random()

    # ------------------------------------------------------------ lifecycle
    def now(self) -> float:
        return self.io.loop.time()

    async def ready(self) -> None:
        """Bind the sockets and bootstrap (once); later calls wait for the same."""
        if self._ready is None:
            self._ready = asyncio.ensure_future(self._start())
        await asyncio.shield(self._ready)

    async def _start(self) -> None:
        await self.io.bind()
        now = self.now()
        self.store = Store(now)
        self.refreshes = GenerationCache(RECORD_MAX_AGE, 65_536, now)
        if self.config.firewalled is not None:
            self._set_firewalled(self.config.firewalled)
        if self.config.ephemeral is False:
            self._set_firewalled(False if self.config.firewalled is None else self.config.firewalled)
            self._make_persistent(self.address)
        self._tick_handle = self.io.loop.call_later(TICK, self._on_tick)
        if self._bootstrap:
            await self._run_bootstrap()

    async def _run_bootstrap(self) -> None:
        await QueryRun(self, self.table.id, m.FIND_NODE, internal=True).finished()
        if self.config.firewalled is None and self.firewalled:
            await self._check_firewall()

    @property
    def address(self) -> Address:
        """The server socket's local address."""
        return self.io.server.local_address

    @property
    def public_address(self) -> Address | None:
        return self.nat.address

    def bootstrap_nodes(self) -> list[Address]:
        return [a for a in self._bootstrap if a != self.address]

    async def destroy(self) -> None:
        if self.destroyed:
            return
        self.destroyed = True
        if self._tick_handle:
            self._tick_handle.cancel()
        for a in self._announces.values():
            if a.handle:
                a.handle.cancel()
        self._announces.clear()
        if self._ready is not None and not self._ready.done():
            self._ready.cancel()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ready is not None:
            await asyncio.gather(self._ready, return_exceptions=True)
        self.io.close()

    def spawn(self, coro: Awaitable) -> asyncio.Task:
        """Run a background coroutine owned by the node (cancelled on destroy)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.stats["task_errors"] = self.stats.get("task_errors", 0) + 1

    # ------------------------------------------------------------ serving
    def _on_request(self, req: IncomingRequest) -> None:
        if req.id is not None and not req.external:
            self._add_node(req.from_address, req.id)
        if req.internal:
            self._on_internal(req)
        elif not handlers.handle_user_command(self, req):
            self.stats["unknown_command"] += 1
            req.error(m.ERR_UNKNOWN_COMMAND, closer_nodes=req.target is not None)

    def _on_internal(self, req: IncomingRequest) -> None:
        c, v = req.command, req.value
        if c == m.PING:
            req.reply(None, token=False, closer_nodes=False)
        elif c == m.PING_NAT:
            if v is None or len(v) < 2:
                return
            port = int.from_bytes(v[:2], "little")
            if port == 0:
                return
            req.reply(None, token=False, closer_nodes=False, to=(req.from_address[0], port))
        elif c == m.FIND_NODE:
            if req.target is not None:
                req.reply(None, token=False, closer_nodes=True)
        elif c == m.DOWN_HINT:
            if v is None or len(v) < 6:
                return
            node = self.table.get(crypto.hash(v[:6]))
            if node is not None and self._checks < MAX_CHECKS:
                node.down_hints += 1
                self._checks += 1

                def done(_x, n=node):
                    self._checks -= 1
                    if isinstance(_x, Exception):
                        self.table.remove(n.id)
                self.io.request(node.address, m.PING, internal=True, on_reply=done, on_error=done)
            req.reply(None, token=False, closer_nodes=False)
        elif c == m.DELAYED_PING:
            if v is None or len(v) < 4:
                return
            delay = int.from_bytes(v[:4], "little")
            if delay > MAX_DELAYED_PING_MS:
                return
            self.io.loop.call_later(delay / 1000, lambda: req.reply(None, token=False, closer_nodes=False))
        else:
            self.stats["unknown_command"] += 1
            req.error(m.ERR_UNKNOWN_COMMAND, closer_nodes=req.target is not None)

    def register_server(self, keypair_or_public_key, on_handshake: Callable | None = None,
                        on_holepunch: Callable | None = None, relay_addresses=()) -> bytes:
        """Host a server: PEER_HANDSHAKE / PEER_HOLEPUNCH for hash(public key)
        reaching this node call the handlers; LOOKUP / FIND_PEER on that target
        return its record. Returns the target."""
        pk = getattr(keypair_or_public_key, "public_key", keypair_or_public_key)
        target = crypto.hash(pk)
        record = m.encode_peer(m.PeerRecord(pk, tuple(relay_addresses)))
        self.servers[target] = HostedServer(pk, record, on_handshake, on_holepunch)
        return target

    def unregister_server(self, public_key: bytes) -> None:
        self.servers.pop(crypto.hash(public_key), None)

    # ------------------------------------------------------------ connections
    # hyperdht's spelling (dht.createServer / dht.connect). The connection layer
    # sits above the DHT and imports it, so these import it lazily.
    def create_server(self, firewall: Callable | None = None):
        """A connection server on this node (`mesh.server.Server`); then `await server.listen(keypair)`."""
        from ..server import create_server

        return create_server(self, firewall)

    async def connect(self, public_key: bytes, keypair: crypto.KeyPair | None = None, **options):
        """A secure `mesh.connection.Connection` to the server listening on `public_key`
        (options: relay_addresses, timeout, lan; see `mesh.connect.connect`)."""
        from ..connect import connect

        if keypair is None:
            if self._default_keypair is None:
                self._default_keypair = crypto.keypair()
            keypair = self._default_keypair
        return await connect(self, public_key, keypair=keypair, **options)

    # ------------------------------------------------------------ socket sharing
    def set_udx_handler(self, handler: Callable[[bytes, Address, object], None] | None) -> None:
        self.io.udx_handler = handler

    def set_probe_handler(self, handler: Callable[[bytes, Address, object], None] | None) -> None:
        self.io.probe_handler = handler

    def send_raw(self, data: bytes, addr: Address, socket=None) -> None:
        self.io.send_raw(data, addr, socket)

    # ------------------------------------------------------------ client verbs
    def request(self, addr: Address, command: int, *, target: bytes | None = None, value: bytes | None = None,
                token: bytes | None = None, internal: bool = False, retries: int = 3,
                timeout: float | None = None, socket=None) -> "asyncio.Future[Reply]":
        """One request; resolves to the `Reply` (check `.error`) or raises TimeoutError_."""
        if self.destroyed:
            raise ClosedError("DHT destroyed")
        fut = self.io.loop.create_future()

        def ok(r):
            if not fut.done():
                fut.set_result(r)

        def fail(e):
            if not fut.done():
                fut.set_exception(e)
        out = self.io.request(addr, command, internal=internal, target=target, value=value, token=token,
                              retries=retries, timeout=timeout or self.config.request_timeout,
                              on_reply=ok, on_error=fail, socket=socket)
        fut.add_done_callback(lambda f: out.cancel() if f.cancelled() else None)
        return fut

    def query(self, target: bytes, command: int, value: bytes | None = None, *, internal: bool = False,
              map_fn=None, nodes=None) -> QueryRun:
        return QueryRun(self, target, command, value, internal=internal, map_fn=map_fn).start(nodes)

    def lookup(self, topic: bytes, nodes=None) -> QueryRun:
        """Async iterator of `LookupResult`s (replies holding peer records)."""
        self._last_query_tick = self._tick
        return QueryRun(self, topic, m.LOOKUP, map_fn=_map_lookup).start(nodes) if self._ready_done() else \
            _Deferred(self, lambda: QueryRun(self, topic, m.LOOKUP, map_fn=_map_lookup).start(nodes))

    def _ready_done(self) -> bool:
        return self._ready is not None and self._ready.done()


class _Deferred:
    """An async iterator that waits for the node to be ready before querying."""

    def __init__(self, dht: DHT, make: Callable[[], QueryRun]):
        self.dht = dht
        self.make = make

    def __aiter__(self):
        return self._it()

    async def _it(self):
        await self.dht.ready()
        async for x in self.make():
            yield x

    async def finished(self) -> list:
        return [x async for x in self]


def _parse_bootstrap(entry) -> Address:
    """("host", port) or "host:port" (the form hyperdht's bootstrap lists use)."""
    if isinstance(entry, str):
        host, sep, port = entry.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"bootstrap entry is not host:port: {entry!r}")
        return (host, int(port))
    host, port = entry
    return (str(host), int(port))


__all__ = ["DHT", "DHTConfig", "FindPeerResult", "LookupResult", "MutableResult"]
