"""Swarms on the simulated network in virtual time: refresh cadence over half an
hour, a crashed peer seen dead, and found again by the periodic re-lookup."""

from __future__ import annotations

import asyncio

from mesh import crypto, sim
from mesh.dht import testnet as start_testnet
from mesh.swarm import Swarm, SwarmConfig

TOPIC = crypto.hash(b"sim swarm topic")


def make(tn, net, seed: int) -> Swarm:
    return Swarm(SwarmConfig(keypair=crypto.keypair(bytes([seed]) * 32),
                             bootstrap=tuple(tn.bootstrap), seed=seed), network=net)


def crash(sw: Swarm) -> None:
    """The process dies: its sockets vanish, nobody says goodbye."""
    sw.dht.io.server.close()
    sw.dht.io.client.close()


def test_refresh_keepalive_crash_and_rediscovery_in_virtual_time():
    async def main():
        net = sim.SimNetwork(latency=0.002, jitter=0.001, loss=0.01, seed=3)
        async with start_testnet(6, network=net) as tn:
            a, b = make(tn, net, 1), make(tn, net, 2)
            da = a.join(TOPIC, server=True, client=False)
            await da.flushed()
            db = b.join(TOPIC, server=False, client=True)
            await db.flushed()
            conn, info = await asyncio.wait_for(b.__anext__(), 30)
            assert info.public_key == a.keypair.public_key

            await asyncio.sleep(25 * 60)  # virtual: refreshes run, keepalives hold the link
            assert not conn.closed.done()
            assert da.stats["refreshes"] >= 3 and db.stats["refreshes"] >= 3
            assert a._server.announcer.stats["updates"] >= 5  # ~every 5 minutes

            crash(a)
            start = asyncio.get_running_loop().time()
            await asyncio.wait_for(asyncio.wait([conn.closed]), 60)
            assert asyncio.get_running_loop().time() - start <= 30  # seen dead in bounded time
            await a.destroy()

            a2 = make(tn, net, 1)  # back, same key, after b gave up redialling
            await asyncio.sleep(60)
            await a2.join(TOPIC, server=True, client=False).flushed()
            conn2, info2 = await asyncio.wait_for(b.__anext__(), 15 * 60)  # the next re-lookup
            assert info2.public_key == a.keypair.public_key
            conn2.write(b"again")
            got, _ = await asyncio.wait_for(a2.__anext__(), 30)
            assert await asyncio.wait_for(got.__anext__(), 30) == b"again"
            await b.destroy()
            await a2.destroy()

    sim.run(main())
