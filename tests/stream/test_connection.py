"""mesh.connection.Connection: Noise + UDX + secret-stream, on real UDP and in simulation."""

from __future__ import annotations

import asyncio
import hashlib
import os

from mesh import crypto, sim
from mesh.connection import Connection, ConnectionConfig
from mesh.errors import ClosedError, TimeoutError_
from mesh.net import UDPNetwork
from mesh.noise import NoiseWrap
from mesh.noise_payload import NoisePayload, UdxInfo
from mesh.secret_stream import FrameTooLarge
from mesh.udx import UDXMux


async def conn_pair(net, cfg_a=ConnectionConfig(), cfg_b=ConnectionConfig()):
    """Handshake locally with mesh.noise, then wire the UDX streams as the DHT would."""
    ka, kb = crypto.keypair(), crypto.keypair()
    ma, mb = await UDXMux.bind(net), await UDXMux.bind(net)
    sa, sb = ma.create_stream(), mb.create_stream()
    i, r = NoiseWrap(ka, kb.public_key), NoiseWrap(kb)
    p1 = r.recv(i.send(NoisePayload(udx=UdxInfo(id=sa.local_id))))
    p2 = i.recv(r.send(NoisePayload(udx=UdxInfo(id=sb.local_id))))
    sb.connect(p1.udx.id)  # server side: address comes with the first packet
    sa.connect(p2.udx.id, mb.address)
    return Connection(sa, i.final(), cfg_a), Connection(sb, r.final(), cfg_b), ma, mb


async def pump(conn, payload, size=65536):
    for k in range(0, len(payload), size):
        if not conn.write(payload[k : k + size]):
            await conn.drain()


async def collect(conn, total):
    h, n = hashlib.sha256(), 0
    while n < total:
        m = await conn.recv()
        h.update(m)
        n += len(m)
    return h.digest()


async def test_ten_megabytes_both_ways_over_udp():
    a, b, ma, mb = await conn_pair(UDPNetwork())
    try:
        assert a.remote_public_key == b.public_key and b.remote_public_key == a.public_key
        assert a.handshake_hash == b.handshake_hash and a.is_initiator and not b.is_initiator
        up, down = os.urandom(10_000_000), os.urandom(10_000_000)
        results = await asyncio.wait_for(
            asyncio.gather(pump(a, up), pump(b, down), collect(b, len(up)), collect(a, len(down))), 120
        )
        assert results[2] == hashlib.sha256(up).digest() and results[3] == hashlib.sha256(down).digest()
        await asyncio.wait_for(asyncio.gather(a.close(), b.close()), 15)
        assert a.closed.result() is None and b.closed.result() is None
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
    finally:
        ma.close()
        mb.close()


async def test_messages_keep_their_boundaries_and_callbacks_and_datagrams():
    a, b, ma, mb = await conn_pair(UDPNetwork())
    try:
        got: list[bytes] = []
        done = asyncio.get_running_loop().create_future()
        dgram = asyncio.get_running_loop().create_future()
        b.on_message = lambda m: (got.append(m), len(got) == 3 and done.set_result(None))
        b.on_datagram = dgram.set_result
        for m in (b"a", b"b" * 100_000, b"c"):
            a.write(m)
        await asyncio.wait_for(done, 10)
        assert got == [b"a", b"b" * 100_000, b"c"]
        a.send(b"unordered")
        assert await asyncio.wait_for(dgram, 5) == b"unordered"
        closed = asyncio.get_running_loop().create_future()
        b.on_close = closed.set_result
        a.destroy()
        assert isinstance(await asyncio.wait_for(closed, 5), ClosedError)
    finally:
        ma.close()
        mb.close()


def test_dead_peer_is_closed_within_the_timeout():
    async def main():
        a, b, ma, mb = await conn_pair(sim.SimNetwork(latency=0.01))
        a.write(b"hello")
        assert await b.recv() == b"hello"
        mb.endpoint.close()  # b's host vanishes
        t0 = asyncio.get_running_loop().time()
        exc = await asyncio.wait_for(asyncio.shield(a.closed), 60)
        assert isinstance(exc, TimeoutError_)
        assert asyncio.get_running_loop().time() - t0 <= a.config.timeout + 1

    sim.run(main)


def test_keepalive_keeps_an_idle_connection_alive():
    async def main():
        a, b, *_ = await conn_pair(sim.SimNetwork(latency=0.01))
        await asyncio.sleep(120)
        assert not a.closed.done() and not b.closed.done()
        assert a.counters["keepalives"] >= 20 and b.counters["keepalives"] >= 20
        a.write(b"still here")
        assert await b.recv() == b"still here"

    sim.run(main)


def test_oversized_frame_is_rejected_counted_and_closes():
    async def main():
        a, b, *_ = await conn_pair(sim.SimNetwork(), cfg_b=ConnectionConfig(max_frame=1024))
        a.write(b"small")
        assert await b.recv() == b"small"
        a.write(b"x" * 5000)
        exc = await asyncio.wait_for(asyncio.shield(b.closed), 5)
        assert isinstance(exc, FrameTooLarge) and b.counters["oversized"] == 1
        assert isinstance(await asyncio.wait_for(asyncio.shield(a.closed), 5), ClosedError)
        try:
            a.write(b"more")
        except ClosedError:
            pass
        else:
            raise AssertionError("write after close must raise")

    sim.run(main)


async def test_deliver_to_gives_queued_messages_first_then_live_ones_then_done():
    a, b, ma, mb = await conn_pair(UDPNetwork())
    try:
        a.write(b"one")
        a.write(b"two")
        assert await asyncio.wait_for(b.recv(), 5) == b"one"  # "two" stays queued
        got, done = [], asyncio.get_running_loop().create_future()
        b.deliver_to(got.append, done.set_result)
        assert got == [b"two"]
        a.write(b"three")
        await asyncio.wait_for(a.close(), 15)
        assert await asyncio.wait_for(done, 5) is None  # the peer ended cleanly
        assert got == [b"two", b"three"]
    finally:
        ma.close()
        mb.close()


async def test_deliver_to_on_a_destroyed_connection_reports_done_with_the_reason():
    a, b, ma, mb = await conn_pair(UDPNetwork())
    try:
        err = ClosedError("gone")
        b.destroy(err)
        seen = []
        b.deliver_to(seen.append, seen.append)
        assert seen == [err]
    finally:
        ma.close()
        mb.close()
