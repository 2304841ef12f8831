"""mesh.rpc against real Node @hyperswarm/rpc 3.5.0 over real HyperDHT connections.

Both directions, on a hyperdht testnet on 127.0.0.1 started by rpc-server.js:
  B. Python RpcClient (dht.connect) -> Node rpc-server.js
  A. Node rpc-client.js -> Python RpcServer on dht.create_server()

Written against the planned connection API (HELPERS.md: dht.connect /
dht.create_server), falling back to the module functions mesh.connect.connect
and mesh.server.create_server; skipped until mesh.connect exists. If the final
API differs, only `python_dht`, `connect` and `serve` below need to change.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess

import pytest

from mesh import crypto  # noqa: E402
from mesh.rpc import RpcClient, RpcError, RpcServer  # noqa: E402
from tests.interop.rpc_cases import case_server  # noqa: E402

pytestmark = pytest.mark.interop


# ---------------------------------------------------------------- the connection layer (planned API)

async def python_dht(bootstrap):
    from mesh.dht import DHT, DHTConfig
    from mesh.net import UDPNetwork

    dht = DHT(DHTConfig(bootstrap=tuple(bootstrap), host="127.0.0.1", port=0, ephemeral=True),
              network=UDPNetwork())
    await dht.ready()
    return dht


async def connect(dht, public_key, keypair):
    return await dht.connect(public_key, keypair)


async def serve(dht, keypair, on_connection):
    server = dht.create_server()
    server.on_connection(on_connection)
    await server.listen(keypair)
    return server


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def node_server(node_harness):
    """rpc-server.js on its own hyperdht testnet: (public key, bootstrap list)."""
    proc = subprocess.Popen(["node", str(node_harness / "rpc-server.js"), "--testnet", "3"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        bootstrap = [(h, int(p)) for h, p in (b.split(":") for b in info["bootstrap"])]
        yield bytes.fromhex(info["publicKey"]), bootstrap
    finally:
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def python_methods() -> RpcServer:
    return case_server(error_code="E_PY", slow_s=2)


# ---------------------------------------------------------------- B: Python client -> Node server

async def test_python_client_calls_node_server(node_server):
    key, bootstrap = node_server
    dht = await python_dht(bootstrap)
    client_keypair = crypto.keypair()
    client = RpcClient(lambda pk: connect(dht, pk, client_keypair))
    try:
        hello = b"hello from python"
        assert await client.request(key, "echo", hello, encoding="raw", timeout=15) == hello
        assert await client.request(key, "echo", b"", encoding="raw", timeout=15) is None
        assert await client.request(key, "jecho", {"a": [1, 2]}, encoding="json", timeout=15) == {
            "echo": {"a": [1, 2]}, "from": "node"}
        m = await client.request(key, "mecho", {"n": 42, "bin": b"\x01\x02"}, timeout=15)
        assert m == {"echo": {"n": 42, "bin": b"\x01\x02"}, "from": "node"}
        big = os.urandom(1024 * 1024)
        assert await client.request(key, "echo", big, encoding="raw", timeout=30) == big
        with pytest.raises(RpcError) as ei:
            await client.request(key, "nope", b"x", encoding="raw", timeout=15)
        assert ei.value.code == "UNKNOWN_METHOD"
        with pytest.raises(RpcError) as ei:
            await client.request(key, "fail", b"x", encoding="raw", timeout=15)
        assert (ei.value.code, ei.value.message, ei.value.wire_code) == ("E_NODE", "node says no", "REQUEST_ERROR")
        with pytest.raises(RpcError) as ei:
            await client.request(key, "slow", b"x", encoding="raw", timeout=0.3)
        assert ei.value.code == "TIMEOUT_EXCEEDED"
        await client.event(key, "note", b"event from python", encoding="raw")
        events = await client.request(key, "events", None, encoding="json", timeout=15)
        assert "event from python" in events
        assert client.size == 1
    finally:
        await client.close()
        await dht.destroy()


# ---------------------------------------------------------------- A: Node client -> Python server

async def test_node_client_calls_python_server(node_server, node_harness):
    _key, bootstrap = node_server
    dht = await python_dht(bootstrap)
    keypair = crypto.keypair()
    methods = python_methods()
    server = await serve(dht, keypair, methods.attach)
    try:
        proc = await asyncio.create_subprocess_exec(
            "node", str(node_harness / "rpc-client.js"),
            "--bootstrap", ",".join(f"{h}:{p}" for h, p in bootstrap), "--key", keypair.public_key.hex(),
            stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(), 90)
        lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
        cases = {c["case"]: c for c in lines if "case" in c}
        failed = {name: c["detail"] for name, c in cases.items() if not c["ok"]}
        assert not failed, failed
        assert {"echo", "empty", "json", "json-bad", "msgpack", "big", "unknown", "fail", "timeout", "event",
                "pooled"} <= set(cases)
        assert cases["fail"]["detail"]["cause"] == {"message": "python says no", "code": "E_PY"}
        assert lines[-1] == {"done": True, "failed": 0}
    finally:
        await server.close()
        await dht.destroy()
