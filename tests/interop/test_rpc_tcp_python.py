"""mesh.rpc over real sockets and real encryption (the TCP stand-in), Python on both ends.

The stand-in (rpc_tcp_adapter.py) is hyperdht's Noise IK + secret-stream on TCP,
so this exercises the RPC layer over a real byte stream with real frames,
until mesh.connect gives the DHT-routed connection.
"""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest

from mesh import crypto
from mesh.rpc import RpcClient, RpcServer, UnknownMethodError

from .rpc_tcp_adapter import tcp_connect, tcp_serve


@pytest.fixture
async def tcp_server():
    kp = crypto.keypair()
    server = RpcServer()
    server.respond("echo", lambda v: v)
    server.respond("recho", lambda v: v, encoding="raw")
    conns = []

    def on_connection(conn):
        conns.append(conn)
        server.attach(conn)

    tcp = await tcp_serve(kp, on_connection)
    port = tcp.sockets[0].getsockname()[1]
    yield kp.public_key, port, conns
    for c in conns:
        c.destroy()
    tcp.close()
    await tcp.wait_closed()


async def test_pool_over_tcp_many_requests_big_values_and_reconnect(tcp_server):
    key, port, conns = tcp_server
    client_kp = crypto.keypair()
    client = RpcClient(lambda pk: tcp_connect(port, pk, client_kp))
    try:
        res = await asyncio.wait_for(asyncio.gather(*(client.request(key, "echo", i) for i in range(500))), 30)
        assert res == list(range(500)) and len(conns) == 1
        blob = os.urandom(1024 * 1024)
        assert await client.request(key, "recho", blob, encoding="raw", timeout=10) == blob
        x = np.arange(3 * 224 * 224, dtype=np.float32).reshape(1, 3, 224, 224)
        assert np.array_equal(await client.request(key, "echo", x, timeout=10), x)
        with pytest.raises(UnknownMethodError):
            await client.request(key, "nope", timeout=5)
        peer = client._pool[key].peer
        conns[0].destroy()  # the server drops the connection
        await asyncio.wait_for(peer.closed, 5)
        assert await client.request(key, "echo", "again", timeout=10) == "again"
        assert len(conns) == 2
    finally:
        await client.close()
