"""One joined topic of a Swarm: announce it (server) and look it up (client),
again every 10 minutes plus jitter, and unannounce on leave.

The handle returned by `Swarm.join`: `await flushed()` (the first announce and
lookup are done), `await refresh()` (run them again now), `update(...)`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from mesh import swarm_logic as sl
from mesh.errors import MeshError

if TYPE_CHECKING:
    from mesh.swarm import Swarm


class Discovery:
    def __init__(self, swarm: "Swarm", topic: bytes, server: bool, client: bool):
        self.swarm = swarm
        self.topic = topic
        self.server = server
        self.client = client
        self.announced = False
        self.stats = {"refreshes": 0, "lookup_replies": 0, "errors": 0, "announce_failures": 0}
        self.announce_failures = 0  # in a row: announces that raised or stored on no node
        self._flushed: asyncio.Future = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task | None = None
        self._kick = asyncio.Event()
        self._unannouncing: asyncio.Future | None = None
        self.destroyed = False

    def start(self) -> None:
        self.swarm.client_topics_changed()
        self._task = asyncio.ensure_future(self._run())

    def update(self, server: bool, client: bool) -> None:
        """Change the roles of an already joined topic; refreshes at once."""
        stop_announcing = self.server and not server
        self.server, self.client = server, client
        self.swarm.client_topics_changed()
        if stop_announcing and self.announced:
            self.announced = False
            self._unannouncing = asyncio.ensure_future(self._unannounce())
        self._kick.set()

    async def flushed(self) -> bool:
        """Wait for the first announce (server) and lookup (client) to finish.

        True when they did; False when the first announce raised or stored on
        no node (it is retried after about a second, doubling: `announce_failures`
        counts the failures in a row) or the topic was left before then. Like
        hyperswarm's, it resolves after the first attempt either way."""
        return await asyncio.shield(self._flushed)

    async def refresh(self) -> bool:
        """Announce and look up again now; returns when done (the result as for `flushed`)."""
        return await self._refresh_once()

    async def _run(self) -> None:
        await self.swarm.ready()
        ok = await self._refresh_once()
        if not self._flushed.done():
            self._flushed.set_result(ok)
        while not self.destroyed:
            delay = sl.refresh_delay(self.swarm.rng, failures=self.announce_failures if self.server else 0)
            self._kick.clear()
            try:
                await asyncio.wait_for(self._kick.wait(), delay)
            except asyncio.TimeoutError:
                pass
            if not self.destroyed:
                await self._refresh_once()

    async def _refresh_once(self) -> bool:
        """One announce and lookup; False if either failed or the announce stored nowhere."""
        self.stats["refreshes"] += 1
        jobs = []
        if self.server:
            jobs.append(self._announce())
        if self.client:
            jobs.append(self._lookup())
        results = await asyncio.gather(*jobs, return_exceptions=True)
        ok = True
        for result in results:
            if isinstance(result, MeshError):
                self.stats["errors"] += 1  # the next refresh tries again
                ok = False
            elif isinstance(result, BaseException):
                raise result
        if self.server:
            stored = results[0]
            if isinstance(stored, BaseException) or not stored:
                self.announce_failures += 1
                self.stats["announce_failures"] += 1
                ok = False
            else:
                self.announce_failures = 0
        return ok

    async def _announce(self) -> list:
        server = await self.swarm.ensure_server()
        # refresh=False: this handle re-announces itself (with fresh relay addresses).
        stored = await self.swarm.dht.announce(self.topic, self.swarm.keypair, list(server.relay_addresses),
                                               refresh=False)
        self.announced = True
        return stored

    async def _lookup(self) -> None:
        async for reply in self.swarm.dht.lookup(self.topic):
            self.stats["lookup_replies"] += 1
            if reply.peers:
                self.swarm.peers_found(self.topic, reply.peers)

    async def destroy(self) -> None:
        """Stop refreshing; unannounce if we announced."""
        if self.destroyed:
            return
        self.destroyed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if not self._flushed.done():
            self._flushed.set_result(False)
        if self._unannouncing is not None:
            await self._unannouncing
        if self.announced:
            self.announced = False
            await self._unannounce()

    async def _unannounce(self) -> None:
        try:
            await self.swarm.dht.unannounce(self.topic, self.swarm.keypair)
        except MeshError:
            self.stats["errors"] += 1  # records expire on their own within 20 min
