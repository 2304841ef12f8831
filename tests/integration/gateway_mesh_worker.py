"""A small inference worker on the mesh for the gateway end-to-end tests.

    python tests/integration/gateway_mesh_worker.py <bootstrap host:port> <namespace> <model id>

Serves infer/capacity/models over RPC (msgpack) on every Swarm connection, announces
topic_key(namespace, model id), prints READY when the announce is flushed.
"""

from __future__ import annotations

import asyncio
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mesh import crypto  # noqa: E402
from mesh.rpc import RpcServer  # noqa: E402
from mesh.swarm import Swarm, SwarmConfig  # noqa: E402
from mesh.topics import topic_key  # noqa: E402
from tests.gateway.handlers import OnnxWorker, linear_model  # noqa: E402


async def main(bootstrap: str, namespace: str, model: str) -> None:
    host, port = bootstrap.rsplit(":", 1)
    worker = OnnxWorker(model, linear_model())
    server = RpcServer()
    for name in ("infer", "capacity", "models"):
        server.respond(name, getattr(worker, name), encoding="msgpack")
    swarm = Swarm(SwarmConfig(keypair=crypto.keypair(), bootstrap=[(host, int(port))]))
    swarm.on_connection(lambda conn, info: server.attach(conn))
    discovery = swarm.join(topic_key(namespace, model), server=True, client=False)
    await discovery.flushed()
    print("READY", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
