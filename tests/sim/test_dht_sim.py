"""Hundreds of DHT nodes on the simulated network and virtual clock."""

from __future__ import annotations

import asyncio
import random

from mesh import crypto, sim
from mesh.dht import testnet as start_testnet

N = 300


async def _found(node, topic, public_key) -> bool:
    async for reply in node.lookup(topic):
        if any(p.public_key == public_key for p in reply.peers):
            return True
    return False


async def _count_found(nodes, topic, public_key) -> int:
    results = await asyncio.gather(*[_found(n, topic, public_key) for n in nodes])
    return sum(results)


def test_300_nodes_bootstrap_and_every_node_finds_an_announce():
    async def main():
        net = sim.SimNetwork(latency=0.005, jitter=0.005, seed=7)
        async with start_testnet(N, network=net, parallel=10) as tn:
            sizes = [len(n.table) for n in tn.nodes]
            assert min(sizes) >= 20
            kp = crypto.keypair(b"\x11" * 32)
            topic = crypto.hash(b"sim topic")
            assert len(await tn.nodes[123].announce(topic, kp, [("127.0.0.1", 9)])) >= 10
            found = 0
            for i in range(0, N, 50):
                found += await _count_found(tn.nodes[i:i + 50], topic, kp.public_key)
            assert found == N
    sim.run(main())


def test_record_expires_without_refresh_and_stays_while_refreshed():
    async def main():
        net = sim.SimNetwork(latency=0.005, seed=8)
        async with start_testnet(40, network=net, parallel=5) as tn:
            stale, fresh = crypto.keypair(b"\x21" * 32), crypto.keypair(b"\x22" * 32)
            t_stale, t_fresh = crypto.hash(b"stale"), crypto.hash(b"fresh")
            await tn.nodes[1].announce(t_stale, stale, refresh=False)
            await tn.nodes[2].announce(t_fresh, fresh)  # refreshed in the background every 10-12 min
            looker = tn.nodes[30]
            await asyncio.sleep(19 * 60)
            assert await _found(looker, t_stale, stale.public_key)
            await asyncio.sleep(2 * 60)  # 21 minutes without refresh
            assert not await _found(looker, t_stale, stale.public_key)
            for _ in range(4):  # an hour in total
                await asyncio.sleep(10 * 60)
                assert await _found(looker, t_fresh, fresh.public_key)
            assert await tn.nodes[2].unannounce(t_fresh, fresh) >= 10
            assert not await _found(looker, t_fresh, fresh.public_key)
            await asyncio.sleep(15 * 60)  # and the background refresh has stopped
            assert not await _found(looker, t_fresh, fresh.public_key)
    sim.run(main())


def test_lookups_survive_30_percent_of_nodes_vanishing():
    async def main():
        net = sim.SimNetwork(latency=0.005, jitter=0.005, seed=9)
        async with start_testnet(100, network=net, parallel=10) as tn:
            kp = crypto.keypair(b"\x31" * 32)
            topic = crypto.hash(b"churn")
            await tn.nodes[5].announce(topic, kp)
            rng = random.Random(1)
            victims = rng.sample(tn.nodes[1:], 30)
            for v in victims:
                await v.destroy()
            alive = [n for n in tn.nodes if not n.destroyed]
            assert await _count_found(alive, topic, kp.public_key) == len(alive)
    sim.run(main())


def test_adaptive_node_becomes_persistent_after_stable_uptime():
    async def main():
        net = sim.SimNetwork(latency=0.005, seed=10)
        async with start_testnet(20, network=net, parallel=5) as tn:
            node = await tn.create_node(ephemeral=None)
            assert node.firewalled is False  # PING_NAT answers reached the server socket
            assert node.id is None
            await asyncio.sleep(22 * 60)  # 240 stable 5-second ticks, plus margin
            assert node.id is not None and not node.ephemeral
            # it now serves storage commands like any persistent node
            kp, topic = crypto.keypair(b"\x71" * 32), node.id  # the topic is its own id: it is the closest
            accepted = await tn.nodes[3].announce(topic, kp, refresh=False)
            assert node.address in accepted
    sim.run(main())
