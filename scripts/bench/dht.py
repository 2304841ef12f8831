"""DHT benchmark: a Python testnet and a Node hyperdht testnet of the same size, side by side.

    PYTHONPATH=. /work/main/.venv/bin/python scripts/bench/dht.py --sizes 50,200,500

For each size N both networks run on 127.0.0.1 (one after the other, same
machine): N persistent nodes, then `--ops` announces (fresh topics, from random
nodes) and `--ops` lookups of those topics (from other random nodes). Reported:
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


async def bench_python(n: int, ops: int, rng: random.Random) -> dict:
    gc.collect()
    before = rss_bytes()
    t0 = time.perf_counter()
    async with testnet(n, parallel=10) as tn:
        boot_s = time.perf_counter() - t0
        gc.collect()
        mem = (rss_bytes() - before) / n
        topics = [crypto.hash(b"py bench %d %d" % (n, i)) for i in range(ops)]
        ann, look, reqs = [], [], []
        for i, topic in enumerate(topics):
            node = rng.choice(tn.nodes)
            t = time.perf_counter()
            await node.announce(topic, crypto.keypair(crypto.hash(topic)), refresh=False)
            ann.append((time.perf_counter() - t) * 1000)
        for topic in topics:
            node = rng.choice(tn.nodes)
            run = node.lookup(topic)
            t = time.perf_counter()
            found = [p async for r in run for p in r.peers]
            look.append((time.perf_counter() - t) * 1000)
            reqs.append(run.requests)
            assert found, "lookup found nothing"
    return dict(boot_s=boot_s, mem=mem, ann=ann, look=look, reqs=reqs)


async def bench_node(n: int, ops: int, rng: random.Random) -> dict:
    node = await NodeDHT.start()
    try:
        before = (await node.cmd("memory"))["rss"]
        t0 = time.perf_counter()
        await node.cmd("testnet", size=n, timeout=600)
        boot_s = time.perf_counter() - t0
        mem = ((await node.cmd("memory"))["rss"] - before) / n
        topics = [crypto.hash(b"node bench %d %d" % (n, i)) for i in range(ops)]
        ann, look, reqs = [], [], []
        for topic in topics:
            r = await node.cmd("announce", node=rng.randrange(n), topic=topic.hex(), seed=crypto.hash(topic).hex())
            ann.append(r["ms"])
        for topic in topics:
            r = await node.cmd("lookup", node=rng.randrange(n), topic=topic.hex())
            assert r["peers"], "lookup found nothing"
            look.append(r["ms"])
            reqs.append(r["requests"])
        return dict(boot_s=boot_s, mem=mem, ann=ann, look=look, reqs=reqs)
    finally:
        await node.close()


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
        py = await bench_python(n, args.ops, rng)
        js = await bench_node(n, args.ops, rng)
        rows.append(row(n, py, js))
        print(f"N={n} done", file=sys.stderr, flush=True)
    print("Each cell: Python / Node (ratio Python/Node)\n")
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    asyncio.run(main())
