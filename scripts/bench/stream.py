"""Benchmark: one UDX stream on loopback, Python (mesh.udx) vs udx-native (Node),
each peer in its own process. Prints throughput (MB/s) of a bulk transfer and
the median round-trip time of 1 KB messages, for Python-Python, Node-Node,
Python->Node and Node->Python, with ratios against Node-Node. "py" peers read
their socket in batches (mesh.net.UDPNetwork); "pyaio" peers use asyncio's
datagram transport (mesh.net.AsyncioUDPNetwork), one datagram per loop iteration.

The second table does the same over full HyperDHT connections (DHT.connect /
createServer on a Node hyperdht testnet: Noise IK, UDX, secret-stream), one
process per peer: scripts/bench/conn_peer.py and
tests/interop/node/stream-conn-bench.js. Throughput is measured by the receiver
(first byte to the last of --mb MB, sent as 64 KB messages); RTT is the median
of 1 KB message round trips.

--conn-net asyncio runs the Python connection peers on asyncio's datagram
transport with default buffers (how they were before batched reads).

Usage: PYTHONPATH=. python scripts/bench/stream.py [--mb 20] [--pings 500] [--only udx|conn] [--conn-net asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
NODE_PEER = ROOT / "tests" / "interop" / "node" / "udx-peer.js"
PY_PEER = ROOT / "scripts" / "bench" / "stream_peer.py"
NODE_CONN = ROOT / "tests" / "interop" / "node" / "stream-conn-bench.js"
PY_CONN = ROOT / "scripts" / "bench" / "conn_peer.py"


async def spawn(kind: str):
    if kind == "node":
        argv = ["node", str(NODE_PEER)]
    elif kind == "pyaio":  # on asyncio's datagram transport (mesh.net.AsyncioUDPNetwork)
        argv = [sys.executable, str(PY_PEER), "asyncio"]
    else:  # on mesh.net.UDPNetwork
        argv = [sys.executable, str(PY_PEER)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env, cwd=str(ROOT), limit=1 << 20)
    return p


async def line(p, key=None, timeout=180.0):
    while True:
        raw = await asyncio.wait_for(p.stdout.readline(), timeout)
        if not raw:
            raise RuntimeError("peer exited")
        msg = json.loads(raw)
        if key is None or key in msg:
            return msg


def tell(p, obj):
    p.stdin.write((json.dumps(obj) + "\n").encode())


async def run_pair(a_kind, b_kind, a_cmd, b_cmd, result_from, key):
    a, b = await spawn(a_kind), await spawn(b_kind)
    try:
        ha, hb = await line(a), await line(b)
        tell(a, {"remoteId": hb["id"], "port": hb["port"], **a_cmd})
        tell(b, {"remoteId": ha["id"], "port": ha["port"], **b_cmd})
        res = await line(a if result_from == "a" else b, key)
        await asyncio.gather(line(a, "done"), line(b, "done"))
        return res
    finally:
        for p in (a, b):
            if p.returncode is None:
                p.kill()
            await p.wait()


async def throughput(src, dst, nbytes):
    res = await run_pair(src, dst, {"mode": "source", "bytes": nbytes}, {"mode": "sink"}, "b", "seconds")
    assert res["bytes"] == nbytes, res
    return nbytes / res["seconds"] / 1e6


async def rtt(client, server, count):
    res = await run_pair(client, server, {"mode": "ping", "count": count, "size": 1024}, {"mode": "echo"}, "a", "rttMs")
    return res["medianMs"]


CONN_NET = "batch"


async def spawn_conn(kind: str, bootstrap: str):
    argv = ["node", str(NODE_CONN)] if kind == "node" else [sys.executable, str(PY_CONN), "--net", CONN_NET]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return await asyncio.create_subprocess_exec(*argv, "--bootstrap", bootstrap, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, env=env, cwd=str(ROOT))


async def conn_pair(client: str, server: str, bootstrap: str, client_cmd: dict, server_cmd: dict, result_from: str, key: str):
    """Client `client` dials server `server` by key; returns the first line holding `key`."""
    c, s = await spawn_conn(client, bootstrap), await spawn_conn(server, bootstrap)
    try:
        hs = await line(s, "publicKey", 60)
        await line(c, "publicKey", 60)
        tell(s, {"connect": None, **server_cmd})
        tell(c, {"connect": hs["publicKey"], **client_cmd})
        return await line(c if result_from == "client" else s, key)
    finally:
        for p in (c, s):
            if p.returncode is None:
                p.kill()
            await p.wait()


async def conn_rows(args, nbytes: int) -> list:
    from tests.interop.node_swarm import NodeTestnet

    tn = await NodeTestnet.start(3)
    boot = ",".join(f"{h}:{p}" for h, p in tn.bootstrap)
    rows = []
    try:
        for src, dst in (("node", "node"), ("py", "py"), ("py", "node"), ("node", "py")):
            # the sender dials: a stream's first direction is the one measured
            res = await conn_pair(src, dst, boot, {"mode": "source", "bytes": nbytes},
                                  {"mode": "sink", "bytes": nbytes}, "server", "seconds")
            ping = await conn_pair(src, dst, boot, {"mode": "ping", "count": args.pings, "size": 1024},
                                   {"mode": "echo"}, "client", "medianMs")
            rows.append((f"{src}->{dst}", res["bytes"] / res["seconds"] / 1e6, ping["medianMs"]))
    finally:
        await tn.close()
    return rows


def table(title: str, rows: list) -> None:
    base_mbps, base_ms = rows[0][1], rows[0][2]
    print(title)
    print(f"{'pair':<12} {'MB/s':>8} {'x node':>7} {'RTT ms':>8} {'x node':>7}")
    for name, mbps, ms in rows:
        print(f"{name:<12} {mbps:8.1f} {mbps / base_mbps:7.2f} {ms:8.3f} {ms / base_ms:7.2f}")


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=20)
    ap.add_argument("--pings", type=int, default=500)
    ap.add_argument("--only", choices=("udx", "conn"))
    ap.add_argument("--conn-net", choices=("batch", "asyncio"), default="batch")
    args = ap.parse_args()
    global CONN_NET
    CONN_NET = args.conn_net
    nbytes = int(args.mb * 1e6)
    if args.only != "udx":
        rows = await conn_rows(args, nbytes)
        table(f"full connections (DHT connect, secret-stream over UDX) on 127.0.0.1, {args.mb:g} MB bulk, "
              f"{args.pings} x 1 KB round trips", rows)
        if args.only == "conn":
            return
    pairs = [("node", "node"), ("py", "py"), ("py", "node"), ("node", "py"), ("pyaio", "pyaio")]
    rows = []
    for src, dst in pairs:
        mbps = await throughput(src, dst, nbytes)
        ms = await rtt(src, dst, args.pings)
        rows.append((f"{src}->{dst}", mbps, ms))
    table(f"one UDX stream on 127.0.0.1, {args.mb:g} MB bulk, {args.pings} x 1 KB round trips", rows)


if __name__ == "__main__":
    asyncio.run(main())
