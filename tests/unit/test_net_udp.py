"""mesh.net.UDPNetwork: held sends go out as segmented bursts, intact and in order."""

from __future__ import annotations

import asyncio

import pytest

from mesh.net import UDPNetwork


async def _pair():
    got: list[tuple[bytes, tuple]] = []
    arrived = asyncio.Event()
    want = {"n": 0}

    def on(data, addr):
        got.append((data, addr))
        if len(got) >= want["n"]:
            arrived.set()

    net = UDPNetwork()
    rx = await net.bind("127.0.0.1", 0, on)
    rx2 = await net.bind("127.0.0.1", 0, on)
    tx = await net.bind("127.0.0.1", 0, lambda d, a: None)
    return net, tx, rx, rx2, got, arrived, want


@pytest.mark.parametrize("gso", [True, False], ids=["segmented", "one-by-one"])
async def test_held_burst_arrives_whole_and_in_order(gso):
    _net, tx, rx, rx2, got, arrived, want = await _pair()
    tx._gso = gso
    burst = [bytes([i]) * 1200 for i in range(70)] + [b"short tail"]  # more than one segmented send
    other = [b"to the other socket"]
    want["n"] = len(burst) + len(other)
    tx.hold()
    tx.hold()  # holds nest
    for d in burst[:40]:
        tx.sendto(d, rx.local_address)
    tx.sendto(other[0], rx2.local_address)
    for d in burst[40:]:
        tx.sendto(d, rx.local_address)
    tx.release()
    assert not got  # still held by the outer hold
    tx.release()
    await asyncio.wait_for(arrived.wait(), 5)
    assert [d for d, _ in got if d != other[0]] == burst
    assert [d for d, _ in got if d == other[0]] == other
    assert tx.send_drops == 0
    if gso:
        assert tx.gso_sends >= 2  # 40 and 30 + tail: at most 64 segments per send
    else:
        assert tx.gso_sends == 0
    for ep in (tx, rx, rx2):
        ep.close()


async def test_unsegmentable_socket_falls_back_to_one_datagram_per_send():
    _net, tx, rx, _rx2, got, arrived, want = await _pair()
    burst = [b"x" * 1000] * 5
    want["n"] = len(burst)

    class NoGSO:
        def __init__(self, sock):
            self.sock = sock

        def sendmsg(self, *args):
            raise OSError(22, "Invalid argument")  # EINVAL, as a kernel without UDP_SEGMENT answers

        def __getattr__(self, name):
            return getattr(self.sock, name)

    tx._sock = NoGSO(tx._sock)
    tx.hold()
    for d in burst:
        tx.sendto(d, rx.local_address)
    tx.release()
    await asyncio.wait_for(arrived.wait(), 5)
    assert [d for d, _ in got] == burst and tx._gso is False and tx.send_drops == 0
    for ep in (tx, rx):
        ep.close()


async def test_work_deferred_to_batch_end_runs_before_the_batch_sends_leave():
    from mesh import net

    assert net.at_batch_end(lambda: None) is False  # no batch in progress: nothing scheduled
    order: list[str] = []
    done = asyncio.Event()
    got_back: list[bytes] = []

    def on_rx(data, addr):
        order.append(f"in:{data.decode()}")
        if data == b"a":  # answer at once, and defer a second message to the batch end
            rx.sendto(b"reply", addr)
            assert net.at_batch_end(lambda: (order.append("end"), rx.sendto(b"deferred", addr)))

    def on_tx(data, addr):
        got_back.append(data)
        if len(got_back) == 2:
            done.set()

    network = UDPNetwork()
    rx = await network.bind("127.0.0.1", 0, on_rx)
    tx = await network.bind("127.0.0.1", 0, on_tx)
    tx.sendto(b"a", rx.local_address)
    await asyncio.wait_for(done.wait(), 5)
    assert order == ["in:a", "end"] and got_back == [b"reply", b"deferred"]
    assert net.at_batch_end(lambda: None) is False  # the batch is over
    for ep in (rx, tx):
        ep.close()


async def test_a_failing_batch_end_callback_does_not_strand_the_others():
    from mesh import net

    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx))
    ran = asyncio.Event()

    def on_rx(data, addr):
        assert net.at_batch_end(lambda: 1 / 0)
        assert net.at_batch_end(ran.set)

    network = UDPNetwork()
    rx = await network.bind("127.0.0.1", 0, on_rx)
    tx = await network.bind("127.0.0.1", 0, lambda d, a: None)
    try:
        tx.sendto(b"x", rx.local_address)
        await asyncio.wait_for(ran.wait(), 5)
        assert isinstance(reported[0]["exception"], ZeroDivisionError)
    finally:
        loop.set_exception_handler(None)
        for ep in (rx, tx):
            ep.close()
