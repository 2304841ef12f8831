"""Hostile and broken input: nodes drop it, count it, and keep serving."""

from __future__ import annotations

import asyncio
import random

from mesh import crypto, sim
from mesh.dht import DHT, DHTConfig
from mesh.dht import messages as m
from mesh.dht import testnet as start_testnet


class Raw:
    """A bare UDP endpoint on the simulated network that speaks bytes."""

    def __init__(self):
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.ep = None

    async def bind(self, net, port=0):
        self.ep = await net.bind("127.0.0.1", port, lambda d, a: self.inbox.put_nowait((d, a)))
        return self

    def send(self, data: bytes, to):
        self.ep.sendto(data, to)

    async def response(self, tid: int, timeout: float = 2.0) -> m.Response:
        async def wait():
            while True:
                data, _ = await self.inbox.get()
                msg = m.decode_message(data)
                if isinstance(msg, m.Response) and msg.tid == tid:
                    return msg
        return await asyncio.wait_for(wait(), timeout)

    async def nothing(self, timeout: float = 2.0) -> bool:
        try:
            await asyncio.wait_for(self.inbox.get(), timeout)
            return False
        except asyncio.TimeoutError:
            return True


def req(tid, to, command, **kw) -> bytes:
    return m.encode_request(m.Request(tid, to, command, **kw))


async def ping(raw: Raw, node: DHT, tid: int) -> m.Response:
    raw.send(req(tid, node.address, m.PING, internal=True), node.address)
    return await raw.response(tid)


def run_with_node(body):
    async def main():
        net = sim.SimNetwork(latency=0.001, seed=5)
        async with start_testnet(5, network=net) as tn:
            raw = await Raw().bind(net)
            await body(net, tn, tn.nodes[2], raw)
        own = asyncio.current_task()
        assert [t for t in asyncio.all_tasks() if t is not own] == []  # nothing leaked
    sim.run(main())


def test_random_and_truncated_datagrams_are_counted_and_dropped():
    async def body(net, tn, node, raw):
        rng = random.Random(3)
        valid = req(1, node.address, m.LOOKUP, target=b"\x01" * 32)
        for i in range(500):
            raw.send(bytes(rng.randrange(256) for _ in range(rng.randrange(2, 80))), node.address)
            raw.send(b"\x03" + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60))), node.address)
            raw.send(valid[: rng.randrange(2, len(valid) - 32)], node.address)
        assert (await ping(raw, node, 77)).error == 0
        assert node.stats["malformed"] > 500
    run_with_node(body)


def test_unknown_trailing_fields_are_tolerated():
    async def body(net, tn, node, raw):
        raw.send(req(5, node.address, m.FIND_NODE, internal=True, target=b"\x02" * 32) + b"\x07\x07", node.address)
        res = await raw.response(5)
        assert res.error == 0 and res.closer_nodes
    run_with_node(body)


def test_ids_not_matching_the_sender_are_ignored():
    async def body(net, tn, node, raw):
        forged = m.node_id(("127.0.0.1", 1))
        raw.send(req(9, node.address, m.PING, internal=True, id=forged), node.address)
        await raw.response(9)
        assert node.stats["id_mismatch"] == 1
        assert forged not in node.table and m.node_id(raw.ep.local_address) not in node.table
    run_with_node(body)


def test_wrong_and_stale_tokens_are_refused():
    async def body(net, tn, node, raw):
        kp, topic = crypto.keypair(b"\x41" * 32), b"\x42" * 32
        raw.send(req(1, node.address, m.LOOKUP, target=topic), node.address)
        token = (await raw.response(1)).token
        peer = m.PeerRecord(kp.public_key, ())
        sig = crypto.sign(m.announce_signable(topic, node.id, token, m.Announce(peer)), kp.secret_key)
        value = m.encode_announce(m.Announce(peer, None, sig))
        raw.send(req(2, node.address, m.ANNOUNCE, token=b"\x00" * 32, target=topic, value=value), node.address)
        res = await raw.response(2)
        assert res.error == m.ERR_INVALID_TOKEN and res.token is not None
        await asyncio.sleep(20)  # the token is now older than two rotations
        raw.send(req(3, node.address, m.ANNOUNCE, token=token, target=topic, value=value), node.address)
        assert (await raw.response(3)).error == m.ERR_INVALID_TOKEN
        assert node.stats["bad_token"] == 2
        assert node.store.get_records(topic, node.now()) == []
    run_with_node(body)


