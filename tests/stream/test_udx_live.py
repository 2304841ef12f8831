"""UDX against udx-native (libudx) over real UDP on 127.0.0.1, both directions."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from mesh.net import UDPNetwork
from mesh.udx import UDXMux

from .nodepeer import NodeProc

pytestmark = pytest.mark.interop

SIZE = 4_000_000


async def start(mode: str, **extra):
    node = await NodeProc.start("udx-peer.js")
    hello = await node.line()
    mux = await UDXMux.bind(UDPNetwork())
    s = mux.create_stream()
    s.connect(hello["id"], ("127.0.0.1", hello["port"]))
    node.send({"remoteId": s.local_id, "port": mux.address[1], "mode": mode, **extra})
    return node, mux, s


async def write_all(s, payload):
    for i in range(0, len(payload), 65536):
        if not s.write(payload[i : i + 65536]):
            await s.drain()
    s.end()


async def read_all(s):
    h, n = hashlib.sha256(), 0
    async for c in s:
        h.update(c)
        n += len(c)
    return n, h.hexdigest()


async def test_echo_through_udx_native(node_harness):
    node, mux, s = await start("echo")
    try:
        payload = os.urandom(SIZE)
        w = asyncio.ensure_future(write_all(s, payload))
        n, digest = await asyncio.wait_for(read_all(s), 60)
        await w
        assert (n, digest) == (SIZE, hashlib.sha256(payload).hexdigest())
        assert await asyncio.wait_for(s.closed, 10) is None
        assert (await node.until("done"))["done"]
    finally:
        mux.close()
        await node.close()


async def test_python_to_node_sink(node_harness):
    node, mux, s = await start("sink")
    try:
        payload = os.urandom(SIZE)
        await write_all(s, payload)
        got = await node.until("sha256", 60)
        assert got["bytes"] == SIZE and got["sha256"] == hashlib.sha256(payload).hexdigest()
        assert await asyncio.wait_for(read_all(s), 10) == (0, hashlib.sha256().hexdigest())
        assert await asyncio.wait_for(s.closed, 10) is None
    finally:
        mux.close()
        await node.close()


async def test_node_source_to_python(node_harness):
    node, mux, s = await start("source", bytes=SIZE)
    try:
        want = (await node.until("sha256"))["sha256"]
        n, digest = await asyncio.wait_for(read_all(s), 60)
        assert (n, digest) == (SIZE, want)
        s.end()
        assert await asyncio.wait_for(s.closed, 10) is None
    finally:
        mux.close()
        await node.close()


async def test_killed_node_peer_is_seen_closed_in_bounded_time(node_harness):
    from mesh.errors import ClosedError, TimeoutError_
    from mesh.udx import UDXConfig

    node = await NodeProc.start("udx-peer.js")
    hello = await node.line()
    mux = await UDXMux.bind(UDPNetwork(), config=UDXConfig(min_rto=0.05, max_rto=1.0))
    s = mux.create_stream()
    s.connect(hello["id"], ("127.0.0.1", hello["port"]))
    node.send({"remoteId": s.local_id, "port": mux.address[1], "mode": "sink"})
    try:
        assert not s.write(os.urandom(3_000_000))  # above the high-water mark
        await asyncio.wait_for(s.drain(), 10)  # drains only as the peer acks
        assert s.engine.sb.remote_acked > 0 and s.engine.write_buffered > 0
        node.proc.kill()  # mid-transfer
        t0 = asyncio.get_running_loop().time()
        exc = await asyncio.wait_for(asyncio.shield(s.closed), 15)
        assert isinstance(exc, TimeoutError_)
        assert asyncio.get_running_loop().time() - t0 < 10
        with pytest.raises(ClosedError):
            await s.drain()
    finally:
        mux.close()
        await node.close()
