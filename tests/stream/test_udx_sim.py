"""UDX streams on the simulated network (virtual time): loss, reordering,
duplication, dead peers, keepalive, messages, and hostile datagrams."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh import sim
from mesh.errors import ClosedError, TimeoutError_
from mesh.udx import UDXConfig, UDXMux
from mesh.udx import packet as P


async def pair(net, config=UDXConfig()):
    a = await UDXMux.bind(net, config=config)
    b = await UDXMux.bind(net, config=config)
    sa, sb = a.create_stream(), b.create_stream()
    sa.connect(sb.local_id, b.address)
    sb.connect(sa.local_id, a.address)
    return a, b, sa, sb


async def write_all(s, payload, chunk=65536):
    for i in range(0, len(payload), chunk):
        if not s.write(payload[i : i + chunk]):
            await s.drain()
    s.end()


async def read_all(s):
    h, n = hashlib.sha256(), 0
    async for c in s:
        h.update(c)
        n += len(c)
    return n, h.digest()


@pytest.mark.parametrize(
    "loss,size,max_ratio",
    [(0.01, 10_000_000, 0.05), (0.05, 10_000_000, 0.15), (0.20, 10_000_000, 0.45)],
)
def test_bulk_transfer_under_loss_reorder_duplication(loss, size, max_ratio):
    async def main():
        net = sim.SimNetwork(latency=0.005, jitter=0.001, loss=loss, duplicate=0.02, reorder=0.02, seed=11)
        _, _, sa, sb = await pair(net)
        payload = os.urandom(size)
        w = asyncio.ensure_future(write_all(sa, payload))
        n, digest = await read_all(sb)
        await w
        assert (n, digest) == (size, hashlib.sha256(payload).digest())
        sb.end()
        assert await asyncio.wait_for(sa.closed, 120) is None
        assert await asyncio.wait_for(sb.closed, 120) is None
        data_packets = -(-size // sa.engine.mss) + 1
        ratio = sa.counters["retransmits"] / data_packets
        assert ratio <= max_ratio, (ratio, sa.counters)
        assert sb.counters["dup_data"] > 0  # duplication really happened and was absorbed

    sim.run(main)


def test_peer_killed_mid_transfer_is_closed_within_bounded_time():
    async def main():
        net = sim.SimNetwork(latency=0.01)
        a, b, sa, sb = await pair(net)
        payload = os.urandom(2_000_000)
        w = asyncio.ensure_future(write_all(sa, payload))
        got = await sb.read()
        assert got
        b.endpoint.close()  # the peer vanishes without a word
        t0 = asyncio.get_running_loop().time()
        exc = await asyncio.wait_for(asyncio.shield(sa.closed), 200)
        assert isinstance(exc, TimeoutError_)
        assert asyncio.get_running_loop().time() - t0 < 100  # 6 backed-off RTOs
        with pytest.raises(ClosedError):
            await w
        assert sa.local_id not in a.streams

    sim.run(main)


def test_destroy_reaches_the_peer_and_fails_its_reader():
    async def main():
        net = sim.SimNetwork()
        _, _, sa, sb = await pair(net)
        sa.write(b"x" * 5000)
        assert await sb.read()
        sa.destroy()
        exc = await asyncio.wait_for(sb.closed, 5)
        assert isinstance(exc, ClosedError)
        with pytest.raises(ClosedError):
            while await sb.read():
                pass

    sim.run(main)


def test_unconnected_stream_is_connected_by_first_packet_and_messages_flow():
    async def main():
        net = sim.SimNetwork()
        a = await UDXMux.bind(net)
        b = await UDXMux.bind(net)
        sa, sb = a.create_stream(), b.create_stream()
        sb.connect(sa.local_id)  # peer id known from the handshake, address not
        got = asyncio.get_running_loop().create_future()
        sb.on_message = got.set_result
        sa.connect(sb.local_id, b.address)
        sa.write(b"hello")
        assert await sb.read() == b"hello"
        assert sb.remote_address == a.address
        sa.send(b"unreliable")
        assert await asyncio.wait_for(got, 1) == b"unreliable"
        sb.write(b"back")
        assert await sa.read() == b"back"

    sim.run(main)


def test_keepalive_heartbeats_are_answered():
    async def main():
        net = sim.SimNetwork()
        _, _, sa, sb = await pair(net, UDXConfig(keepalive=1.0))
        await asyncio.sleep(10.5)
        assert sb.counters["heartbeats_in"] >= 9 and sa.counters["heartbeats_in"] >= 9
        assert not sa.engine.closed

    sim.run(main)


def test_zero_receive_window_is_respected_and_reopened():
    async def main():
        net = sim.SimNetwork()
        cfg = UDXConfig(rwnd=64 * 1024)
        _, _, sa, sb = await pair(net, cfg)
        payload = os.urandom(1_000_000)
        w = asyncio.ensure_future(write_all(sa, payload))
        await asyncio.sleep(2)  # the reader is not reading: the sender must stop
        assert sa.engine.sb.outstanding_bytes <= 64 * 1024
        n, digest = await read_all(sb)
        await w
        assert (n, digest) == (len(payload), hashlib.sha256(payload).digest())

    sim.run(main)


def test_garbage_truncated_and_unknown_packets_are_counted():
    async def main():
        net = sim.SimNetwork()
        a, b, sa, sb = await pair(net)
        bad = [b"", b"\xff", b"\xff\x01" + b"\x00" * 10, b"\x00" * 40, b"\xff\x02" + bytes(18)]
        for d in bad:
            assert not a.on_datagram(d, b.address)
        assert a.counters["garbage"] == len(bad)
        assert not a.on_datagram(P.encode(P.DATA, 12345, 0, 0, 0, b"x"), b.address)
        assert a.counters["unknown_stream"] == 1
        # a data offset past the end, from the right peer
        a.on_datagram(P.encode(P.DATA, sa.local_id, 0, 0, 0, b"xy", data_offset=9), b.address)
        assert sa.counters["bad_packet"] == 1
        # the right id from a stranger's address
        assert not a.on_datagram(P.encode(P.DATA, sa.local_id, 0, 0, 0, b"x"), ("127.0.0.9", 9))
        assert a.counters["wrong_address"] == 1
        sb.write(b"still fine")
        assert await sa.read() == b"still fine"

    sim.run(main)


def test_mtu_probe_padding_is_skipped():
    async def main():
        net = sim.SimNetwork()
        a, b, sa, sb = await pair(net)
        a.on_datagram(P.encode(P.DATA, sa.local_id, 1 << 20, 0, 0, bytes(7) + b"padded", data_offset=7), b.address)
        assert await sa.read() == b"padded"

    sim.run(main)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=64), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_fuzzed_packets_never_crash(typ, off, body, seq, ack):
    async def main():
        net = sim.SimNetwork()
        a, b, sa, sb = await pair(net)
        a.on_datagram(P.encode(typ, sa.local_id, 1 << 20, seq, ack, body, data_offset=off), b.address)
        a.on_datagram(P.encode(typ, sa.local_id, 0, seq, ack, body)[: 20 + len(body) // 2], b.address)
        await asyncio.sleep(0.1)
        if not sa.engine.closed:
            sb.write(b"ok")

    sim.run(main)


def test_sequence_numbers_wrap_around_32_bits():
    async def main():
        net = sim.SimNetwork(loss=0.02, seed=3)
        a = await UDXMux.bind(net)
        b = await UDXMux.bind(net)
        sa, sb = a.create_stream(), b.create_stream()
        start = 2**32 - 40
        sa.connect(sb.local_id, b.address, seq=start)
        sb.connect(sa.local_id, a.address, ack=start)
        payload = os.urandom(300_000)
        w = asyncio.ensure_future(write_all(sa, payload))
        assert await read_all(sb) == (len(payload), hashlib.sha256(payload).digest())
        await w
        assert sa.engine.sb.remote_acked > 2**32  # really went past the wrap

    sim.run(main)
