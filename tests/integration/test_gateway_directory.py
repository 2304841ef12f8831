"""The gateway's MeshWorkerDirectory against a real DHT testnet on loopback (one
process): when "no worker serves it" may be answered."""

from __future__ import annotations

import asyncio

from gateway.config import GatewayConfig
from gateway.mesh_client import MeshWorkerDirectory
from mesh import crypto
from mesh.dht import testnet as start_testnet
from mesh.runtime import MeshRuntime, RuntimeConfig
from mesh.topics import topic_key

NAMESPACE = "directory-test"
DEADLINE = 20.0


async def test_a_worker_announced_after_the_last_lookup_is_found_not_404():
    """The topic was watched (and looked up, finding nobody) before the worker
    announced; the periodic re-lookup is far away. A request must look again
    rather than answer from that old, empty lookup."""
    async with start_testnet(1) as tn:
        boot = tuple(tn.bootstrap)
        directory = MeshWorkerDirectory(GatewayConfig(namespace=NAMESPACE, bootstrap=boot,
                                                      discovery_interval_s=3600.0))
        worker = MeshRuntime(RuntimeConfig(keypair=crypto.keypair(), bootstrap=boot))
        try:
            await directory.start()
            await directory.watch("m")
            assert await asyncio.wait_for(directory.wait_for_workers("m", DEADLINE), DEADLINE) == []

            await worker.start()
            await asyncio.wait_for(worker.swarm.join(topic_key(NAMESPACE, "m"), server=True,
                                                     client=False).flushed(), DEADLINE)
            found = await asyncio.wait_for(directory.wait_for_workers("m", DEADLINE), DEADLINE)
            assert [w.id for w in found] == [worker.public_key.hex()]
        finally:
            await directory.close()
            await worker.stop()
