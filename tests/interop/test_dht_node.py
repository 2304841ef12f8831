"""Python DHT nodes and real Node hyperdht nodes in one loopback network."""

from __future__ import annotations

import pytest

from mesh import crypto
from mesh.dht import DHT, DHTConfig
from mesh.dht import testnet as start_testnet

from .node_dht import NodeDHT

pytestmark = pytest.mark.interop


@pytest.fixture
async def node(node_harness):
    n = await NodeDHT.start()
    try:
        yield n
    finally:
        await n.close()


def seed(i: int) -> str:
    return bytes([i]) * 32


async def py_peers(dht: DHT, topic: bytes) -> set[bytes]:
    return {p.public_key async for r in dht.lookup(topic) for p in r.peers}


async def node_peers(node: NodeDHT, index: int, topic: bytes) -> set[bytes]:
    res = await node.cmd("lookup", node=index, topic=topic.hex())
    return {bytes.fromhex(p["publicKey"]) for p in res["peers"]}


async def join_node_testnet(node: NodeDHT, size: int, ephemeral=True) -> tuple[list, DHT]:
    res = await node.cmd("testnet", size=size)
    boot = tuple(tuple(b) for b in res["bootstrap"])
    py = DHT(DHTConfig(bootstrap=boot, ephemeral=ephemeral))
    await py.ready()
    return [list(b) for b in boot], py


async def test_python_announce_is_found_by_node(node):
    boot, py = await join_node_testnet(node, 6)
    try:
        kp, topic = crypto.keypair(seed(1)), crypto.hash(b"py announces")
        assert len(await py.announce(topic, kp, [py.address])) >= 3
        client = await node.cmd("node", bootstrap=boot)
        res = await node.cmd("lookup", node=client["node"], topic=topic.hex())
        assert any(p["publicKey"] == kp.public_key.hex() and p["relayAddresses"] == [list(py.address)]
                   for p in res["peers"])
    finally:
        await py.destroy()


async def test_node_announce_is_found_by_python(node):
    boot, py = await join_node_testnet(node, 6)
    try:
        kp, topic = crypto.keypair(seed(2)), crypto.hash(b"node announces")
        client = await node.cmd("node", bootstrap=boot)
        await node.cmd("announce", node=client["node"], topic=topic.hex(), seed=seed(2).hex(),
                       relays=[["127.0.0.1", 4567]])
        records = [p async for r in py.lookup(topic) for p in r.peers]
        assert kp.public_key in {p.public_key for p in records}
        assert all(p.relay_addresses == (("127.0.0.1", 4567),) for p in records)
        await node.cmd("unannounce", node=client["node"], topic=topic.hex(), seed=seed(2).hex())
        assert await py_peers(py, topic) == set()
    finally:
        await py.destroy()


async def test_python_storing_nodes_serve_node_clients_and_relay_handshakes(node):
    async with start_testnet(8) as tn:
        boot = [list(tn.bootstrap[0])]
        a = (await node.cmd("node", bootstrap=boot))["node"]
        b = (await node.cmd("node", bootstrap=boot))["node"]
        topic = crypto.hash(b"all storage is python")
        await node.cmd("announce", node=a, topic=topic.hex(), seed=seed(3).hex())
        assert crypto.keypair(seed(3)).public_key in await node_peers(node, b, topic)
        assert sum(len(n.store.get_records(topic, n.now())) for n in tn.nodes) >= 3
        # a Node server self-announces to Python nodes; a Node client connects through a Python relay
        server = await node.cmd("listen", node=a, seed=seed(4).hex())
        echoed = await node.cmd("connect", node=b, publicKey=server["publicKey"], text="via python", timeout=30)
        assert echoed["echoed"] == "via python"
        assert sum(n.stats["relayed"] for n in tn.nodes) >= 1


async def test_mixed_network_every_node_finds_every_announce(node):
    async with start_testnet(10) as tn:
        boot = [list(tn.bootstrap[0])]
        await node.cmd("testnet", size=10, bootstrap=boot)  # node indexes 0..9, persistent
        topic = crypto.hash(b"mixed network")
        expected = set()
        for i, py in enumerate(tn.nodes):
            kp = crypto.keypair(seed(100 + i))
            expected.add(kp.public_key)
            await py.announce(topic, kp, refresh=False)
        for i in range(10):
            await node.cmd("announce", node=i, topic=topic.hex(), seed=seed(150 + i).hex())
            expected.add(crypto.keypair(seed(150 + i)).public_key)
        assert len(expected) == 20
        for py in tn.nodes:
            assert await py_peers(py, topic) == expected
        for i in range(10):
            assert await node_peers(node, i, topic) == expected


async def test_mutable_and_immutable_values_both_ways(node):
    boot, py = await join_node_testnet(node, 6)
    try:
        client = (await node.cmd("node", bootstrap=boot))["node"]
        # Node puts, Python gets
        res = await node.cmd("mutable_put", node=client, seed=seed(5).hex(), value=b"from node".hex(), seq=3)
        got = await py.mutable_get(bytes.fromhex(res["publicKey"]))
        assert (got.seq, got.value) == (3, b"from node")
        res = await node.cmd("immutable_put", node=client, value=b"node blob".hex())
        assert await py.immutable_get(bytes.fromhex(res["hash"])) == b"node blob"
        # Python puts, Node gets
        kp = crypto.keypair(seed(6))
        assert await py.mutable_put(kp, b"from python", seq=7) >= 3
        res = await node.cmd("mutable_get", node=client, publicKey=kp.public_key.hex())
        assert (res["seq"], bytes.fromhex(res["value"])) == (7, b"from python")
        h = await py.immutable_put(b"python blob")
        res = await node.cmd("immutable_get", node=client, hash=h.hex())
        assert bytes.fromhex(res["value"]) == b"python blob"
    finally:
        await py.destroy()


async def test_node_relays_handshakes_to_a_python_hosted_server(node):
    from mesh.dht import messages as m

    boot, server = await join_node_testnet(node, 6)
    client = DHT(DHTConfig(bootstrap=tuple(tuple(b) for b in boot), ephemeral=True))
    try:
        await client.ready()
        kp = crypto.keypair(seed(7))
        seen = []

        def on_handshake(req, hs):
            seen.append((hs.mode, hs.noise, hs.peer_address))
            return b"server noise"

        def on_holepunch(req, hp):
            seen.append((hp.mode, hp.payload, hp.peer_address))
            return b"server punch"

        target = server.register_server(kp, on_handshake, on_holepunch)
        relays = await server.announce(target, kp, limit=3)
        assert len(relays) == 3  # three Node storing nodes hold the router entry
        found = await client.find_peer(kp.public_key)
        assert found is not None and found.from_address in relays
        value = m.encode_handshake(m.Handshake(m.FROM_CLIENT, b"client noise"))
        res = await client.request(found.from_address, m.PEER_HANDSHAKE, target=target, value=value)
        hs = m.decode_handshake(res.value)
        assert (hs.mode, hs.noise, hs.peer_address) == (m.REPLY, b"server noise", server.address)
        assert seen[0] == (m.FROM_RELAY, b"client noise", res.to)
        value = m.encode_holepunch(m.Holepunch(m.FROM_CLIENT, 3, b"client punch"))
        res = await client.request(found.from_address, m.PEER_HOLEPUNCH, target=target, value=value)
        hp = m.decode_holepunch(res.value)
        assert (hp.mode, hp.payload, hp.peer_address) == (m.REPLY, b"server punch", server.address)
    finally:
        await client.destroy()
        await server.destroy()
