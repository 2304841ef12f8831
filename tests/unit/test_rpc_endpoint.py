"""RpcServer / RpcPeer over the in-memory pipe: concurrency, errors, timeouts, encodings."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from mesh.rpc import (
    ChannelClosedError,
    InbandError,
    MessageTooLargeError,
    RemoteDecodeError,
    RemoteEncodeError,
    RequestFailedError,
    RpcConfig,
    RpcError,
    RpcPeer,
    RpcServer,
    RpcTimeoutError,
    UnknownMethodError,
    ValueDecodeError,
    current_request,
)
from mesh.rpc.pipe import pipe
from mesh.rpc.session import session_for


class Busy(Exception):
    code = "BUSY"
    context = "queue full"


def make_server(**kw) -> RpcServer:
    server = RpcServer(**kw)
    server.respond("echo", lambda v: v)
    server.respond("recho", lambda v: v, encoding="raw")
    server.respond("jecho", lambda v: {"echo": v}, encoding="json")
    server.respond("facs", lambda v: {"got": v["n"]}, encoding="json", inband_errors=True)

    async def slow(v):
        await asyncio.sleep(v)
        return v

    server.respond("slow", slow)

    def fail(v):
        raise ValueError(f"bad value {v}")

    def busy(v):
        raise Busy("try later")

    server.respond("fail", fail)
    server.respond("busy", busy)
    return server


async def connected(server=None, client_config=None, **pipe_kw):
    a, b = pipe(**pipe_kw)
    server = server or make_server()
    server.attach(b)
    return RpcPeer(a, client_config), a, b, server


async def test_echo_and_msgpack_values():
    peer, *_ = await connected()
    assert await peer.request("echo", {"a": [1, 2.5, "x", b"\x00"], "n": None}) == {"a": [1, 2.5, "x", b"\x00"],
                                                                                      "n": None}
    assert await peer.request("echo") is None


async def test_thousand_concurrent_requests_on_one_connection_are_all_matched():
    peer, a, b, server = await connected()
    results = await asyncio.wait_for(asyncio.gather(*(peer.request("echo", i) for i in range(1000))), 20)
    assert results == list(range(1000))
    (chan,) = server.channels
    assert chan.counters.get("late_response", 0) == 0 and not peer.channel._pending


async def test_slow_handler_does_not_block_others():
    peer, *_ = await connected()
    slow = asyncio.ensure_future(peer.request("slow", 30.0))
    for i in range(20):
        assert await asyncio.wait_for(peer.request("echo", i), 5) == i
    assert not slow.done()
    slow.cancel()


async def test_timeout_and_late_response_is_dropped():
    peer, a, b, server = await connected()
    with pytest.raises(RpcTimeoutError) as ei:
        await peer.request("slow", 0.2, timeout=0.01)
    assert ei.value.code == "TIMEOUT_EXCEEDED" and isinstance(ei.value, TimeoutError)
    (chan,) = server.channels
    # the handler still answers; the answer has nobody waiting and is counted, not delivered
    await asyncio.wait_for(_until(lambda: peer.channel.counters.get("late_response") == 1), 5)
    assert await peer.request("echo", "still fine") == "still fine"


async def test_cancelled_request_drops_its_late_response():
    peer, *_ = await connected()
    task = asyncio.ensure_future(peer.request("slow", 0.05))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not peer.channel._pending
    await asyncio.wait_for(_until(lambda: peer.channel.counters.get("late_response") == 1), 5)


async def test_events_reach_handlers_and_are_never_answered():
    got = asyncio.get_running_loop().create_future()
    server = make_server()
    server.respond("note", lambda v: got.set_result(v))
    peer, a, b, _ = await connected(server)
    written = b.bytes_written
    peer.event("note", {"hello": 1})
    peer.event("no-such-method", 1)  # silently dropped, as protomux-rpc does
    assert await asyncio.wait_for(got, 5) == {"hello": 1}
    assert await peer.request("echo", 1) == 1
    assert b.bytes_written - written < 40  # only the echo response (and our channel open) came back


async def test_unknown_method():
    peer, *_ = await connected()
    with pytest.raises(UnknownMethodError) as ei:
        await peer.request("nope", 1)
    assert ei.value.code == "UNKNOWN_METHOD" and ei.value.message == "Unknown method 'nope'"


async def test_handler_error_becomes_request_error_with_message():
    peer, *_ = await connected()
    with pytest.raises(RequestFailedError) as ei:
        await peer.request("fail", 7)
    e = ei.value
    assert (e.code, e.message, e.wire_code, e.wire_message) == ("REQUEST_ERROR", "bad value 7", "REQUEST_ERROR",
                                                                "Request failed")
    assert e.cause_code is None


async def test_handler_error_code_and_context_are_carried():
    peer, *_ = await connected()
    with pytest.raises(RpcError) as ei:
        await peer.request("busy", 1)
    e = ei.value
    assert (e.code, e.message, e.wire_code, e.cause_code, e.context) == ("BUSY", "try later", "REQUEST_ERROR",
                                                                          "BUSY", "queue full")


async def test_numpy_round_trip_zero_copy():
    peer, *_ = await connected()
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    out = await peer.request("echo", {"x": x, "ids": np.arange(4)})
    assert out["x"].dtype == np.float32 and np.array_equal(out["x"], x) and not out["x"].flags.owndata
    assert np.array_equal(out["ids"], np.arange(4))


async def test_encodings_raw_json_and_inband_errors():
    peer, *_ = await connected()
    assert await peer.request("recho", b"hello", encoding="raw") == b"hello"
    assert await peer.request("recho", b"", encoding="raw") is None  # optionalBuffer: empty = null
    assert await peer.request("jecho", [1, "x"], encoding="json") == {"echo": [1, "x"]}
    assert await peer.request("facs", {"n": 3}, encoding="json", inband_errors=True) == {"got": 3}
    with pytest.raises(InbandError) as ei:
        await peer.request("facs", {"m": 3}, encoding="json", inband_errors=True)
    assert ei.value.code == "HRPC_ERR" and "'n'" in ei.value.message
    # a non-JSON request is answered in-band too (what a Node caller sending plain buffers sees)
    assert await peer.request("facs", b"not json", encoding="raw") == b'"[HRPC_ERR]=ERR_FACS_NET_DATA_FORMAT"'
    # a caller that does not opt in sees the in-band string as the value
    assert (await peer.request("facs", b"{", encoding="raw")).startswith(b'"[HRPC_ERR]=')


async def test_undecodable_request_value_is_decode_error_and_connection_survives():
    peer, *_ = await connected()
    with pytest.raises(RemoteDecodeError) as ei:
        await peer.request("jecho", b"{not json", encoding="raw")
    assert ei.value.wire_code == "DECODE_ERROR"
    assert await peer.request("echo", 2) == 2


async def test_unencodable_response_is_encode_error():
    server = make_server()
    server.respond("obj", lambda v: object())
    peer, *_ = await connected(server)
    with pytest.raises(RemoteEncodeError):
        await peer.request("obj", 1)


async def test_undecodable_response_value_is_local_decode_error():
    server = make_server()
    server.respond("bad", lambda v: b"\xc1", encoding="raw")  # not msgpack
    peer, *_ = await connected(server)
    with pytest.raises(ValueDecodeError) as ei:
        await peer.request("bad", 1)
    assert ei.value.code == "DECODE_ERROR"
    assert await peer.request("echo", 1) == 1


async def test_oversized_request_is_refused_before_sending():
    cfg = RpcConfig(max_message_size=1024)
    peer, a, b, _ = await connected(client_config=cfg)
    before = a.bytes_written
    with pytest.raises(MessageTooLargeError):
        await peer.request("echo", b"x" * 2000)
    with pytest.raises(MessageTooLargeError):
        peer.event("echo", b"x" * 2000)
    assert a.bytes_written == before
    assert await peer.request("echo", b"x" * 500) == b"x" * 500


async def test_oversized_request_is_refused_by_the_server_with_a_clear_error():
    server = make_server(config=RpcConfig(max_message_size=1024))
    peer, *_ = await connected(server)
    with pytest.raises(RemoteDecodeError) as ei:
        await peer.request("echo", b"x" * 5000)
    assert ei.value.cause_code == "MESSAGE_TOO_LARGE"
    server.respond("big", lambda n: b"y" * n)
    with pytest.raises(RemoteEncodeError) as ei:
        await peer.request("big", 5000)
    assert ei.value.cause_code == "MESSAGE_TOO_LARGE"
    assert await peer.request("echo", 1) == 1


async def test_oversized_response_is_refused_by_the_caller():
    peer, *_ = await connected(client_config=RpcConfig(max_message_size=1024))
    with pytest.raises(MessageTooLargeError):
        await peer.request("echo", b"z" * 1000 + b"z" * 100)  # request too big: refused locally
    server_big = make_server()
    server_big.respond("big", lambda n: b"y" * n)
    peer2, *_ = await connected(server_big, client_config=RpcConfig(max_message_size=1024))
    with pytest.raises(MessageTooLargeError):
        await peer2.request("big", 4000)
    assert await peer2.request("echo", 3) == 3


async def test_one_megabyte_payload():
    peer, *_ = await connected()
    blob = bytes(range(256)) * 4096
    assert await peer.request("recho", blob, encoding="raw") == blob


async def test_connection_close_fails_pending_requests_and_nothing_leaks():
    peer, a, b, server = await connected()
    pending = [asyncio.ensure_future(peer.request("slow", 60.0)) for _ in range(5)]
    await asyncio.wait_for(_until(lambda: len(next(iter(server.channels))._tasks) == 5), 5)
    (chan,) = server.channels
    handler_tasks = set(chan._tasks)
    a.destroy()
    for p in pending:
        with pytest.raises(ChannelClosedError):
            await asyncio.wait_for(p, 5)
    await asyncio.wait_for(_until(lambda: all(t.done() for t in handler_tasks)), 5)
    assert not server.channels
    with pytest.raises(ChannelClosedError):
        await peer.request("echo", 1)


async def test_peer_channel_close_and_reopen_on_same_connection():
    peer, a, b, server = await connected()
    assert await peer.request("echo", 1) == 1
    peer.close()
    await asyncio.wait_for(peer.closed, 5)
    with pytest.raises(ChannelClosedError):
        await peer.request("echo", 1)
    peer2 = RpcPeer(a)
    assert await asyncio.wait_for(peer2.request("echo", 2), 5) == 2


async def test_no_server_on_the_other_side_rejects_the_channel():
    a, b = pipe()
    RpcPeer(b)  # b only calls, serves nothing: a's channel gets rejected
    peer = RpcPeer(a)
    with pytest.raises(ChannelClosedError):
        await asyncio.wait_for(peer.request("echo", 1), 5)
    assert not a.closed.done()  # rejection is not fatal


async def test_malformed_protomux_frame_destroys_only_that_connection():
    peer, a, b, server = await connected()
    assert await peer.request("echo", 1) == 1
    a.write(b"\x00\x01\x05")  # truncated open: protomux destroys the stream
    await asyncio.wait_for(b.closed, 5)
    peer2, *_ = await connected(server)
    assert await peer2.request("echo", 2) == 2


async def test_invalid_open_is_fatal_unknown_channel_ids_are_not():
    peer, a, b, server = await connected()
    assert await peer.request("echo", 1) == 1
    a.write(b"\x09\x00\x01\x04echo\x01\x00")  # message on a channel id never opened: ignored
    a.write(b"\x01\x07junk")  # unknown message type on a live channel: ignored
    a.write(b"\x01\x00\xfd")  # undecodable request header: dropped and counted
    a.write(b"\x01\x01\xff")  # undecodable response: dropped and counted
    assert await peer.request("echo", 2) == 2
    (chan,) = server.channels
    assert chan.counters["bad_request"] == 1 and chan.counters["unknown_message_type"] == 1
    a.write(bytes.fromhex("000105") + b"\x01p\x00")  # open id 5 with ids 2..4 missing
    await asyncio.wait_for(b.closed, 5)


async def test_unknown_protocol_open_is_rejected_and_connection_survives():
    peer, a, b, server = await connected()
    session = session_for(a)
    other = session.mux.open_channel("hypercore/x", b"k" * 32, user_data=_Sink())
    session.flush()
    assert await peer.request("echo", 3) == 3
    assert other.closed and not a.closed.done()


class _Sink:
    def on_open(self):
        pass

    def on_message(self, type_, payload):
        pass

    def on_close(self, remote):
        pass


async def test_backpressure_waits_for_a_slow_reader():
    peer, a, b, server = await connected(high_water=4096, slow_reader=True)
    b.release(1)  # let the client's channel open through
    task = asyncio.ensure_future(peer.request("recho", b"q" * 20000, encoding="raw"))
    await asyncio.wait_for(_until(lambda: b.unread_bytes > 4096), 5)
    for _ in range(5):
        await asyncio.sleep(0)
    assert not task.done()  # blocked in drain(): the reader has not taken it
    b.release()
    assert await asyncio.wait_for(task, 5) == b"q" * 20000


async def test_capability_handshake():
    key = b"c" * 32
    a, b = pipe()
    server = make_server(capability=key)
    server.attach(b)
    peer = RpcPeer(a, capability=key)
    assert await asyncio.wait_for(peer.request("echo", 1), 5) == 1
    assert await peer.channel.opened


async def test_wrong_capability_destroys_the_connection():
    a, b = pipe()
    make_server(capability=b"c" * 32).attach(b)
    peer = RpcPeer(a, capability=b"d" * 32)
    with pytest.raises((ChannelClosedError, RpcError)):
        await asyncio.wait_for(peer.request("echo", 1), 5)
    await asyncio.wait_for(a.closed, 5)


async def test_handlers_see_the_request_context_and_server_unrespond():
    server = make_server()
    server.respond("who", lambda v: current_request().remote_public_key)
    peer, a, b, _ = await connected(server)
    assert await peer.request("who") == a.public_key
    server.unrespond("who")
    with pytest.raises(UnknownMethodError):
        await peer.request("who")


async def test_both_sides_serve_and_call_on_one_connection():
    a, b = pipe()
    sa, sb = RpcServer(), RpcServer()
    sa.respond("name", lambda v: "a")
    sb.respond("name", lambda v: "b")
    sa.attach(a)
    sb.attach(b)
    pa, pb = RpcPeer(a), RpcPeer(b)
    assert await asyncio.wait_for(pa.request("name"), 5) == "b"
    assert await asyncio.wait_for(pb.request("name"), 5) == "a"


async def _until(cond):
    while not cond():
        await asyncio.sleep(0.001)


async def test_random_garbage_never_crashes_the_server():
    import random

    rng = random.Random(1234)
    server = make_server()
    survived = destroyed = 0
    for _ in range(150):
        peer, a, b, _ = await connected(server)
        assert await peer.request("echo", 0) == 0
        session = session_for(b)
        for _ in range(rng.randint(1, 4)):
            n = rng.randint(1, 12)
            head = rng.choice([b"", b"\x00", b"\x01", b"\x01\x00", b"\x01\x01", b"\x00\x00\x01"])
            a.write(head + bytes(rng.getrandbits(8) for _ in range(n)))
        try:
            assert await asyncio.wait_for(peer.request("echo", 1), 2) == 1
            survived += 1
        except (ChannelClosedError, asyncio.TimeoutError, RpcError):
            destroyed += 1
        a.destroy()
        await asyncio.wait_for(session._reader, 2)  # the reader ends cleanly, no exception
        assert session.closed
    assert survived and destroyed


async def test_remote_server_channel_waits_for_a_late_rpc_peer():
    # like a Node @hyperswarm/rpc server, a serves on the connection at once; b serves too
    # and only later decides to call a: a's server channel must not be rejected meanwhile
    a, b = pipe()
    sa, sb = make_server(), RpcServer()
    sa.attach(a)
    sb.attach(b)
    server_a = next(iter(sa.channels))
    probe = RpcPeer(a)  # a calls b, so both sessions are reading
    with pytest.raises(UnknownMethodError):
        await asyncio.wait_for(probe.request("nothing"), 5)
    peer = RpcPeer(b)
    assert await asyncio.wait_for(peer.request("echo", "late"), 5) == "late"
    assert not server_a.is_closed and session_for(b).mux.counters.get("rejected_open", 0) == 0


class SingleWaiterDrain:
    """Wraps a pipe end; its drain() keeps one waiter, like some transports do."""

    def __init__(self, conn):
        self._conn = conn
        self.concurrent = self.max_concurrent = 0

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def __aiter__(self):
        return self._conn.__aiter__()

    async def drain(self):
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            await self._conn.drain()
        finally:
            self.concurrent -= 1


async def test_concurrent_requests_share_one_drain_under_backpressure():
    a, b = pipe(high_water=4096, slow_reader=True)
    make_server().attach(b)
    wrapped = SingleWaiterDrain(a)
    peer = RpcPeer(wrapped)
    b.release(1)
    tasks = [asyncio.ensure_future(peer.request("recho", bytes([i]) * 10000, encoding="raw")) for i in range(20)]
    await asyncio.wait_for(_until(lambda: wrapped.concurrent == 1), 5)
    for _ in range(5):
        await asyncio.sleep(0)
    assert not any(t.done() for t in tasks)
    b.release()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert results == [bytes([i]) * 10000 for i in range(20)]
    assert wrapped.max_concurrent == 1


async def test_handler_flood_is_answered_busy_beyond_the_limit():
    server = make_server(config=RpcConfig(max_handlers=10))
    peer, *_ = await connected(server)
    slow = [asyncio.ensure_future(peer.request("slow", 30.0)) for _ in range(10)]
    await asyncio.wait_for(_until(lambda: len(next(iter(server.channels))._tasks) == 10), 5)
    with pytest.raises(RequestFailedError) as ei:
        await asyncio.wait_for(peer.request("echo", 1), 5)
    assert ei.value.code == "BUSY"
    for t in slow:
        t.cancel()
    await asyncio.gather(*slow, return_exceptions=True)
