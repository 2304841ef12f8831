"""Python side of the RPC codec check against real @hyperswarm/rpc (tests/interop/node/rpc-tcp-check.js).

CODEC CHECK: mesh.rpc runs over tests/interop/rpc_tcp_adapter.py (Noise IK +
secret-stream on a TCP connection), not over HyperDHT + UDX.

  python scripts/rpc_tcp_peer.py serve SEEDHEX          print {"port", "publicKey"}, serve until killed
  python scripts/rpc_tcp_peer.py call PORT SERVERPKHEX  call a Node server, print one JSON line of results
  python scripts/rpc_tcp_peer.py serve SEEDHEX CAPHEX   the same server with a capability
  python scripts/rpc_tcp_peer.py capcall PORT SERVERPKHEX CAPHEX   echo with the right and a wrong capability
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mesh import crypto  # noqa: E402
from mesh.rpc import RpcError, RpcPeer, RpcServer  # noqa: E402
from mesh.rpc.session import session_for  # noqa: E402
from tests.interop.rpc_cases import case_server  # noqa: E402
from tests.interop.rpc_tcp_adapter import tcp_connect, tcp_serve  # noqa: E402


def out(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def python_server(capability: bytes | None = None) -> RpcServer:
    return case_server(error_code="E_NOPE", slow_s=1.5, capability=capability)


async def serve(seed_hex: str, cap_hex: str | None = None) -> None:
    kp = crypto.keypair(bytes.fromhex(seed_hex))
    server = python_server(bytes.fromhex(cap_hex) if cap_hex else None)
    tcp = await tcp_serve(kp, server.attach)
    out({"port": tcp.sockets[0].getsockname()[1], "publicKey": kp.public_key.hex()})
    async with tcp:
        await tcp.serve_forever()


async def call(port: str, server_pk_hex: str) -> None:
    conn = await tcp_connect(int(port), bytes.fromhex(server_pk_hex), crypto.keypair())
    peer = RpcPeer(conn)
    res: dict = {}
    res["echo"] = (await peer.request("echo", b"hello from python", encoding="raw", timeout=5)).decode()
    res["empty"] = repr(await peer.request("echo", b"", encoding="raw", timeout=5))
    res["jecho"] = await peer.request("jecho", {"a": [1, 2]}, encoding="json", timeout=5)
    m = await peer.request("mecho", {"n": 42, "bin": b"\x01\x02"}, encoding="msgpack", timeout=5)
    res["mecho"] = {"echo": {"n": m["echo"]["n"], "bin": m["echo"]["bin"].hex()}, "from": m["from"]}
    for name, method, timeout in [("unknown", "nope", 5), ("fail", "fail", 5), ("timeout", "slow", 0.3)]:
        try:
            await peer.request(method, b"x", encoding="raw", timeout=timeout)
            res[name] = "resolved?!"
        except RpcError as e:
            res[name] = {"code": e.code, "message": e.message, "wire_code": getattr(e, "wire_code", None),
                         "cause_code": getattr(e, "cause_code", None)}
    peer.event("note", b"event from python", encoding="raw")
    res["events"] = await peer.request("events", None, encoding="json", timeout=5)
    # 50 concurrent requests leave as protomux batches; Node answers batches with batches
    burst = await asyncio.gather(*(peer.request("echo", b"%d" % i, encoding="raw", timeout=10) for i in range(50)))
    res["burst"] = burst == [b"%d" % i for i in range(50)]
    res["mux"] = dict(session_for(conn).mux.counters)
    big = os.urandom(1_000_000)
    res["big"] = (await peer.request("echo", big, encoding="raw", timeout=10)) == big
    conn.destroy()
    out(res)


async def capcall(port: str, server_pk_hex: str, cap_hex: str) -> None:
    res: dict = {}
    for name, cap in (("right", bytes.fromhex(cap_hex)), ("wrong", bytes(32))):
        conn = await tcp_connect(int(port), bytes.fromhex(server_pk_hex), crypto.keypair())
        peer = RpcPeer(conn, capability=cap)
        try:
            res[name] = (await peer.request("echo", b"cap", encoding="raw", timeout=5)).decode()
        except RpcError as e:
            res[name] = {"code": e.code, "message": e.message}
        conn.destroy()
    out(res)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        asyncio.run(serve(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
    elif sys.argv[1] == "capcall":
        asyncio.run(capcall(sys.argv[2], sys.argv[3], sys.argv[4]))
    else:
        asyncio.run(call(sys.argv[2], sys.argv[3]))
