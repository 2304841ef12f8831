"""A Swarm server whose first announce stores on no node retries within seconds,
not a whole refresh interval (10 minutes) later."""

from __future__ import annotations

import asyncio

from mesh import crypto, sim
from mesh import swarm_logic as sl
from mesh.dht import DHT, DHTConfig
from mesh.swarm import Swarm, SwarmConfig

TOPIC = crypto.hash(b"sim announce retry")


def test_retry_delay_after_failed_announces_doubles_from_one_second():
    import random

    rng = random.Random(1)
    delays = [sl.refresh_delay(rng, failures=n) for n in (1, 2, 3, 4)]
    for n, d in zip((1, 2, 3, 4), delays):
        assert 2.0 ** (n - 1) <= d <= 1.1 * 2.0 ** (n - 1)
    assert sl.refresh_delay(rng, failures=30) <= 1.1 * sl.REFRESH_INTERVAL


def test_announce_that_stored_nowhere_is_retried_soon_and_then_found():
    async def main():
        net = sim.SimNetwork(latency=0.005, seed=5)
        boot_addr = ("127.0.0.1", 30001)
        swarm = Swarm(SwarmConfig(keypair=crypto.keypair(bytes([3]) * 32), bootstrap=(boot_addr,),
                                  firewalled=False), network=net)
        boot = None
        try:
            discovery = swarm.join(TOPIC, server=True, client=False)
            assert await asyncio.wait_for(discovery.flushed(), 60) is False  # nothing was there to store it
            assert discovery.announce_failures >= 1
            t0 = asyncio.get_running_loop().time()
            # the network's storing node comes up after the first attempt
            boot = DHT(DHTConfig(host=boot_addr[0], port=boot_addr[1], ephemeral=False), net)
            await boot.ready()
            client = DHT(DHTConfig(bootstrap=(boot_addr,)), net)
            while not await _found(client):
                await asyncio.sleep(0.5)  # virtual time: polling the fake network costs nothing
                assert asyncio.get_running_loop().time() - t0 < 60, "announce was not retried within a minute"
            assert discovery.announce_failures == 0
            assert await discovery.refresh() is True
            await client.destroy()
        finally:
            await swarm.destroy()
            if boot is not None:
                await boot.destroy()

    sim.run(main())


async def _found(dht: DHT) -> bool:
    keys = {p.public_key async for reply in dht.lookup(TOPIC) for p in reply.peers}
    return crypto.keypair(bytes([3]) * 32).public_key in keys
