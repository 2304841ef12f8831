"""CRUD template (book worker) throughput beside raw SQLite doing the same writes.

    PYTHONPATH=. python scripts/bench/thing.py [--n 1000] [--inflight 16]

Operations: create (a valid book), get (by id), update (with its version), list
(a filtered, ordered page of 20). Each is run --n times, through:

  raw          sqlite3 in this thread, same file settings (WAL, synchronous=NORMAL),
               one autocommit statement per operation, no validation: the floor
  service      ThingService in-process: request checks, schema, BEGIN IMMEDIATE
               transaction, the store's own thread
  rpc-msgpack  the book worker behind mesh.rpc (RpcServer/RpcPeer over the
               in-memory pipe), msgpack payloads, 1 and --inflight callers
  rpc-json     the same with JSON-text payloads (Node hp-svc-facs-net callers)

Prints ops/s and the ratio to raw. There is no Node peer for this one: Node 20
has no built-in SQLite, and the Node template worker is not in this repository.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import sqlite3
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mesh.rpc import RpcPeer, RpcServer  # noqa: E402
from mesh.rpc.pipe import pipe  # noqa: E402
from workers.base import Mesh  # noqa: E402
from workers.book import BookConfig, BookWorker  # noqa: E402

OPS = ("create", "get", "update", "list")


def isbn13(i: int) -> str:
    twelve = f"978{i:09d}"
    return twelve + str((10 - sum(int(c) * (3 if k % 2 else 1) for k, c in enumerate(twelve)) % 10) % 10)


def book(i: int) -> dict:
    return {"title": f"Book {i}", "author": f"Author {i % 50}", "isbn": isbn13(i), "year": 1900 + i % 120}


def raw_run(path: str, n: int) -> dict[str, float]:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE books (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE, version INTEGER,"
               " created_at INTEGER, updated_at INTEGER, data TEXT)")
    db.execute("CREATE INDEX books_author ON books(json_extract(data, '$.author'))")
    out = {}
    t = time.perf_counter()
    for i in range(n):
        db.execute("INSERT INTO books (id, version, created_at, updated_at, data) VALUES (?, 1, 0, 0, ?)",
                   (f"b{i}", json.dumps(book(i))))
    out["create"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(n):
        json.loads(db.execute("SELECT data FROM books WHERE id = ?", (f"b{i}",)).fetchone()[0])
    out["get"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(n):
        db.execute("UPDATE books SET data = ?, version = version + 1 WHERE id = ? AND version = 1",
                   (json.dumps({**book(i), "year": 2000}), f"b{i}"))
    out["update"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(n):
        rows = db.execute("SELECT data FROM books WHERE json_extract(data, '$.author') = ? ORDER BY seq LIMIT 20",
                          (f"Author {i % 50}",)).fetchall()
        [json.loads(r[0]) for r in rows]
    out["list"] = n / (time.perf_counter() - t)
    db.close()
    return out


async def timed(call, requests: list, inflight: int) -> float:
    it = iter(requests)

    async def one_caller():
        for req in it:
            await call(req)

    t = time.perf_counter()
    await asyncio.gather(*(one_caller() for _ in range(inflight)))
    return len(requests) / (time.perf_counter() - t)


async def crud_run(call, n: int, inflight: int, offset: int) -> dict[str, float]:
    """create/get/update/list n times through `call(method, request)`."""
    made: list[dict] = []

    async def create(req):
        made.append(await call("create", req))

    out = {"create": await timed(create, [book(offset + i) for i in range(n)], inflight)}
    out["get"] = await timed(lambda r: call("get", r), [{"id": b["id"]} for b in made], inflight)
    out["update"] = await timed(lambda r: call("update", r),
                                [{"id": b["id"], "version": b["version"], "year": 2000} for b in made], inflight)
    out["list"] = await timed(lambda r: call("list", r),
                              [{"where": {"author": f"Author {i % 50}"}, "limit": 20} for i in range(n)], inflight)
    return out


async def main_async(n: int, inflight: int) -> None:
    tmp = tempfile.mkdtemp(prefix="thing-bench-")
    results = {"raw": raw_run(f"{tmp}/raw.db", n)}
    worker = BookWorker(BookConfig(db_path=f"{tmp}/books.db"))
    server = RpcServer()
    await worker.start(Mesh(rpc=server))
    client, server_conn = pipe()
    server.attach(server_conn)
    peer = RpcPeer(client)
    try:
        svc = worker.service
        results["service"] = await crud_run(lambda m, r: getattr(svc, m)(r), n, 1, 0)
        for k, level in enumerate((1, inflight)):
            for j, enc in enumerate(("msgpack", "json")):
                offset = (1 + 2 * k + j) * n
                results[f"rpc-{enc}@{level}"] = await crud_run(
                    lambda m, r, e=enc: peer.request(m, r, encoding=e, timeout=30), n, level, offset)
    finally:
        peer.close()
        client.destroy()
        await worker.stop()
    print(f"n={n} per operation; ops/s (ratio to raw sqlite3)")
    print(f"{'path':<18}" + "".join(f"{op:>20}" for op in OPS))
    for name, row in results.items():
        cells = "".join(f"{row[op]:>11.0f} ({row[op] / results['raw'][op]:4.2f}x)" for op in OPS)
        print(f"{name:<18}{cells}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--inflight", type=int, default=16)
    args = ap.parse_args()
    asyncio.run(main_async(args.n, args.inflight))


if __name__ == "__main__":
    main()
