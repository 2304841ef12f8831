"""Python Swarm against real Node hyperswarm / hyperdht peers on 127.0.0.1
(a Node hyperdht testnet; Node peers are tests/interop/node/swarm-peer.js)."""

from __future__ import annotations

import asyncio
import hashlib
import signal

import pytest

from mesh import crypto
from mesh.connect import connect
from mesh.connect_errors import HandshakeTimeoutError, PeerConnectionFailedError
from mesh.errors import MeshError
from mesh.swarm import Swarm, SwarmConfig
from mesh.transport import path_stats, udx_mux
from tests.interop.node_swarm import NodePeer, NodeTestnet, pattern
from tests.transfer import recv_sha256, send_all

pytestmark = pytest.mark.interop

MB10 = 10_000_000
DATA = pattern(MB10)
DATA_SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
async def node_testnet(node_harness):
    tn = await NodeTestnet.start(3)
    yield tn
    await tn.close()


@pytest.fixture
async def peers():
    started: list[NodePeer] = []
    yield started
    await asyncio.gather(*(p.close() for p in started))


async def node_peer(peers, tn, **kw) -> NodePeer:
    p = await NodePeer.start(tn.bootstrap, **kw)
    peers.append(p)
    return p


def py_swarm(tn, seed: int, **kw) -> Swarm:
    return Swarm(SwarmConfig(keypair=crypto.keypair(bytes([seed]) * 32),
                             bootstrap=tuple(tn.bootstrap), **kw))


async def exchange_10mb(conn, node: NodePeer, our_key: bytes) -> None:
    """10 MB Node -> Python and 10 MB Python -> Node at the same time."""
    key = our_key.hex()
    node.send("expect", peer=key, bytes=MB10)
    node.send("send", peer=key, bytes=MB10)
    sha_in, _ = await asyncio.wait_for(asyncio.gather(recv_sha256(conn, MB10), send_all(conn, DATA)), 120)
    assert sha_in == DATA_SHA
    got = await node.wait("received", timeout=120)
    assert got["bytes"] == MB10 and got["sha256"] == DATA_SHA


@pytest.mark.parametrize("firewalled", [None, True], ids=["reachable", "firewalled"])
async def test_python_server_node_client(node_testnet, peers, firewalled):
    # firewalled: we offer no holepunch, so the Node client dials the address the
    # relay saw and our stream connects on its first packet
    topic = crypto.hash(b"interop: python server")
    sw = py_swarm(node_testnet, 1, firewalled=firewalled)
    try:
        await asyncio.wait_for(sw.join(topic, server=True, client=False).flushed(), 30)
        node = await node_peer(peers, node_testnet)
        node.send("join", topic=topic.hex(), server=False, client=True)
        conn, info = await asyncio.wait_for(sw.__anext__(), 30)
        assert info.public_key == node.public_key
        ev = await node.wait("connection", timeout=30)
        assert ev["public_key"] == sw.keypair.public_key.hex() and ev["topics"] == [topic.hex()]
        assert conn.stream.engine.mss <= 1500 - 48  # libudx reads 2 KiB at most: never large packets to Node
        await exchange_10mb(conn, node, sw.keypair.public_key)
    finally:
        await sw.destroy()


@pytest.mark.parametrize("firewalled", [None, True], ids=["reachable", "firewalled-lan"])
async def test_node_server_python_client(node_testnet, peers, firewalled):
    topic = crypto.hash(b"interop: node server")
    node = await node_peer(peers, node_testnet)
    await node.cmd("join", "flushed", topic=topic.hex(), server=True, client=False)
    sw = py_swarm(node_testnet, 2, firewalled=firewalled)
    try:
        await asyncio.wait_for(sw.join(topic, server=False, client=True).flushed(), 30)
        conn, info = await asyncio.wait_for(sw.__anext__(), 30)
        assert info.public_key == node.public_key and info.topics == [topic] and info.client
        await node.wait("connection", timeout=30)
        # reachable: the Node server dials us back; firewalled: PING its local address, dial it
        assert path_stats(sw.dht) == ({"lan": 1} if firewalled else {"passive": 1})
        assert conn.stream.engine.mss <= 1500 - 48
        await exchange_10mb(conn, node, sw.keypair.public_key)
    finally:
        await sw.destroy()


