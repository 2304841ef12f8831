"""RPC benchmark: small-request throughput and latency, Python mesh.rpc beside Node @hyperswarm/rpc.

  PYTHONPATH=. .venv/bin/python scripts/bench/rpc.py [--n 3000] [--inflight 1,64] [--size 100]

Echo of --size-byte raw values (optionalBuffer, as Node callers send), measured
at each in-flight level: requests/s, p50 and p99 latency. Pairs:

  node-node/dht     @hyperswarm/rpc client and server (two processes) over a real hyperdht testnet
  py-py/pipe        mesh.rpc client and server in one process over mesh.rpc.pipe (no transport cost)
  py-py/tcp         mesh.rpc client here, server in a second process, over the TCP stand-in
                    (Noise IK + secret-stream on TCP: tests/interop/rpc_tcp_adapter.py)
  py-node/dht       mesh.rpc client -> Node rpc-server.js over a real DHT connection (mesh.connect)
  py-py/dht         mesh.rpc client -> mesh.rpc server (second process) over a real DHT connection
                    (these two run only where mesh.connect exists)

Ratios are printed against node-node/dht measured in the same run.
--py-net asyncio puts the Python DHT peers (and so UDX) on asyncio's datagram
transport with default socket buffers: the socket before batched reads, for the
before/after in docs/benchmarks/rpc.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mesh import crypto, eventloop  # noqa: E402
from mesh.rpc import RpcPeer, RpcServer  # noqa: E402
from mesh.rpc.pipe import pipe  # noqa: E402

NODE = ROOT / "tests" / "interop" / "node"


def pct(sorted_lat: list[float], p: float) -> float:
    return sorted_lat[min(len(sorted_lat) - 1, int(len(sorted_lat) * p / 100))]


async def level(call, n: int, inflight: int) -> dict:
    lat: list[float] = []
    todo = n

    async def worker():
        nonlocal todo
        while todo > 0:
            todo -= 1
            t = time.perf_counter()
            await call()
            lat.append((time.perf_counter() - t) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    secs = time.perf_counter() - t0
    lat.sort()
    return {"inflight": inflight, "n": n, "rps": n / secs, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99)}


async def measure(call, n: int, levels: list[int]) -> list[dict]:
    await call()
    await level(call, min(500, n), 8)  # warm-up
    return [await level(call, n, k) for k in levels]


def echo_server() -> RpcServer:
    server = RpcServer()
    server.respond("echo", lambda b: b, encoding="raw")
    return server


# ---------------------------------------------------------------- pairs

async def py_py_pipe(n, levels, value):
    a, b = pipe()
    echo_server().attach(b)
    peer = RpcPeer(a)
    try:
        return await measure(lambda: peer.request("echo", value, encoding="raw"), n, levels)
    finally:
        a.destroy()


async def py_py_tcp(n, levels, value):
    from tests.interop.rpc_tcp_adapter import tcp_connect

    proc = await asyncio.create_subprocess_exec(sys.executable, __file__, "--serve-tcp", stdout=subprocess.PIPE,
                                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        info = json.loads(await proc.stdout.readline())
        conn = await tcp_connect(info["port"], bytes.fromhex(info["publicKey"]), crypto.keypair())
        peer = RpcPeer(conn)
        res = await measure(lambda: peer.request("echo", value, encoding="raw"), n, levels)
        conn.destroy()
        return res
    finally:
        proc.terminate()
        await proc.wait()


async def node_node_dht(n, levels, value):
    server = await asyncio.create_subprocess_exec("node", str(NODE / "rpc-server.js"), "--testnet", "3",
                                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        info = json.loads(await server.stdout.readline())
        client = await asyncio.create_subprocess_exec(
            "node", str(NODE / "rpc-bench.js"), "--bootstrap", ",".join(info["bootstrap"]), "--key",
            info["publicKey"], "--n", str(n), "--inflight", ",".join(map(str, levels)), "--size", str(len(value)),
            stdout=subprocess.PIPE)
        out, _ = await asyncio.wait_for(client.communicate(), 300)
        return [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    finally:
        server.stdin.close()
        await asyncio.wait_for(server.wait(), 20)


def dht_pairs_available() -> bool:
    try:
        import mesh.connect  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------- over real DHT connections (mesh.connect)

PY_NET = "batch"


async def python_dht(bootstrap):
    from mesh.dht import DHT, DHTConfig
    from mesh.net import UDPNetwork

    if PY_NET == "asyncio":
        sys.path.insert(0, str(ROOT / "scripts" / "bench"))
        from conn_peer import _DefaultBufferAsyncio
        network = _DefaultBufferAsyncio()
    else:
        network = UDPNetwork()
    dht = DHT(DHTConfig(bootstrap=tuple(bootstrap), host="127.0.0.1", port=0, ephemeral=True),
              network=network)
    await dht.ready()
    return dht


async def dht_connect(dht, public_key, keypair):
    return await dht.connect(public_key, keypair)


async def dht_serve(dht, keypair, on_connection):
    server = dht.create_server()
    server.on_connection(on_connection)
    await server.listen(keypair)
    return server


async def node_testnet_server():
    """rpc-server.js on its own hyperdht testnet: (process, server key hex, bootstrap list)."""
    proc = await asyncio.create_subprocess_exec("node", str(NODE / "rpc-server.js"), "--testnet", "3",
                                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    info = json.loads(await proc.stdout.readline())
    bootstrap = [(h, int(p)) for h, p in (b.split(":") for b in info["bootstrap"])]
    return proc, info["publicKey"], bootstrap


async def py_node_dht(n, levels, value):
    proc, key, bootstrap = await node_testnet_server()
    try:
        dht = await python_dht(bootstrap)
        conn = await asyncio.wait_for(dht_connect(dht, bytes.fromhex(key), crypto.keypair()), 30)
        peer = RpcPeer(conn)
        res = await measure(lambda: peer.request("echo", value, encoding="raw"), n, levels)
        conn.destroy()
        await dht.destroy()
        return res
    finally:
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 20)


async def py_py_dht(n, levels, value):
    proc, _key, bootstrap = await node_testnet_server()  # the testnet only
    server = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--py-net", PY_NET, "--serve-dht", ",".join(f"{h}:{p}" for h, p in bootstrap),
        stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        info = json.loads(await server.stdout.readline())
        dht = await python_dht(bootstrap)
        conn = await asyncio.wait_for(dht_connect(dht, bytes.fromhex(info["publicKey"]), crypto.keypair()), 30)
        peer = RpcPeer(conn)
        res = await measure(lambda: peer.request("echo", value, encoding="raw"), n, levels)
        conn.destroy()
        await dht.destroy()
        return res
    finally:
        server.terminate()
        await server.wait()
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 20)


async def serve_dht(bootstrap: str) -> None:
    dht = await python_dht([(h, int(p)) for h, p in (b.split(":") for b in bootstrap.split(","))])
    kp = crypto.keypair()
    await dht_serve(dht, kp, echo_server().attach)
    print(json.dumps({"publicKey": kp.public_key.hex()}), flush=True)
    await asyncio.Event().wait()


PAIRS = {"node-node/dht": node_node_dht, "py-py/pipe": py_py_pipe, "py-py/tcp": py_py_tcp}
if dht_pairs_available():
    PAIRS.update({"py-node/dht": py_node_dht, "py-py/dht": py_py_dht})


async def serve_tcp() -> None:
    from tests.interop.rpc_tcp_adapter import tcp_serve

    kp = crypto.keypair()
    tcp = await tcp_serve(kp, echo_server().attach)
    print(json.dumps({"port": tcp.sockets[0].getsockname()[1], "publicKey": kp.public_key.hex()}), flush=True)
    async with tcp:
        await tcp.serve_forever()


async def main(args) -> None:
    levels = [int(x) for x in args.inflight.split(",")]
    value = bytes([7]) * args.size
    results = {}
    for name in args.pairs.split(","):
        results[name] = await PAIRS[name](args.n, levels, value)
    base = {r["inflight"]: r for r in results.get("node-node/dht", [])}
    print(f"echo of {args.size}-byte values, n={args.n} per level; ratios vs node-node/dht in this run")
    print(f"{'pair':16} {'inflight':>8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'req/s ratio':>11} {'p50 ratio':>9}")
    for name, rows in results.items():
        for r in rows:
            b = base.get(r["inflight"])
            rr = f"{r['rps'] / b['rps']:.2f}" if b else "-"
            pr = f"{r['p50_ms'] / b['p50_ms']:.2f}" if b else "-"
            print(f"{name:16} {r['inflight']:>8} {r['rps']:>9.0f} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f}"
                  f" {rr:>11} {pr:>9}")
    if not dht_pairs_available():
        print("py-node/dht, py-py/dht: not run (mesh.connect not available yet)")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--inflight", default="1,64")
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--pairs", default=",".join(PAIRS))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--serve-tcp", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--serve-dht", help=argparse.SUPPRESS)
    ap.add_argument("--py-net", choices=("batch", "asyncio"), default="batch")
    a = ap.parse_args()
    PY_NET = a.py_net
    eventloop.run(serve_tcp() if a.serve_tcp else serve_dht(a.serve_dht) if a.serve_dht else main(a))