def test_forged_signatures_are_dropped_without_storing():
    async def body(net, tn, node, raw):
        kp, other, topic = crypto.keypair(b"\x51" * 32), crypto.keypair(b"\x52" * 32), b"\x53" * 32
        raw.send(req(1, node.address, m.LOOKUP, target=topic), node.address)
        token = (await raw.response(1)).token
        peer = m.PeerRecord(kp.public_key, ())
        sig = crypto.sign(m.announce_signable(topic, node.id, token, m.Announce(peer)), other.secret_key)
        raw.send(req(2, node.address, m.ANNOUNCE, token=token, target=topic,
                     value=m.encode_announce(m.Announce(peer, None, sig))), node.address)
        mut = m.encode_mutable_put(m.MutablePut(kp.public_key, 1, b"v", b"\x00" * 64))
        raw.send(req(3, node.address, m.MUTABLE_PUT, token=token, target=crypto.hash(kp.public_key), value=mut),
                 node.address)
        assert await raw.nothing(1.0)
        assert node.stats["bad_signature"] == 2
        assert node.store.get_records(topic, node.now()) == []
        assert await tn.nodes[0].mutable_get(kp.public_key) is None
    run_with_node(body)


def test_oversized_datagrams_and_values_are_dropped():
    async def body(net, tn, node, raw):
        raw.send(req(1, node.address, m.PING, internal=True, value=b"x" * 9000), node.address)
        value = b"y" * 5000
        raw.send(req(2, node.address, m.LOOKUP, target=b"\x01" * 32), node.address)
        token = (await raw.response(2)).token
        raw.send(req(3, node.address, m.IMMUTABLE_PUT, token=token, target=crypto.hash(value), value=value),
                 node.address)
        assert await raw.nothing(1.0)
        assert node.stats["oversized"] == 2
    run_with_node(body)


def test_unknown_commands_get_an_error_and_are_counted():
    async def body(net, tn, node, raw):
        raw.send(req(1, node.address, 99, target=b"\x01" * 32), node.address)
        res = await raw.response(1)
        assert res.error == m.ERR_UNKNOWN_COMMAND and res.closer_nodes
        raw.send(req(2, node.address, 42, internal=True), node.address)
        assert (await raw.response(2)).error == m.ERR_UNKNOWN_COMMAND
        assert node.stats["unknown_command"] == 2
    run_with_node(body)


def test_a_flooding_source_does_not_starve_others():
    async def body(net, tn, node, raw):
        honest = await Raw().bind(net)
        for i in range(5000):
            raw.send(req(i & 0xFFFF, node.address, m.FIND_NODE, internal=True, target=b"\x05" * 32), node.address)
        honest.send(req(4242, node.address, m.PING, internal=True), node.address)
        assert (await honest.response(4242)).error == 0
        assert node.stats["rate_limited"] >= 4000
        # the honest node is still served by normal lookups too
        assert len([r async for r in tn.nodes[4].lookup(b"\x05" * 32)]) == 0
    run_with_node(body)


def test_node_survives_garbage_from_the_udx_and_probe_paths():
    async def body(net, tn, node, raw):
        got = []
        node.set_udx_handler(lambda d, a, s: got.append(("udx", d)))
        node.set_probe_handler(lambda d, a, s: got.append(("probe", d)))
        raw.send(b"\xff\x01" + b"\x00" * 30, node.address)
        raw.send(b"\x00", node.address)
        assert (await ping(raw, node, 8)).error == 0
        assert [k for k, _ in got] == ["udx", "probe"]
        node.send_raw(b"\xff\x01hello", raw.ep.local_address)
        data, _ = await asyncio.wait_for(raw.inbox.get(), 1)
        assert data == b"\xff\x01hello"
    run_with_node(body)


def test_a_node_configured_with_a_bad_bootstrap_still_starts():
    async def main():
        net = sim.SimNetwork(seed=1)
        node = DHT(DHTConfig(bootstrap=(("127.0.0.1", 1),), ephemeral=True), net)
        await node.ready()
        assert len(node.table) == 0
        await node.destroy()
    sim.run(main())
