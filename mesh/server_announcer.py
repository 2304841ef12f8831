"""Keeps a listening server reachable: its record under hash(publicKey) on the
3 closest DHT nodes (router entries that relay handshakes to us).

hyperdht lib/announcer.js: a FIND_PEER query for the target, ANNOUNCE to the 3
best replies, then ping those relays every 3 s and redo the whole update after
100 rounds (~5 min) or as soon as fewer than 3 (or all) relays answer; on stop,
UNANNOUNCE from the current relays.
"""

from __future__ import annotations

import asyncio

from mesh import crypto
from mesh.dht import messages as m
from mesh.encoding import Address
from mesh.errors import MeshError
from mesh.transport import handshake_socket

RELAYS = 3
PING_INTERVAL = 3.0
PING_ROUNDS = 100  # x 3 s: re-announce about every 5 minutes
MIN_ACTIVE = 3


class Announcer:
    def __init__(self, dht, keypair: crypto.KeyPair, target: bytes):
        self.dht = dht
        self.keypair = keypair
        self.target = target
        self.relays: list[Address] = []  # nodes holding our router entry
        self.relay_addresses: list[Address] = []  # what we advertise (<= 3)
        self.stats = {"updates": 0, "announced": 0, "announce_failed": 0, "relay_lost": 0}
        self._stop = asyncio.Event()
        self._refresh = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Announce once (returns when done), then keep it fresh in the background."""
        await self.update()
        self._task = asyncio.ensure_future(self._background())

    def refresh(self) -> None:
        """Redo the announce soon (e.g. after a network change)."""
        self._refresh.set()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*(self._unannounce(a) for a in self.relays), return_exceptions=True)
        self.relays = []

    async def update(self) -> None:
        """FIND_PEER for our target, ANNOUNCE to the 3 closest replies."""
        self.stats["updates"] += 1
        run = self.dht.query(self.target, m.FIND_PEER)
        await run.finished()
        best = [r for r in run.closest_replies if r.from_id is not None][:RELAYS]
        results = await asyncio.gather(*(self._commit(r) for r in best), return_exceptions=True)
        relays = [r.from_address for r, ok in zip(best, results) if ok is True]
        for res in results:
            if isinstance(res, BaseException) and not isinstance(res, MeshError):
                raise res
        advertised: list[Address] = []
        if not self.dht.firewalled and self.dht.public_address:
            advertised.append(tuple(self.dht.public_address))
        for a in relays:
            if len(advertised) < RELAYS:
                advertised.append(a)
        old = [a for a in self.relays if a not in relays]
        self.relays = relays
        self.relay_addresses = advertised
        await asyncio.gather(*(self._unannounce(a) for a in old), return_exceptions=True)

    async def _commit(self, reply) -> bool:
        ann = m.Announce(m.PeerRecord(self.keypair.public_key, ()))
        signable = m.announce_signable(self.target, reply.from_id, reply.token, ann)
        ann.signature = crypto.sign(signable, self.keypair.secret_key)
        res = await self.dht.request(
            reply.from_address, m.ANNOUNCE, target=self.target, token=reply.token,
            value=m.encode_announce(ann), socket=handshake_socket(self.dht),
        )
        ok = res.error == 0
        self.stats["announced" if ok else "announce_failed"] += 1
        return ok

    async def _unannounce(self, addr: Address) -> None:
        # A fresh token from that node first: signatures are bound to (node, token).
        res = await self.dht.request(addr, m.FIND_PEER, target=self.target)
        if res.token is None or res.from_id is None:
            return
        ann = m.Announce(m.PeerRecord(self.keypair.public_key, ()))
        ann.signature = crypto.sign(
            m.announce_signable(self.target, res.from_id, res.token, ann, m.NS_UNANNOUNCE),
            self.keypair.secret_key,
        )
        await self.dht.request(addr, m.UNANNOUNCE, target=self.target, token=res.token,
                               value=m.encode_announce(ann), socket=handshake_socket(self.dht))

    async def _ping(self, addr: Address) -> bool:
        try:
            await self.dht.request(addr, m.PING, internal=True)
        except MeshError:
            return False
        return True

    async def _background(self) -> None:
        while not self._stop.is_set():
            for _ in range(PING_ROUNDS):
                self._refresh.clear()
                try:
                    await asyncio.wait_for(self._refresh.wait(), PING_INTERVAL)
                    break  # asked to refresh now
                except asyncio.TimeoutError:
                    pass
                alive = await asyncio.gather(*(self._ping(a) for a in self.relays))
                if sum(alive) < min(len(alive), MIN_ACTIVE) or not self.relays:
                    self.stats["relay_lost"] += 1
                    break
            try:
                await self.update()
            except MeshError:
                continue  # the DHT is unreachable now; the next round retries
