"""The Python side of the RPC interop cases, shared by the DHT interop test
(tests/interop/test_rpc_node.py) and the TCP codec check (scripts/rpc_tcp_peer.py):
echo (raw), jecho (JSON, in-band errors), mecho (msgpack), fail (raises with a
code), slow (answers after `slow_s`), note (an event), events (what notes arrived)."""

from __future__ import annotations

import asyncio

from mesh.rpc import RpcServer


def case_server(*, error_code: str, slow_s: float, capability: bytes | None = None) -> RpcServer:
    events: list[str] = []
    server = RpcServer(capability=capability)
    server.respond("echo", lambda b: b, encoding="raw")
    server.respond("jecho", lambda d: {"echo": d, "from": "python"}, encoding="json", inband_errors=True)
    server.respond("mecho", lambda d: {"echo": d, "from": "python"}, encoding="msgpack")

    class Nope(Exception):
        code = error_code

    def fail(_b):
        raise Nope("python says no")

    async def slow(b):
        await asyncio.sleep(slow_s)
        return b

    server.respond("fail", fail, encoding="raw")
    server.respond("slow", slow, encoding="raw")
    server.respond("note", lambda b: events.append((b or b"").decode()), encoding="raw")
    server.respond("events", lambda _b: events, encoding="json")
    return server
