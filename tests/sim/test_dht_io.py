"""The RPC driver: congestion window, retries and timeouts on the fake network."""

from __future__ import annotations

import asyncio

import pytest

from mesh import sim
from mesh.dht import messages as m
from mesh.dht import testnet as start_testnet
from mesh.errors import TimeoutError_


def test_requests_beyond_the_window_are_queued_then_all_answered():
    async def main():
        net = sim.SimNetwork(latency=0.3, seed=2)  # slow replies keep the window full
        async with start_testnet(2, network=net) as tn:
            a, b = tn.nodes
            start = asyncio.get_running_loop().time()
            sent_before = net.sent
            futs = [a.request(b.address, m.PING, internal=True) for _ in range(300)]
            await asyncio.sleep(0.2)
            assert net.sent - sent_before <= 80  # one slot's worth went out at once
            replies = await asyncio.gather(*futs)
            assert all(r.error == 0 for r in replies)
            assert asyncio.get_running_loop().time() - start > 0.75
    sim.run(main())


def test_lost_datagrams_are_retried_and_dead_nodes_time_out():
    async def main():
        net = sim.SimNetwork(latency=0.01, loss=0.3, seed=4)
        async with start_testnet(2, network=net) as tn:
            a, b = tn.nodes
            ok = 0
            for _ in range(50):
                try:
                    await a.request(b.address, m.PING, internal=True, retries=5)
                    ok += 1
                except TimeoutError_:
                    pass
            assert ok >= 45
            net.loss = 0.0
            with pytest.raises(TimeoutError_):
                await a.request(("127.0.0.1", 9), m.PING, internal=True)
            assert a.stats["timeouts"] >= 1
    sim.run(main())


def test_bootstrap_accepts_host_port_strings():
    from mesh.dht import DHT, DHTConfig

    async def main():
        net = sim.SimNetwork(seed=6)
        async with start_testnet(3, network=net) as tn:
            host, port = tn.bootstrap[0]
            node = DHT(DHTConfig(bootstrap=(f"{host}:{port}",)), net)
            await node.ready()
            assert len(node.table) >= 2
            await node.destroy()
    sim.run(main())
