"""The Swarm as `python -m mesh.node` runs it: join the node's topics, connect to
the peers found, and report each connection as an event:

    {"event": "connection", "public_key": HEX, "topics": [HEX, ...], "client": bool}
    {"event": "disconnection", "public_key": HEX}
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from mesh.crypto import KeyPair
from mesh.swarm import PeerInfo, Swarm, SwarmConfig


async def run_swarm(dht, keypair: KeyPair, topics: list[bytes], announce: bool, lookup: bool,
                    emit: Callable[..., None], stop: asyncio.Event) -> None:
    """Run a Swarm on `dht` (which the caller owns) until `stop` is set, then
    leave its topics (unannounce) and close its connections."""
    swarm = Swarm(SwarmConfig(keypair=keypair, bootstrap=tuple(dht.config.bootstrap)), dht=dht)

    def on_connection(conn, info: PeerInfo) -> None:
        emit("connection", public_key=info.public_key.hex(), topics=[t.hex() for t in info.topics],
             client=info.client)
        conn.closed.add_done_callback(
            lambda _f: emit("disconnection", public_key=info.public_key.hex()))

    swarm.on_connection(on_connection)
    try:
        for topic in topics:
            swarm.join(topic, server=announce, client=lookup)
        await stop.wait()
    finally:
        await swarm.destroy()
