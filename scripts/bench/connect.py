"""Connection benchmark: set-up time, RTT and bulk throughput over full HyperDHT
connections (FIND_PEER + PEER_HANDSHAKE through relays, Noise IK, UDX, secret-stream),
for the four pairs Python/Node client x Python/Node server, on a Node hyperdht
testnet on 127.0.0.1. Every server echoes; the client measures:

  setup   connect by public key + one 1-byte echo (median of --connects)
  rtt     64-byte echo round trip (median and p99 of --pings)
  bulk    --mb MB written and echoed back; MB/s = MB / elapsed
  join    Swarm (hyperswarm) client joins a topic the server announced: time to
          its first connection (LOOKUP + connect), median over --topics topics

Prints each pair beside Node->Node as ratios (Node/Python for times, Python/Node
for throughput: > 1 means Python is faster).

    PYTHONPATH=. .venv/bin/python scripts/bench/connect.py [--connects 10] [--pings 200] [--mb 10] [--topics 5]

Every peer runs in its own process, as the Node ones do: the Python echo server
is this script with --serve-echo (the client side runs here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import statistics
import sys
import time

from mesh import crypto
from mesh.connect import connect
from mesh.dht import DHT, DHTConfig
from mesh.server import create_server
from mesh.swarm import Swarm, SwarmConfig
from tests.interop.node_swarm import NodePeer, NodeTestnet, pattern


async def echo_server(dht: DHT, keypair) -> object:
    server = create_server(dht)

    async def echo(conn):
        async for msg in conn:
            conn.write(msg)
            await conn.drain()

    server.on_connection(echo)
    await server.listen(keypair)
    return server


async def until_echoed(conn, n: int) -> None:
    got = 0
    while got < n:
        got += len(await conn.__anext__())


async def python_client(dht: DHT, server_key: bytes, args) -> dict:
    kp = crypto.keypair()
    setup = []
    for _ in range(args.connects):
        t0 = time.perf_counter()
        conn = await connect(dht, server_key, keypair=kp)
        conn.write(b"\x01")
        await until_echoed(conn, 1)
        setup.append((time.perf_counter() - t0) * 1000)
        conn.destroy()
    conn = await connect(dht, server_key, keypair=kp)
    rtt = []
    ping = bytes(64)
    for _ in range(args.pings):
        t0 = time.perf_counter()
        conn.write(ping)
        await until_echoed(conn, len(ping))
        rtt.append((time.perf_counter() - t0) * 1000)
    n = args.mb * 1_000_000
    data = pattern(n)
    t0 = time.perf_counter()
    back = asyncio.ensure_future(until_echoed(conn, n))
    for i in range(0, n, 65536):
        if not conn.write(data[i:i + 65536]):
            await conn.drain()
    await back
    bulk = (time.perf_counter() - t0) * 1000
    conn.destroy()
    return {"setup_ms": setup, "rtt_ms": rtt, "bulk_ms": bulk, "bytes": n}


async def python_join(sw: Swarm, topics: list[bytes]) -> list[float]:
    ms = []
    for topic in topics:
        t0 = time.perf_counter()
        sw.join(topic, server=False, client=True)
        conn, _info = await asyncio.wait_for(sw.__anext__(), 60)
        ms.append((time.perf_counter() - t0) * 1000)
        await sw.leave(topic)
        conn.destroy()
        await asyncio.wait([conn.closed])
    return ms


async def join_bench(boot, node_client: NodePeer, args) -> dict:
    """Swarm join -> first connection, per client/server pair."""
    node_server = await NodePeer.start(boot, open_=True)  # a fresh key: hyperswarm listens on it
    def topics(tag: str) -> list[bytes]:
        return [crypto.hash(b"bench join %s %d" % (tag.encode(), i)) for i in range(args.topics)]

    py_server = Swarm(SwarmConfig(keypair=crypto.keypair(), bootstrap=boot))
    py_client = Swarm(SwarmConfig(keypair=crypto.keypair(), bootstrap=boot))
    py_server.on_connection(lambda conn, info: None)  # the client side measures
    out = {}
    try:
        for pair in ("node -> node", "node -> python", "python -> node", "python -> python"):
            ts = topics(pair)
            server_is_node = pair.endswith("node")
            for t in ts:
                if server_is_node:
                    await node_server.cmd("join", "flushed", topic=t.hex(), server=True, client=False)
                else:
                    await asyncio.wait_for(py_server.join(t, server=True, client=False).flushed(), 60)
            print(f"running join {pair}", file=sys.stderr)
            if pair.startswith("node"):
                res = await node_client.cmd("bench-join", "bench-join", timeout=300,
                                            topics=[t.hex() for t in ts])
                out[pair] = res["ms"]
            else:
                out[pair] = await python_join(py_client, ts)
    finally:
        await py_client.destroy()
        await py_server.destroy()
        await node_server.close()
    return out


def summary(r: dict) -> dict:
    rtt = sorted(r["rtt_ms"])
    return {
        "setup": statistics.median(r["setup_ms"]),
        "rtt": statistics.median(rtt),
        "rtt99": rtt[min(len(rtt) - 1, int(len(rtt) * 0.99))],
        "mbps": r["bytes"] / 1e6 / (r["bulk_ms"] / 1000),
    }


async def serve_echo(bootstrap: str) -> None:
    """--serve-echo: a Python echo server in its own process; prints its public key."""
    dht = DHT(DHTConfig(bootstrap=tuple((h, int(p)) for h, p in (b.split(":") for b in bootstrap.split(",")))))
    await dht.ready()
    kp = crypto.keypair()
    await echo_server(dht, kp)
    print(json.dumps({"public_key": kp.public_key.hex()}), flush=True)
    await asyncio.Event().wait()


async def spawn_echo_server(boot) -> tuple[asyncio.subprocess.Process, bytes]:
    root = pathlib.Path(__file__).resolve().parents[2]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve-echo", ",".join(f"{h}:{p}" for h, p in boot),
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(root)})
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    return proc, bytes.fromhex(json.loads(line)["public_key"])


async def main(args) -> None:
    tn = await NodeTestnet.start(3)
    boot = tuple(tn.bootstrap)
    py_client_dht = DHT(DHTConfig(bootstrap=boot))
    await py_client_dht.ready()
    py_server, py_key = await spawn_echo_server(boot)
    # --open: Node peers know they are reachable, as our Python nodes detect on loopback,
    # so every pair takes the same direct path.
    node_server = await NodePeer.start(boot, open_=True)
    node_client = await NodePeer.start(boot, open_=True)
    await node_server.cmd("listen", "listening")
    await node_server.cmd("echo", "echoing")
    bench = {"connects": args.connects, "pings": args.pings, "size": 64, "bytes": args.mb * 1_000_000}
    results = {}
    try:
        for name, server_key in (("node -> node", node_server.public_key),
                                 ("node -> python", py_key)):
            print(f"running {name}", file=sys.stderr)
            res = await node_client.cmd("bench", "bench", timeout=300, public_key=server_key.hex(), **bench)
            results[name] = res
        for name, server_key in (("python -> node", node_server.public_key),
                                 ("python -> python", py_key)):
            print(f"running {name}", file=sys.stderr)
            results[name] = await asyncio.wait_for(python_client(py_client_dht, server_key, args), 300)
        joins = await join_bench(boot, node_client, args)
    finally:
        await node_client.close()
        await node_server.close()
        py_server.kill()
        await py_server.wait()
        await py_client_dht.destroy()
        await tn.close()
    base = summary(results["node -> node"])
    base_join = statistics.median(joins["node -> node"])
    print(f"{'client -> server':18} {'setup ms':>9} {'x node':>7} {'rtt ms':>7} {'x node':>7} "
          f"{'rtt p99':>8} {'MB/s':>7} {'x node':>7} {'join ms':>8} {'x node':>7}")
    for name, r in results.items():
        s = summary(r)
        join = statistics.median(joins[name])
        print(f"{name:18} {s['setup']:9.2f} {base['setup'] / s['setup']:7.2f} {s['rtt']:7.3f} "
              f"{base['rtt'] / s['rtt']:7.2f} {s['rtt99']:8.3f} {s['mbps']:7.1f} "
              f"{s['mbps'] / base['mbps']:7.2f} {join:8.2f} {base_join / join:7.2f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--connects", type=int, default=10)
    p.add_argument("--pings", type=int, default=200)
    p.add_argument("--mb", type=int, default=10)
    p.add_argument("--topics", type=int, default=5)
    p.add_argument("--serve-echo", help=argparse.SUPPRESS)
    a = p.parse_args(sys.argv[1:])
    asyncio.run(serve_echo(a.serve_echo) if a.serve_echo else main(a))
