"""The client verbs of `DHT`, each a query plus, for writes, a commit:
announce / unannounce / find_peer / mutable and immutable put and get.
Signatures are made exactly as hyperdht makes them (messages.announce_signable,
messages.mutable_signable)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from .. import crypto
from .. import encoding as enc
from ..crypto import KeyPair
from ..encoding import Address
from ..errors import DecodeError, MeshError
from . import messages as m
from .driver import QueryRun
from .io import Reply

ANNOUNCE_REFRESH = 10 * 60.0
ANNOUNCE_JITTER = 2 * 60.0


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
class _OwnAnnounce:
    topic: bytes
    keypair: KeyPair
    relays: tuple[Address, ...]
    limit: int | None = None
    handle: asyncio.TimerHandle | None = None


def _map_lookup(r: Reply):
    if not r.value:
        return None
    try:
        lr = m.decode_lookup_reply(r.value)
    except DecodeError:
        return None
    return LookupResult(r.from_address, r.from_id, r.token, lr.peers, lr.bump)


class Verbs:
    """Mixed into `DHT`; uses its ready(), request(), io, store and _rng."""

    async def announce(self, topic: bytes, keypair: KeyPair, relay_addresses=(), *, refresh: bool = True,
                       bump: int = 0, limit: int | None = None) -> list[Address]:
        """LOOKUP then ANNOUNCE to the closest nodes (at most `limit`; a server's
        self-announce under hash(public key) uses 3); returns the addresses of the
        nodes that accepted. With `refresh`, the announce is repeated in the
        background before it expires."""
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

        ok = await run.commit(make, limit)
        if refresh and not self.destroyed:
            self._schedule_reannounce(topic, keypair, relays, limit)
        return [r.from_address for r in ok]

    def _schedule_reannounce(self, topic: bytes, keypair: KeyPair, relays, limit) -> None:
        key = (topic, keypair.public_key)
        old = self._announces.get(key)
        if old is not None and old.handle is not None:
            old.handle.cancel()
        entry = _OwnAnnounce(topic, keypair, relays, limit)
        self._announces[key] = entry
        self._arm(entry)

    def _arm(self, entry) -> None:
        delay = ANNOUNCE_REFRESH + self._rng.random() * ANNOUNCE_JITTER
        entry.handle = self.io.loop.call_later(delay, lambda: self.spawn(self._refresh_announce(entry)))

    async def _refresh_announce(self, entry) -> None:
        entry.handle = None
        key = (entry.topic, entry.keypair.public_key)
        if self._announces.get(key) is not entry or self.destroyed:
            return
        try:
            await self.announce(entry.topic, entry.keypair, entry.relays, refresh=False, limit=entry.limit)
        except MeshError:
            self.stats["refresh_errors"] = self.stats.get("refresh_errors", 0) + 1
        # an unannounce (or a newer announce) while we were busy wins
        if self._announces.get(key) is entry and not self.destroyed:
            self._arm(entry)

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
        return len(await run.commit(lambda r: (m.MUTABLE_PUT, signed)))

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
