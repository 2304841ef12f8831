"""MeshRuntime on the simulated network in virtual time: the "announced" event of a
topic first joined lookup-only (a worker fetching a model) then announced."""

from __future__ import annotations

import asyncio

from mesh import crypto, sim
from mesh.dht import DHT, DHTConfig
from mesh.dht import testnet as start_testnet
from mesh.runtime import MeshRuntime, RuntimeConfig

TOPIC = crypto.hash(b"sim runtime topic")


def test_announced_after_a_lookup_only_join_means_the_record_is_stored():
    """swarm.join updates the lookup-only Discovery in place, so the runtime must
    tell "looked up so far" apart before that; else "announced" is reported from
    the old lookup's flush, before any ANNOUNCE left (a gateway then looks the topic
    up, finds nobody and answers 404)."""
    async def main():
        net = sim.SimNetwork(latency=0.005, jitter=0.002, seed=11)
        async with start_testnet(3, network=net) as tn:
            boot = tuple(tn.bootstrap)
            dht = DHT(DHTConfig(bootstrap=boot), net)
            announced: asyncio.Future = asyncio.get_running_loop().create_future()
            handle = []

            def emit(event: str, **fields) -> None:
                if event == "announced" and fields["topic"] == TOPIC.hex() and not announced.done():
                    # what the discovery had done when the event was reported
                    announced.set_result(handle[0].announced)

            rt = MeshRuntime(RuntimeConfig(keypair=crypto.keypair(bytes([7]) * 32), bootstrap=boot),
                             emit=emit, dht=dht)
            other = await tn.create_node()
            try:
                await rt.start()
                assert rt.look_up(TOPIC)
                await rt.settle(TOPIC, 30)   # the lookup-only flush is done
                handle.append(rt.worker_swarm.join(TOPIC, server=True, client=False))
                assert await asyncio.wait_for(announced, 30) is True
                found = {p.public_key async for reply in other.lookup(TOPIC) for p in reply.peers}
                assert rt.public_key in found
            finally:
                await rt.stop()
                await dht.destroy()

    sim.run(main())
