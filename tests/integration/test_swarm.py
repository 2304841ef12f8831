"""Python Swarm / server / connect over real UDP sockets on 127.0.0.1, on a
Python DHT testnet: data both ways, reconnect, firewall, bad handshakes."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from mesh import crypto
from mesh.connect import connect
from mesh.connect_errors import ConnectionRefusedByPeer, HandshakeTimeoutError, PeerNotFoundError
from mesh.dht import messages as m
from mesh.errors import TimeoutError_
from mesh.dht import testnet as dht_testnet
from mesh.transport import LOOPBACK_LARGE_MTU
from mesh.server import create_server
from mesh.swarm import Swarm, SwarmConfig
from mesh.transport import path_stats, udx_mux
from tests.transfer import data_of, recv_sha256, send_all

MB10 = 10_000_000
TOPIC = crypto.hash(b"mesh swarm integration topic")


def swarm(tn, seed: int, **kw) -> Swarm:
    return Swarm(SwarmConfig(keypair=crypto.keypair(bytes([seed]) * 32),
                             bootstrap=tuple(tn.bootstrap), **kw))


async def next_conn(sw: Swarm, timeout: float = 20.0):
    return await asyncio.wait_for(sw.__anext__(), timeout)


@pytest.mark.parametrize("firewalled", [None, True], ids=["reachable", "firewalled"])
async def test_python_swarms_connect_and_exchange_10mb_both_ways(firewalled):
    async with dht_testnet(3) as tn:
        before = asyncio.all_tasks()
        a, b = swarm(tn, 1, firewalled=firewalled), swarm(tn, 2, firewalled=firewalled)
        try:
            await asyncio.wait_for(a.join(TOPIC, server=True, client=False).flushed(), 20)
            await asyncio.wait_for(b.join(TOPIC, server=False, client=True).flushed(), 20)
            conn_b, info_b = await next_conn(b)
            conn_a, info_a = await next_conn(a)
            assert info_b.public_key == a.keypair.public_key and info_b.topics == [TOPIC]
            assert info_a.public_key == b.keypair.public_key and not info_a.client
            # both read large datagrams and the path is loopback: 16 KiB packets
            assert conn_a.stream.engine.mss == conn_b.stream.engine.mss == LOOPBACK_LARGE_MTU - 48
            up, down = data_of(MB10, b"up"), data_of(MB10, b"down")
            results = await asyncio.wait_for(asyncio.gather(
                send_all(conn_b, up), recv_sha256(conn_a, MB10),
                send_all(conn_a, down), recv_sha256(conn_b, MB10)), 90)
            assert results[1] == hashlib.sha256(up).hexdigest()
            assert results[3] == hashlib.sha256(down).hexdigest()
            assert len(a.connections) == len(b.connections) == 1
            assert path_stats(b.dht) == {"direct": 1}
        finally:
            await b.destroy()
            await a.destroy()
        await asyncio.sleep(0)  # let cancelled tasks finish
        leaked = [t for t in asyncio.all_tasks() - before if not t.done()]
        assert leaked == []
        assert a.dht.destroyed and b.dht.destroyed  # their sockets are closed


async def test_both_sides_dialling_keep_exactly_one_connection():
    async with dht_testnet(3) as tn:
        a, b = swarm(tn, 3), swarm(tn, 4)
        try:
            da, db = a.join(TOPIC), b.join(TOPIC)
            await asyncio.wait_for(asyncio.gather(da.flushed(), db.flushed()), 20)
            await asyncio.wait_for(asyncio.gather(da.refresh(), db.refresh()), 20)
            await asyncio.wait_for(asyncio.gather(a.flush(), b.flush()), 30)
            ca = a.connections[b.keypair.public_key]
            cb = b.connections[a.keypair.public_key]
            assert ca.handshake_hash == cb.handshake_hash  # the same connection survived on both ends
            ca.write(b"ping")
            assert await asyncio.wait_for(cb.__anext__(), 10) == b"ping"
        finally:
            await b.destroy()
            await a.destroy()


async def test_restarted_peer_is_reconnected():
    async with dht_testnet(3) as tn:
        a, b = swarm(tn, 5), swarm(tn, 6)
        try:
            await asyncio.wait_for(a.join(TOPIC, server=True, client=False).flushed(), 20)
            await asyncio.wait_for(b.join(TOPIC, server=False, client=True).flushed(), 20)
            first, _ = await next_conn(b)
            await a.destroy()  # the peer goes away...
            await asyncio.wait_for(asyncio.wait([first.closed]), 20)
            a = swarm(tn, 5)  # ...and comes back with the same key
            await asyncio.wait_for(a.join(TOPIC, server=True, client=False).flushed(), 20)
            second, info = await next_conn(b, timeout=40)  # redialled by b's backoff
            assert info.public_key == a.keypair.public_key
            second.write(b"again")
            conn_a, _ = await next_conn(a)
            assert await asyncio.wait_for(conn_a.__anext__(), 10) == b"again"
        finally:
            await b.destroy()
            await a.destroy()


async def test_firewall_refuses_unknown_keys_before_any_data():
    async with dht_testnet(3) as tn:
        friend = crypto.keypair(b"\x21" * 32)
        a = swarm(tn, 7, firewall=lambda key: key != friend.public_key)
        stranger_dht = await tn.create_node()
        friend_dht = await tn.create_node()
        try:
            await asyncio.wait_for(a.join(TOPIC, server=True, client=False).flushed(), 20)
            with pytest.raises(ConnectionRefusedByPeer):
                await connect(stranger_dht, a.keypair.public_key, keypair=crypto.keypair(b"\x22" * 32))
            assert a._server.stats["firewalled"] == 1
            assert a.connections == {} and a._queue.empty()
            ok = await connect(friend_dht, a.keypair.public_key, keypair=friend)
            conn_a, info = await next_conn(a)
            assert info.public_key == friend.public_key
            ok.write(b"hi")
            assert await asyncio.wait_for(conn_a.__anext__(), 10) == b"hi"
            ok.destroy()
        finally:
            await a.destroy()


async def test_unknown_key_is_peer_not_found():
    async with dht_testnet(3) as tn:
        node = await tn.create_node()
        with pytest.raises(PeerNotFoundError):
            await connect(node, crypto.keypair().public_key, keypair=crypto.keypair(), timeout=15)


async def test_bad_and_replayed_handshakes_are_dropped_and_counted():
    async with dht_testnet(3) as tn:
        server_dht = await tn.create_node()
        client_dht = await tn.create_node()
        kp = crypto.keypair(b"\x31" * 32)
        server = create_server(server_dht)
        await server.listen(kp)
        target = crypto.hash(kp.public_key)
        try:
            async def raw_handshake(noise: bytes):
                value = m.encode_handshake(m.Handshake(m.FROM_CLIENT, noise))
                return await client_dht.request(server_dht.address, m.PEER_HANDSHAKE, target=target,
                                                value=value, retries=1, timeout=0.5)

            # garbage and a message sealed for another server key: no answer
            from mesh.noise import NoiseWrap
            from mesh.noise_payload import NoisePayload, UdxInfo
            wrong = NoiseWrap(crypto.keypair(), crypto.keypair().public_key)
            for noise in (b"\x00" * 40, wrong.send(NoisePayload(udx=UdxInfo(id=1)))):
                with pytest.raises(TimeoutError_):
                    await raw_handshake(noise)
            assert server.stats["bad_handshake"] == 2

            # a real first message is answered once; replayed after its window it is dropped
            good = NoiseWrap(crypto.keypair(), kp.public_key).send(NoisePayload(udx=UdxInfo(id=7)))
            reply = await raw_handshake(good)
            assert m.decode_handshake(reply.value).mode == m.REPLY
            server._pending.clear()  # the retransmission window has passed
            with pytest.raises(TimeoutError_):
                await raw_handshake(good)
            assert server.stats["replayed"] == 1
            assert server.stats["connections"] == 1
        finally:
            await server.close()


async def test_handshake_to_silent_server_times_out():
    async with dht_testnet(3) as tn:
        server_dht = await tn.create_node()
        client_dht = await tn.create_node()
        kp = crypto.keypair(b"\x41" * 32)
        server = create_server(server_dht, firewall=lambda *a: asyncio.sleep(30, result=False))
        await server.listen(kp)
        try:
            with pytest.raises(HandshakeTimeoutError):
                await connect(client_dht, kp.public_key, keypair=crypto.keypair(), timeout=2)
        finally:
            await server.close()
        assert not [s for s in udx_mux(client_dht).streams.values()]


async def test_mesh_node_cli_reports_connections(tmp_path):
    import json
    import signal
    import sys

    config = tmp_path / "topics.toml"
    config.write_text('namespace = "swarm-cli"\nbootstrap = []\n')
    topic = crypto.hash(b"cli topic").hex()
    async with dht_testnet(3) as tn:
        boot = ",".join(f"{h}:{p}" for h, p in tn.bootstrap)
        procs = [await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mesh.node", "--json", "--bootstrap", boot, "--topic-key", topic,
            "--seed", f"{i:02x}" * 32, "--config", str(config), "--lookup-interval", "1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE) for i in (1, 2)]
        keys = [crypto.keypair(bytes([i]) * 32).public_key.hex() for i in (1, 2)]

        async def connection_event(proc) -> dict:
            while True:
                line = await proc.stdout.readline()
                assert line, (await proc.stderr.read()).decode()
                ev = json.loads(line)
                if ev["event"] == "connection":
                    return ev

        try:
            events = await asyncio.wait_for(asyncio.gather(*map(connection_event, procs)), 30)
            for ev, other in zip(events, reversed(keys)):
                assert ev["public_key"] == other
            assert topic in events[0]["topics"] + events[1]["topics"]  # the dialling side found it there
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                await asyncio.wait_for(p.communicate(), 30)
                assert p.returncode == 0


async def test_random_handshake_bytes_never_crash_the_server():
    import random

    async with dht_testnet(1) as tn:
        server_dht = await tn.create_node()
        server = create_server(server_dht)
        await server.listen(crypto.keypair(b"\x51" * 32))
        rng = random.Random(5)
        try:
            for i in range(300):
                noise = rng.randbytes(rng.choice([0, 1, 31, 80, 96, 140, 600]))
                mode = rng.choice([m.FROM_CLIENT, m.FROM_RELAY, m.FROM_SECOND_RELAY])
                peer = None if mode == m.FROM_CLIENT else ("127.0.0.1", 1000 + i)
                reply = await server._on_handshake(
                    type("Req", (), {"from_address": ("127.0.0.1", 2000 + i)})(),
                    m.Handshake(mode, noise, peer))
                assert reply is None
            assert server.stats["bad_handshake"] == server.stats["handshakes"] > 250
            assert server.stats["connections"] == 0
            assert udx_mux(server_dht).streams == {}
        finally:
            await server.close()


async def test_server_announces_route_and_close_unannounces_it():
    async with dht_testnet(4) as tn:
        server_dht = await tn.create_node()
        other = await tn.create_node()
        kp = crypto.keypair(b"\x61" * 32)
        server = create_server(server_dht)
        await server.listen(kp)
        assert len(server.announcer.relays) == 3
        assert server.relay_addresses[0] in (server_dht.public_address, server.announcer.relays[0])
        found = [r.from_address async for r in other.find_peer_iter(kp.public_key)]
        assert set(server.announcer.relays) <= set(found)
        await server.close()
        found = [r.from_address async for r in other.find_peer_iter(kp.public_key)]
        assert found == []


async def test_leave_unannounces_and_stops_redialling():
    async with dht_testnet(3) as tn:
        a, b = swarm(tn, 8), swarm(tn, 9)
        try:
            await asyncio.wait_for(a.join(TOPIC, server=True, client=False).flushed(), 20)
            looker = await tn.create_node()
            found = {p.public_key async for r in looker.lookup(TOPIC) for p in r.peers}
            assert a.keypair.public_key in found
            await b.join(TOPIC, server=False, client=True).flushed()
            conn, _ = await next_conn(b)
            await a.leave(TOPIC)
            found = {p.public_key async for r in looker.lookup(TOPIC) for p in r.peers}
            assert a.keypair.public_key not in found
            await b.leave(TOPIC)
            conn.destroy()
            await asyncio.wait_for(asyncio.wait([conn.closed]), 10)
            assert b.table.next_deadline() is None  # nothing left to redial
        finally:
            await b.destroy()
            await a.destroy()


async def test_max_peers_caps_outgoing_connections():
    async with dht_testnet(3) as tn:
        servers = [swarm(tn, 70 + i) for i in range(3)]
        client = swarm(tn, 80, max_peers=2)
        try:
            for s in servers:
                s.on_connection(lambda conn, info: None)
                await asyncio.wait_for(s.join(TOPIC, server=True, client=False).flushed(), 20)
            await asyncio.wait_for(client.join(TOPIC, server=False, client=True).flushed(), 20)
            await asyncio.wait_for(client.flush(), 30)
            assert len(client.connections) == 2
            assert client.table.dials(asyncio.get_running_loop().time()) == []
        finally:
            await client.destroy()
            for s in servers:
                await s.destroy()


async def test_rejoin_as_client_only_unannounces():
    async with dht_testnet(3) as tn:
        a = swarm(tn, 90)
        looker = await tn.create_node()
        try:
            d = a.join(TOPIC, server=True, client=False)
            await asyncio.wait_for(d.flushed(), 20)
            assert a.keypair.public_key in {p.public_key async for r in looker.lookup(TOPIC) for p in r.peers}
            assert a.join(TOPIC, server=False, client=True) is d
            await asyncio.wait_for(d._unannouncing, 20)
            assert a.keypair.public_key not in {
                p.public_key async for r in looker.lookup(TOPIC) for p in r.peers}
        finally:
            await a.destroy()