async def test_node_dht_connect_by_key_to_python_server(node_testnet, peers):
    sw = py_swarm(node_testnet, 3)
    try:
        await asyncio.wait_for(sw.join(crypto.hash(b"interop: by key"), server=True,
                                       client=False).flushed(), 30)
        node = await node_peer(peers, node_testnet)
        node.send("connect", public_key=sw.keypair.public_key.hex())
        conn, info = await asyncio.wait_for(sw.__anext__(), 30)
        assert info.public_key == node.public_key
        await node.wait("connection", timeout=30)
        conn.write(b"hello node")
        node.send("expect", peer=sw.keypair.public_key.hex(), bytes=10)
        got = await node.wait("received", timeout=30)
        assert got["sha256"] == hashlib.sha256(b"hello node").hexdigest()
    finally:
        await sw.destroy()


async def test_python_connect_by_key_to_node_server(node_testnet, peers):
    node = await node_peer(peers, node_testnet)
    await node.cmd("listen", "listening")
    sw = py_swarm(node_testnet, 4)
    await sw.ready()
    try:
        conn = await asyncio.wait_for(
            connect(sw.dht, node.public_key, keypair=sw.keypair), 30)
        assert conn.remote_public_key == node.public_key
        await node.wait("connection", timeout=30)
        node.send("send", peer=sw.keypair.public_key.hex(), bytes=100_000)
        assert await recv_sha256(conn, 100_000) == hashlib.sha256(pattern(100_000)).hexdigest()
        conn.destroy()
    finally:
        await sw.destroy()


async def test_node_client_refused_by_python_firewall_gets_no_data(node_testnet, peers):
    sw = py_swarm(node_testnet, 5, firewall=lambda key: True)
    try:
        await asyncio.wait_for(sw.join(crypto.hash(b"interop: refuse"), server=True,
                                       client=False).flushed(), 30)
        node = await node_peer(peers, node_testnet)
        node.send("connect", public_key=sw.keypair.public_key.hex())
        err = await node.wait("connect-error", timeout=30)
        assert err["public_key"] == sw.keypair.public_key.hex()
        assert sw._server.stats["firewalled"] >= 1
        assert sw.connections == {} and sw._queue.empty()
    finally:
        await sw.destroy()


async def test_killed_node_peer_is_seen_closed_and_restarted_peer_reconnected(node_testnet, peers):
    topic = crypto.hash(b"interop: kill")
    seed = b"\x77" * 32
    node = await node_peer(peers, node_testnet, seed=seed)
    await node.cmd("join", "flushed", topic=topic.hex(), server=True, client=False)
    before = asyncio.all_tasks()
    sw = py_swarm(node_testnet, 6)
    try:
        await asyncio.wait_for(sw.join(topic, server=False, client=True).flushed(), 30)
        conn, _ = await asyncio.wait_for(sw.__anext__(), 30)
        await node.wait("connection", timeout=30)
        sender = asyncio.ensure_future(send_all(conn, DATA))
        node.proc.send_signal(signal.SIGKILL)  # mid-transfer, no goodbye
        await asyncio.wait_for(asyncio.wait([conn.closed]), 40)
        with pytest.raises(MeshError):
            await sender
        assert node.public_key not in sw.connections
        assert not udx_mux(sw.dht).streams or all(
            s is not conn.stream for s in udx_mux(sw.dht).streams.values())

        again = await node_peer(peers, node_testnet, seed=seed)
        await again.cmd("join", "flushed", topic=topic.hex(), server=True, client=False)
        conn2, info = await asyncio.wait_for(sw.__anext__(), 60)
        assert info.public_key == again.public_key
        conn2.write(b"back")
        again.send("expect", peer=sw.keypair.public_key.hex(), bytes=4)
        await again.wait("received", timeout=30)
    finally:
        await sw.destroy()
    await asyncio.sleep(0)  # let cancelled tasks finish
    leaked = [t for t in asyncio.all_tasks() - before
              if not t.done() and t.get_coro().__qualname__ != "NodePeer._read"]  # the harness's own
    assert leaked == []
    assert sw.dht.destroyed


async def test_python_client_refused_by_node_firewall_fails_cleanly(node_testnet, peers):
    # hyperdht drops a refused handshake without an answer: we see a timeout or a
    # failed connection, never a half-open one
    node = await node_peer(peers, node_testnet, allow=[])
    await node.cmd("listen", "listening")
    sw = py_swarm(node_testnet, 7)
    await sw.ready()
    try:
        with pytest.raises((HandshakeTimeoutError, PeerConnectionFailedError)):
            await connect(sw.dht, node.public_key, keypair=sw.keypair, timeout=5)
        await node.wait("refused", timeout=10, public_key=sw.keypair.public_key.hex())
        assert udx_mux(sw.dht).streams == {}
    finally:
        await sw.destroy()
