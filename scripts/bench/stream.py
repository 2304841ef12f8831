"""Benchmark: one UDX stream on loopback, Python (mesh.udx) vs udx-native (Node),
each peer in its own process. Prints throughput (MB/s) of a bulk transfer and
the median round-trip time of 1 KB messages, for Python-Python, Node-Node,
Python->Node and Node->Python, with ratios against Node-Node. "py" peers read
their socket in batches (mesh.udx.fastnet); "pyaio" peers use asyncio's
datagram transport (mesh.net.UDPNetwork), one datagram per loop iteration.

Usage: PYTHONPATH=. python scripts/bench/stream.py [--mb 20] [--pings 500]
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


async def spawn(kind: str):
    if kind == "node":
        argv = ["node", str(NODE_PEER)]
    elif kind == "pyaio":  # on asyncio's datagram transport (mesh.net.UDPNetwork)
        argv = [sys.executable, str(PY_PEER), "asyncio"]
    else:  # on mesh.udx.fastnet.BatchUDPNetwork
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


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=20)
    ap.add_argument("--pings", type=int, default=500)
    args = ap.parse_args()
    nbytes = int(args.mb * 1e6)
    pairs = [("node", "node"), ("py", "py"), ("py", "node"), ("node", "py"), ("pyaio", "pyaio")]
    rows = []
    for src, dst in pairs:
        mbps = await throughput(src, dst, nbytes)
        ms = await rtt(src, dst, args.pings)
        rows.append((f"{src}->{dst}", mbps, ms))
    base_mbps, base_ms = rows[0][1], rows[0][2]
    print(f"one UDX stream on 127.0.0.1, {args.mb:g} MB bulk, {args.pings} x 1 KB round trips")
    print(f"{'pair':<12} {'MB/s':>8} {'x node':>7} {'RTT ms':>8} {'x node':>7}")
    for name, mbps, ms in rows:
        print(f"{name:<12} {mbps:8.1f} {mbps / base_mbps:7.2f} {ms:8.3f} {ms / base_ms:7.2f}")


if __name__ == "__main__":
    asyncio.run(main())
