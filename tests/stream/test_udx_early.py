"""Packets that arrive before a stream knows its peer (UDXStream.hold_early) and
the on_connected callback, over real UDP on 127.0.0.1."""

from __future__ import annotations

import asyncio

from mesh.net import UDPNetwork
from mesh.udx import UDXConfig, UDXMux
from mesh.udx.stream import EARLY_PACKETS


async def pair(config: UDXConfig = UDXConfig()):
    a = await UDXMux.bind(UDPNetwork(), config=config)
    b = await UDXMux.bind(UDPNetwork(), config=config)
    return a, b


async def until(pred, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.001)  # polling a counter, not synchronising on time


async def test_packets_before_connect_are_held_and_processed_on_connect():
    a, b = await pair()
    try:
        sa, sb = a.create_stream(), b.create_stream()
        sb.hold_early()
        sa.connect(sb.local_id, b.address)
        sa.write(b"hello before you knew me")
        await until(lambda: b.counters["early_held"] >= 1)
        assert not sb.connected
        sb.connect(sa.local_id, a.address)
        assert await asyncio.wait_for(sb.read(), 5) == b"hello before you knew me"
        assert b.counters["early_dropped"] == 0 and b.counters["unconnected"] == 0
    finally:
        a.close()
        b.close()


async def test_held_packets_are_bounded_and_the_rest_counted():
    a, b = await pair()
    try:
        sa, sb = a.create_stream(), b.create_stream()
        sb.hold_early(limit=2)
        sa.connect(sb.local_id, b.address)
        for i in range(5):
            sa.send(b"m%d" % i)  # unreliable datagrams: no window holds them back
        await until(lambda: b.counters["early_held"] + b.counters["early_dropped"] >= 5)
        assert (b.counters["early_held"], b.counters["early_dropped"]) == (2, 3)
        got = []
        sb.on_message = got.append
        sb.connect(sa.local_id, a.address)
        assert got == [b"m0", b"m1"]
    finally:
        a.close()
        b.close()


async def test_without_hold_early_packets_before_connect_are_dropped_and_counted():
    a, b = await pair()
    try:
        sa, sb = a.create_stream(), b.create_stream()
        sa.connect(sb.local_id, b.address)
        sa.send(b"x")
        await until(lambda: b.counters["unconnected"] >= 1)
        assert b.counters["early_held"] == 0
        assert EARLY_PACKETS >= 10  # room for a peer's initial window
    finally:
        a.close()
        b.close()


async def test_on_connected_fires_after_the_first_packet_when_no_address_is_given():
    a, b = await pair()
    try:
        sa, sb = a.create_stream(), b.create_stream()
        seen = []
        sb.on_connected = lambda: seen.append(sb.remote_address)
        sb.connect(sa.local_id)  # the peer's first packet gives the address
        assert seen == [] and not sb.connected
        sa.connect(sb.local_id, b.address)
        sa.write(b"hi")
        assert await asyncio.wait_for(sb.read(), 5) == b"hi"
        assert seen == [a.address]
    finally:
        a.close()
        b.close()


async def test_on_connected_fires_at_once_when_the_address_is_given():
    a, _b = await pair()
    try:
        s = a.create_stream()
        seen = []
        s.on_connected = lambda: seen.append(True)
        s.connect(1234, ("127.0.0.1", 9))
        assert seen == [True]
    finally:
        a.close()
        _b.close()


async def test_request_and_reply_leave_no_timer_that_would_fire_for_nothing():
    """The reply carries the ACK the request armed a delayed-ACK timer for, and the
    next request acks the reply: once nothing is due, no timer stays armed (each
    would wake the process for nothing, once per request)."""
    a, b = await pair()
    try:
        sa, sb = a.create_stream(), b.create_stream()
        sa.connect(sb.local_id, b.address)
        sb.connect(sa.local_id, a.address)
        for i in range(20):
            sa.write(b"request %d" % i)
            assert await asyncio.wait_for(sb.read(), 5) == b"request %d" % i
            sb.write(b"reply %d" % i)
            # the delayed ACK is no longer due (the reply carried it): the timer
            # waits for what is (the reply's loss probe), not for the ACK time
            due = sb.engine.next_deadline()
            assert sb._timer_at is not None and due - 0.0005 <= sb._timer_at <= due + 0.001
            assert await asyncio.wait_for(sa.read(), 5) == b"reply %d" % i
        sa.write(b"last")  # acks the last reply
        assert await asyncio.wait_for(sb.read(), 5) == b"last"
        await until(lambda: not sb.engine.sb.inflight and sb.engine.next_deadline() is None)
        assert sb._timer is None  # nothing due, nothing armed
        assert sb.counters["acks_out"] <= 2  # replies carried the ACKs
    finally:
        a.close()
        b.close()
