"""A Node @hyperswarm/rpc client (tests/interop/node/book-client.js, real hyperdht)
finds the Python books worker by its topic on a Node hyperdht testnet and creates
and lists books with hp-svc-facs-net style JSON payloads.

Needs the connection layer (mesh.swarm) and the Node harness; skipped without
mesh.swarm."""

from __future__ import annotations

import asyncio
import json

import pytest

from mesh import crypto  # noqa: E402
from mesh.rpc import RpcServer  # noqa: E402
from mesh.swarm import Swarm, SwarmConfig  # noqa: E402
from mesh.topics import topic_key  # noqa: E402
from workers.base import Mesh  # noqa: E402
from workers.book import BookConfig, BookWorker  # noqa: E402

pytestmark = [pytest.mark.interop, pytest.mark.slow]

NAMESPACE = "interop-books"


@pytest.fixture
async def node_testnet(node_harness):
    from tests.interop import node_swarm

    tn = await node_swarm.NodeTestnet.start(3)
    yield tn
    await tn.close()


@pytest.fixture
async def books_worker(node_testnet, tmp_path):
    bootstrap = tuple(node_testnet.bootstrap)
    swarm = Swarm(SwarmConfig(keypair=crypto.keypair(bytes([7]) * 32), bootstrap=bootstrap))
    await asyncio.wait_for(swarm.ready(), 30)
    worker = BookWorker(BookConfig(namespace=NAMESPACE, bootstrap=bootstrap, db_path=str(tmp_path / "books.db")))
    try:
        await asyncio.wait_for(worker.start(Mesh(swarm=swarm, rpc=RpcServer())), 30)
        yield worker, swarm
    finally:
        await worker.stop(drain_timeout=5)
        await swarm.destroy()


async def run_client(harness, bootstrap, timeout_s: float = 60.0) -> list[dict]:
    proc = await asyncio.create_subprocess_exec(
        "node", "book-client.js", "--bootstrap", ",".join(f"{h}:{p}" for h, p in bootstrap),
        "--namespace", NAMESPACE, "--name", "books", "--timeout-ms", str(int(timeout_s * 1000) - 5000),
        cwd=str(harness), stdout=asyncio.subprocess.PIPE)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


async def test_node_client_creates_and_lists_books(node_harness, node_testnet, books_worker):
    worker, swarm = books_worker
    assert worker.topics == ["books"]
    assert worker.topic_key("books") == topic_key(NAMESPACE, "books")
    events = await run_client(node_harness, node_testnet.bootstrap)
    by = {}
    for ev in events:
        by.setdefault(ev["event"], []).append(ev)
    assert "fatal" not in by, events
    assert by["found"][0]["public_key"] == swarm.keypair.public_key.hex()
    created = [ev["book"] for ev in by["created"]]
    assert [b["isbn"] for b in created] == ["9780441013593", "0441569560", "9780141439587"]
    assert all(b["version"] == 1 for b in created)
    assert by["refused"][0]["message"].startswith("INVALID_INPUT: isbn: expected an ISBN-10 or ISBN-13")
    by_year, since_1900 = by["listed"]
    assert [b["title"] for b in by_year["items"]] == ["Emma", "Dune", "Neuromancer"]
    assert [b["title"] for b in since_1900["items"]] == ["Neuromancer", "Dune"]
    assert by["done"]
    # The worker's own store agrees, and the refused book left nothing behind.
    page = await worker.service.list({"order": "title"})
    assert [b["title"] for b in page["items"]] == ["Dune", "Emma", "Neuromancer"]
