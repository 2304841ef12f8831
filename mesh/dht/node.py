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
from dataclasses import dataclass, field

from .. import crypto
from .. import encoding as enc
from ..crypto import KeyPair
from ..encoding import Address
from ..errors import ClosedError, DecodeError, TimeoutError_
from ..net import Network
from . import handlers
from . import messages as m
from .driver import QueryRun
from .io import IncomingRequest, Reply, RpcIO
from .nat import NatSampler
from .routing import Node, RoutingTable
from .store import GenerationCache, RECORD_MAX_AGE, Store

TICK = 5.0
PING_EVERY_TICKS = 8
REFRESH_TICKS = 60
STABLE_TICKS = 240
MAX_REPINGS = 3
MAX_CHECKS = 10
DOWN_HINTS_PER_TICK = 50
ANNOUNCE_REFRESH = 10 * 60.0
ANNOUNCE_JITTER = 2 * 60.0
MAX_DELAYED_PING_MS = 10_000


@dataclass(frozen=True)
class DHTConfig:
    """bootstrap: host:port of nodes to join through (empty = first node of a network).
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
class LookupResult:
    from_address: Address
    from_id: bytes | None
    token: bytes | None
    peers: list[m.PeerRecord]
    bump: int = 0


@dataclass(slots=True)
class FindPeerResult:
    from_address: Address
    peer: m.PeerRecord


@dataclass(slots=True)
class MutableResult:
    seq: int
    value: bytes
    signature: bytes
    from_address: Address | None = None


@dataclass(slots=True)
class HostedServer:
    """A server whose handshakes this node answers (see `DHT.register_server`)."""

    public_key: bytes
    record: bytes
    on_handshake: Callable | None
    on_holepunch: Callable | None


@dataclass(slots=True)
class _OwnAnnounce:
    topic: bytes
    keypair: KeyPair
    relays: tuple[Address, ...]
    handle: asyncio.TimerHandle | None = None


def _map_lookup(r: Reply):
    if not r.value:
        return None
    try:
        lr = m.decode_lookup_reply(r.value)
    except DecodeError:
        return None
    return LookupResult(r.from_address, r.from_id, r.token, lr.peers, lr.bump)


class DHT:
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
        self._bootstrap = tuple(self.config.bootstrap)
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

    # ------------------------------------------------------------ persistence / NAT
    def _set_firewalled(self, firewalled: bool) -> None:
        self.firewalled = firewalled
        self.io.firewalled = firewalled

    def _make_persistent(self, addr: Address) -> None:
        self.ephemeral = False
        self.io.ephemeral = False
        self.id = m.node_id(addr)
        self.table.set_id(self.id)
        self.io.table_id = self.id

    async def _check_firewall(self) -> None:
        """PING_NAT from the client socket asking for an answer to our server port;
        answers that arrive on the server socket prove we are reachable."""
        nodes = [n.address for n in self.table.closest(self.table.id, 5)]
        for b in self.bootstrap_nodes():
            if len(nodes) >= 5:
                break
            if b not in nodes:
                nodes.append(b)
        if not nodes:
            return
        value = enc.uint16(self.address[1])
        replies = await asyncio.gather(
            *[self.request(a, m.PING_NAT, internal=True, value=value, socket=self.io.client) for a in nodes],
            return_exceptions=True,
        )
        ok = [r for r in replies if isinstance(r, Reply) and r.socket is self.io.server]
        need = 3 if len(nodes) >= 3 else 1
        hosts = {r.to[0] for r in ok}
        if len(ok) >= need and len(hosts) == 1 and all(r.to[1] == self.address[1] for r in ok):
            self._set_firewalled(False)

    # ------------------------------------------------------------ table upkeep
    def _closest_addresses(self, target: bytes) -> list[Address]:
        return [n.address for n in self.table.closest(target)]

    def _on_response(self, reply: Reply, external: bool) -> None:
        if not external and (reply.from_id is not None or self.nat.size < 3):
            self.nat.add(reply.to)
        if reply.from_id is not None and not external:
            self._add_node(reply.from_address, reply.from_id)

    def _add_node(self, addr: Address, id_: bytes) -> None:
        existing = self.table.get(id_)
        if existing is not None:
            existing.seen = self._tick
            return
        node = Node(id_, addr, self._tick)
        oldest = self.table.add(node)
        if oldest is not None and self._repinging < MAX_REPINGS:
            self._repinging += 1
            self._ping_node(oldest, repinging=True)

    def _ping_node(self, node: Node, repinging: bool = False) -> None:
        def ok(_reply):
            if repinging:
                self._repinging -= 1
            self.table.keep(node, self._tick) if repinging else setattr(node, "pinged", self._tick)

        def fail(_err):
            if repinging:
                self._repinging -= 1
            self.table.evict(node)

        self.io.request(node.address, m.PING, internal=True, on_reply=ok, on_error=fail)

    def _on_timeout(self, addr: Address, id_: bytes | None) -> None:
        if id_ is not None:
            self.table.remove(id_)

    def _send_down_hint(self, ref: Address, down: Address) -> None:
        if self._down_hints >= DOWN_HINTS_PER_TICK:
            return
        self._down_hints += 1
        self.io.request(ref, m.DOWN_HINT, internal=True, value=enc.ipv4(down), retries=1,
                        on_reply=_ignore, on_error=_ignore)

    def _on_tick(self) -> None:
        if self.destroyed:
            return
        self._tick += 1
        self._down_hints = 0
        self._tick_handle = self.io.loop.call_later(TICK, self._on_tick)
        if self._tick % PING_EVERY_TICKS == 0:
            for n in self.table.oldest(3 if len(self.io.inflight) > 2 else 5):
                self._ping_node(n)
        idle = self._tick - self._last_query_tick >= REFRESH_TICKS
        if (idle or (len(self.table) < self.table.k and self._tick % 64 == 0)) and self._bootstrap_done():
            self._last_query_tick = self._tick
            self.spawn(self._refresh())
        if self.config.ephemeral is None and self.ephemeral:
            self._adaptive_tick()

    def _bootstrap_done(self) -> bool:
        return self._ready is not None and self._ready.done()

    async def _refresh(self) -> None:
        node = self.table.random_node(self._rng)
        target = node.id if node else self.table.id
        await QueryRun(self, target, m.FIND_NODE, internal=True, concurrency=2).finished()

    def _adaptive_tick(self) -> None:
        pub = self.nat.address
        if self.firewalled or pub is None or pub[1] != self.address[1]:
            self._stable = 0
            return
        self._stable += 1
        if self._stable >= STABLE_TICKS:
            self._make_persistent(pub)

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
                if isinstance(e, TimeoutError_):
                    pass
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

    async def announce(self, topic: bytes, keypair: KeyPair, relay_addresses=(), *, refresh: bool = True,
                       bump: int = 0) -> int:
        """LOOKUP then ANNOUNCE to the closest nodes; returns how many accepted.
        With `refresh`, the announce is repeated in the background before it expires."""
        await self.ready()
        relays = tuple(relay_addresses)
        peer = m.PeerRecord(keypair.public_key, relays)
        run = QueryRun(self, topic, m.LOOKUP, map_fn=_map_lookup)
        await run.finished()

        def make(r: Reply):
            if r.from_id is None:
                return None
            ann = m.Announce(peer)
            sig = crypto.sign(m.announce_signable(topic, r.from_id, r.token, ann), keypair.secret_key)
            return m.ANNOUNCE, m.encode_announce(m.Announce(peer, None, sig, bump))

        ok = await run.commit(make)
        if refresh and not self.destroyed:
            self._schedule_reannounce(topic, keypair, relays)
        return ok

    def _schedule_reannounce(self, topic: bytes, keypair: KeyPair, relays) -> None:
        key = (topic, keypair.public_key)
        old = self._announces.get(key)
        if old is not None and old.handle is not None:
            old.handle.cancel()
        entry = _OwnAnnounce(topic, keypair, relays)
        delay = ANNOUNCE_REFRESH + self._rng.random() * ANNOUNCE_JITTER
        entry.handle = self.io.loop.call_later(delay, self._reannounce, key)
        self._announces[key] = entry

    def _reannounce(self, key) -> None:
        entry = self._announces.get(key)
        if entry is None or self.destroyed:
            return
        entry.handle = None
        self.spawn(self.announce(entry.topic, entry.keypair, entry.relays))

    async def unannounce(self, topic: bytes, keypair: KeyPair) -> int:
        """Stop refreshing and remove our record from the nodes holding it."""
        await self.ready()
        entry = self._announces.pop((topic, keypair.public_key), None)
        if entry is not None and entry.handle is not None:
            entry.handle.cancel()
        if self.store is not None:
            self.store.remove_record(topic, keypair.public_key)
        calls = []
        async for res in QueryRun(self, topic, m.LOOKUP, map_fn=_map_lookup):
            if res.token is None or res.from_id is None:
                continue
            if len(res.peers) < 20 and not any(p.public_key == keypair.public_key for p in res.peers):
                continue
            ann = m.Announce(m.PeerRecord(keypair.public_key, ()))
            ann.signature = crypto.sign(
                m.announce_signable(topic, res.from_id, res.token, ann, m.NS_UNANNOUNCE), keypair.secret_key)
            calls.append(self.request(res.from_address, m.UNANNOUNCE, target=topic, token=res.token,
                                      value=m.encode_announce(ann)))
        results = await asyncio.gather(*calls, return_exceptions=True)
        return sum(1 for r in results if isinstance(r, Reply) and r.error == 0)

    def find_peer_iter(self, public_key: bytes) -> QueryRun:
        """Async iterator of `FindPeerResult`s: nodes that hold the server's record."""
        def mp(r: Reply):
            if not r.value:
                return None
            try:
                return FindPeerResult(r.from_address, m.decode_peer(r.value))
            except DecodeError:
                return None
        return QueryRun(self, crypto.hash(public_key), m.FIND_PEER, map_fn=mp)

    async def find_peer(self, public_key: bytes) -> FindPeerResult | None:
        """The first node answering with the server's record, or None."""
        await self.ready()
        async for res in self.find_peer_iter(public_key):
            return res
        return None

    async def mutable_put(self, keypair: KeyPair, value: bytes, seq: int = 0) -> int:
        """Store a signed value under hash(public key); returns how many nodes accepted."""
        await self.ready()
        sig = crypto.sign(m.mutable_signable(seq, value), keypair.secret_key)
        signed = m.encode_mutable_put(m.MutablePut(keypair.public_key, seq, value, sig))
        run = QueryRun(self, crypto.hash(keypair.public_key), m.MUTABLE_GET, enc.uint(0))
        await run.finished()
        return await run.commit(lambda r: (m.MUTABLE_PUT, signed))

    async def mutable_get(self, public_key: bytes, seq: int = 0, latest: bool = True) -> MutableResult | None:
        """The verified value with the highest seq (>= `seq`), or None."""
        await self.ready()
        best = None
        async for r in QueryRun(self, crypto.hash(public_key), m.MUTABLE_GET, enc.uint(seq)):
            if not r.value:
                continue
            try:
                g = m.decode_mutable_get(r.value)
            except DecodeError:
                self.stats["malformed"] += 1
                continue
            if g.seq < seq or (best and g.seq <= best.seq):
                continue
            if not crypto.verify(g.signature, m.mutable_signable(g.seq, g.value), public_key):
                self.stats["bad_signature"] += 1
                continue
            best = MutableResult(g.seq, g.value or b"", g.signature, r.from_address)
            if not latest:
                break
        return best

    async def immutable_put(self, value: bytes) -> bytes:
        """Store a value under hash(value); returns the hash."""
        await self.ready()
        target = crypto.hash(value)
        run = QueryRun(self, target, m.IMMUTABLE_GET)
        await run.finished()
        await run.commit(lambda r: (m.IMMUTABLE_PUT, value))
        return target

    async def immutable_get(self, target: bytes) -> bytes | None:
        await self.ready()
        async for r in QueryRun(self, target, m.IMMUTABLE_GET):
            if r.value and crypto.hash(r.value) == target:
                return r.value
        return None


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


def _ignore(_x) -> None:
    return None


__all__ = ["DHT", "DHTConfig", "LookupResult", "FindPeerResult", "MutableResult", "field"]
