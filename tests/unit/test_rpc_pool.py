"""RpcClient pool: one connection per key, linger, reconnect (virtual time via mesh.sim)."""

from __future__ import annotations

import asyncio

import pytest

from mesh import sim
from mesh.rpc import RpcClient, RpcConfig, RpcServer, RpcTimeoutError
from mesh.rpc.errors import ChannelClosedError
from mesh.rpc.pipe import pipe

KEY_A, KEY_B = b"A" * 32, b"B" * 32


class Dialer:
    """connect(public_key) over pipe() to a Python RpcServer; counts dials."""

    def __init__(self, delay=0.0, fail_first=0):
        self.server = RpcServer()
        self.server.respond("echo", lambda v: v)

        async def slow(v):
            await asyncio.sleep(v)
            return v

        self.server.respond("slow", slow)
        self.dials: list[bytes] = []
        self.conns = []
        self.delay, self.fail_first = delay, fail_first

    async def __call__(self, public_key):
        self.dials.append(public_key)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_first:
            self.fail_first -= 1
            raise ConnectionRefusedError("no route")
        a, b = pipe()
        self.server.attach(b, id=public_key)
        self.conns.append(a)
        return a


def test_one_connection_per_key_and_linger_then_reconnect():
    async def main():
        dial = Dialer()
        client = RpcClient(dial)
        res = await asyncio.gather(*(client.request(KEY_A, "echo", i) for i in range(50)),
                                   *(client.request(KEY_B, "echo", i) for i in range(5)))
        assert res == list(range(50)) + list(range(5))
        assert sorted(dial.dials) == [KEY_A, KEY_B] and client.size == 2
        await asyncio.sleep(9.9)
        assert client.size == 2 and not dial.conns[0].closed.done()
        assert await client.request(KEY_A, "echo", "again") == "again"  # restarts A's linger
        await asyncio.sleep(0.2)
        assert client.size == 1 and dial.conns[1].closed.done()  # B expired at 10 s
        await asyncio.sleep(10)
        assert client.size == 0 and dial.conns[0].closed.done()
        assert await client.request(KEY_A, "echo", 1) == 1
        assert dial.dials.count(KEY_A) == 2
        await client.close()

    sim.run(main())


def test_slow_request_outlives_the_linger_time():
    async def main():
        dial = Dialer()
        client = RpcClient(dial, RpcConfig(pool_linger=1.0))
        assert await client.request(KEY_A, "slow", 5.0) == 5.0
        assert len(dial.dials) == 1
        await client.close()

    sim.run(main())


def test_closed_connection_is_replaced_on_next_request():
    async def main():
        dial = Dialer()
        client = RpcClient(dial)
        assert await client.request(KEY_A, "echo", 1) == 1
        peer = client._pool[KEY_A].peer
        dial.conns[0].destroy()
        await asyncio.wait_for(peer.closed, 1)
        await asyncio.sleep(0)  # let the pool's done-callback run
        assert client.size == 0
        assert await client.request(KEY_A, "echo", 2) == 2
        assert len(dial.dials) == 2
        await client.close()

    sim.run(main())


def test_requests_in_flight_fail_when_the_connection_dies():
    async def main():
        dial = Dialer()
        client = RpcClient(dial)
        task = asyncio.ensure_future(client.request(KEY_A, "slow", 30.0))
        await asyncio.sleep(1)
        dial.conns[0].destroy()
        with pytest.raises(ChannelClosedError):
            await task
        await client.close()

    sim.run(main())


def test_connect_failure_reaches_the_caller_and_next_request_retries():
    async def main():
        dial = Dialer(fail_first=1)
        client = RpcClient(dial)
        with pytest.raises(ConnectionRefusedError):
            await client.request(KEY_A, "echo", 1)
        assert client.size == 0
        assert await client.request(KEY_A, "echo", 2) == 2
        await client.close()

    sim.run(main())


def test_timeout_covers_connecting_and_abandoned_connection_lingers_out():
    async def main():
        dial = Dialer(delay=5.0)
        client = RpcClient(dial)
        with pytest.raises(RpcTimeoutError):
            await client.request(KEY_A, "echo", 1, timeout=1.0)
        await asyncio.sleep(5)  # the dial completes with nobody waiting
        assert client.size == 1
        await asyncio.sleep(10.1)
        assert client.size == 0 and dial.conns[0].closed.done()
        await client.close()

    sim.run(main())


def test_close_destroys_everything_and_refuses_new_requests():
    async def main():
        dial = Dialer()
        client = RpcClient(dial)
        await client.request(KEY_A, "echo", 1)
        await client.event(KEY_A, "echo", 2)
        await client.close()
        assert dial.conns[0].closed.done()
        with pytest.raises(ChannelClosedError):
            await client.request(KEY_A, "echo", 1)

    sim.run(main())
