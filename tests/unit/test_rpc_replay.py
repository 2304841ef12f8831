"""Replay the captured Node session against the Python server and client.

The Python side must write exactly the bytes the Node side wrote in the
capture (tests/data/rpc-capture.json) when fed the same peer messages.
"""

from __future__ import annotations

import asyncio
import json
import pathlib

from mesh.rpc import RpcPeer, RpcServer, RpcTimeoutError

CAPTURE = json.loads((pathlib.Path(__file__).parent.parent / "data" / "rpc-capture.json").read_text())
MSG = {m["n"]: bytes.fromhex(m["hex"]) for m in CAPTURE["messages"]}
SERVER_KEY = bytes.fromhex(CAPTURE["serverPublicKey"])
CLIENT_KEY = bytes.fromhex(CAPTURE["clientPublicKey"])


class ReplayConnection:
    """Delivers scripted messages; records what is written."""

    def __init__(self, public_key, remote_public_key, is_initiator):
        self.public_key, self.remote_public_key, self.is_initiator = public_key, remote_public_key, is_initiator
        self.handshake_hash = bytes(64)
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.written: list[bytes] = []

    def write(self, message):
        self.written.append(bytes(message))
        return True

    async def drain(self):
        pass

    def __aiter__(self):
        return self

    async def __anext__(self):
        m = await self.inbox.get()
        if m is None:
            raise StopAsyncIteration
        return m

    def destroy(self, exc=None):
        self.inbox.put_nowait(None)


async def until(cond):
    while not cond():
        await asyncio.sleep(0.001)


async def test_python_server_answers_node_client_byte_for_byte():
    conn = ReplayConnection(SERVER_KEY, CLIENT_KEY, False)
    server = RpcServer()
    server.respond("echo", lambda v: v, encoding="raw")
    server.respond("jecho", lambda v: {"echo": v}, encoding="json")

    def fail(_v):
        raise Exception("boom")  # noqa: TRY002 - a plain error, like the Node handler's

    async def slow(v):
        await asyncio.sleep(0.05)
        return v

    notes = []
    server.respond("fail", fail, encoding="raw")
    server.respond("slow", slow, encoding="raw")
    server.respond("note", notes.append, encoding="raw")
    server.attach(conn)
    # the Node client's messages on the pooled connection, each after the previous answer
    for sent, writes in (((0, 1), 2), ((8,), 3), ((12,), 4), ((16,), 5), ((20, 22), 6)):
        for n in sent:
            conn.inbox.put_nowait(MSG[n])
        await asyncio.wait_for(until(lambda: len(conn.written) >= writes), 5)
    expected = [MSG[n] for n in (2, 5, 10, 14, 18, 24)]
    assert [w.hex() for w in conn.written] == [e.hex() for e in expected]
    assert notes == [b"fire-and-forget"]
    conn.destroy()


async def test_python_client_speaks_like_node_client():
    conn = ReplayConnection(CLIENT_KEY, SERVER_KEY, True)
    peer = RpcPeer(conn)
    task = asyncio.ensure_future(peer.request("echo", b"hello", encoding="raw"))
    await asyncio.wait_for(until(lambda: len(conn.written) == 2), 5)
    assert conn.written == [MSG[0], MSG[1]]
    conn.inbox.put_nowait(MSG[6])  # the server's open
    conn.inbox.put_nowait(MSG[7])  # its response
    assert await asyncio.wait_for(task, 5) == b"hello"
    # ids continue 2, 3, ...: jecho is request 2 in the capture
    task = asyncio.ensure_future(peer.request("jecho", {"a": 1}, encoding="json"))
    await asyncio.wait_for(until(lambda: len(conn.written) == 3), 5)
    assert conn.written[2] == MSG[8]
    conn.inbox.put_nowait(MSG[11])
    assert await asyncio.wait_for(task, 5) == {"echo": {"a": 1}}
    conn.destroy()


async def test_late_response_from_capture_is_dropped():
    conn = ReplayConnection(CLIENT_KEY, SERVER_KEY, True)
    peer = RpcPeer(conn)
    conn.inbox.put_nowait(MSG[6])
    peer.channel._next_id = 5
    try:
        await peer.request("slow", b"x", encoding="raw", timeout=0.01)
    except RpcTimeoutError:
        pass
    assert conn.written[-1] == MSG[20]
    conn.inbox.put_nowait(MSG[25])  # the late answer to id 5
    await asyncio.wait_for(until(lambda: peer.channel.counters.get("late_response") == 1), 5)
    conn.destroy()
