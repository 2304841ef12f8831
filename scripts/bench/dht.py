"""DHT benchmark: a Python testnet and a Node hyperdht testnet of the same size, side by side.

    PYTHONPATH=. .venv/bin/python scripts/bench/dht.py --sizes 50,200,500

For each size N both networks run at the same time on 127.0.0.1: N persistent
nodes each, then `--ops` announces (fresh topics, from random nodes) and `--ops`
lookups of those topics (from other random nodes), alternating Python and Node
op by op so that other load on the machine hits both alike. Reported:
announce and lookup time (median, p95), requests per lookup, memory per node
(process RSS growth / N), and Python / Node ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import pathlib
import random
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from mesh import crypto  # noqa: E402
from mesh.dht import testnet  # noqa: E402
from tests.interop.node_dht import NodeDHT  # noqa: E402


def rss_bytes(pid: int | None = None) -> int:
    with open(f"/proc/{pid or 'self'}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]


class PySide:
    """The Python testnet, driven in this process."""

    def __init__(self, tn):
        self.tn = tn

    async def announce(self, rng, topic: bytes) -> float:
        node = rng.choice(self.tn.nodes)
        t = time.perf_counter()
        await node.announce(topic, crypto.keypair(crypto.hash(topic)), refresh=False)
        return (time.perf_counter() - t) * 1000

    async def lookup(self, rng, topic: bytes) -> tuple[float, int]:
        run = rng.choice(self.tn.nodes).lookup(topic)
        t = time.perf_counter()
        found = [p async for r in run for p in r.peers]
        ms = (time.perf_counter() - t) * 1000
        assert found, "lookup found nothing"
        return ms, run.requests


class NodeSide:
    """The Node testnet, driven over JSON lines; times are measured inside Node."""

    def __init__(self, node: NodeDHT, n: int):
        self.node = node
        self.n = n

    async def announce(self, rng, topic: bytes) -> float:
        r = await self.node.cmd("announce", node=rng.randrange(self.n), topic=topic.hex(),
                                seed=crypto.hash(topic).hex())
        return r["ms"]

    async def lookup(self, rng, topic: bytes) -> tuple[float, int]:
        r = await self.node.cmd("lookup", node=rng.randrange(self.n), topic=topic.hex())
        assert r["peers"], "lookup found nothing"
        return r["ms"], r["requests"]


async def measure(sides: dict, n: int, ops: int, rng: random.Random) -> dict:
    """Interleave the two sides op by op, so that load from elsewhere on the
    machine hits both alike. The first 5 ops of each kind are warm-up."""
    res = {k: dict(ann=[], look=[], reqs=[]) for k in sides}
    topics = [crypto.hash(b"bench %d %d" % (n, i)) for i in range(ops + 5)]
    for i, topic in enumerate(topics):
        for name, side in sides.items():
            ms = await side.announce(rng, crypto.hash(topic + name.encode()))
            if i >= 5:
                res[name]["ann"].append(ms)
    for i, topic in enumerate(topics):
        for name, side in sides.items():
            ms, reqs = await side.lookup(rng, crypto.hash(topic + name.encode()))
            if i >= 5:
                res[name]["look"].append(ms)
                res[name]["reqs"].append(reqs)
    return res


async def bench_size(n: int, ops: int, rng: random.Random) -> tuple[dict, dict]:
    node = await NodeDHT.start()
    try:
        gc.collect()
        before = rss_bytes()
        t0 = time.perf_counter()
        async with testnet(n, parallel=10) as tn:
            py_boot = time.perf_counter() - t0
            gc.collect()
            py_mem = (rss_bytes() - before) / n
            js_before = (await node.cmd("memory"))["rss"]
            t0 = time.perf_counter()
            await node.cmd("testnet", size=n, timeout=600)
            js_boot = time.perf_counter() - t0
            js_mem = ((await node.cmd("memory"))["rss"] - js_before) / n
            res = await measure({"py": PySide(tn), "js": NodeSide(node, n)}, n, ops, rng)
    finally:
        await node.close()
    res["py"].update(boot_s=py_boot, mem=py_mem)
    res["js"].update(boot_s=js_boot, mem=js_mem)
    return res["py"], res["js"]


def row(n: int, py: dict, js: dict) -> list[str]:
    def cell(key, f):
        a, b = f(py[key]), f(js[key])
        return f"{a:.1f} / {b:.1f} ({a / b:.2f}x)"
    mib = 1 << 20
    return [
        str(n),
        cell("ann", statistics.median), cell("ann", p95),
        cell("look", statistics.median), cell("look", p95),
        cell("reqs", statistics.mean),
        f"{py['mem'] / mib:.2f} / {js['mem'] / mib:.2f} ({py['mem'] / js['mem']:.2f}x)",
        f"{py['boot_s']:.1f} / {js['boot_s']:.1f}",
    ]


HEADER = ["N", "announce median ms", "announce p95 ms", "lookup median ms", "lookup p95 ms",
          "requests/lookup", "MiB per node", "testnet start s"]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="50,200,500", help="comma-separated testnet sizes (default 50,200,500)")
    ap.add_argument("--ops", type=int, default=30, help="announces and lookups per size (default 30)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    rows = []
    for n in [int(s) for s in args.sizes.split(",") if s]:
        py, js = await bench_size(n, args.ops, rng)
        rows.append(row(n, py, js))
        print(f"N={n} done", file=sys.stderr, flush=True)
    print("Each cell: Python / Node (ratio Python/Node)\n")
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    asyncio.run(main())
