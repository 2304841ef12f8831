"""The book worker served by the real RPC layer (mesh.rpc RpcServer/RpcPeer over
its in-memory connection pair): msgpack and JSON callers, errors, concurrency."""

from __future__ import annotations

import asyncio

import pytest

rpc = pytest.importorskip("mesh.rpc")
from mesh.rpc.pipe import pipe  # noqa: E402

from workers.base import Mesh  # noqa: E402
from workers.book import BookConfig, BookWorker  # noqa: E402

DUNE = {"title": "Dune", "author": "Frank Herbert", "isbn": "978-0-441-01359-3", "year": 1965}


@pytest.fixture
async def peer(tmp_path):
    server = rpc.RpcServer()
    worker = BookWorker(BookConfig(db_path=str(tmp_path / "books.db")))
    await worker.start(Mesh(rpc=server))
    client_conn, server_conn = pipe()
    server.attach(server_conn)
    p = rpc.RpcPeer(client_conn)
    yield p
    p.close()
    client_conn.destroy()
    await worker.stop()


async def test_msgpack_crud_over_rpc(peer):
    made = await peer.request("create", DUNE, timeout=5)
    assert made["isbn"] == "9780441013593" and made["version"] == 1
    assert await peer.request("get", {"id": made["id"]}, timeout=5) == made
    up = await peer.request("update", {"id": made["id"], "version": 1, "year": 1966}, timeout=5)
    assert up["version"] == 2
    page = await peer.request("list", {"where": {"author": "Frank Herbert"}}, timeout=5)
    assert page == {"items": [up], "next_cursor": None}
    assert (await peer.request("delete", {"id": made["id"], "version": 2}, timeout=5))["deleted"] is True


async def test_msgpack_errors_carry_worker_codes(peer):
    made = await peer.request("create", DUNE, timeout=5)
    for method, value, code, text in [
        ("create", {**DUNE, "isbn": "123"}, "INVALID_INPUT", "isbn: expected an ISBN-10 or ISBN-13"),
        ("get", {"id": "nope"}, "NOT_FOUND", "no thing with id 'nope'"),
        ("delete", {"id": made["id"], "version": 3}, "CONFLICT", "the current version is 1"),
    ]:
        with pytest.raises(rpc.RequestFailedError) as info:
            await peer.request(method, value, timeout=5)
        assert info.value.code == code and text in info.value.message, info.value
    assert len((await peer.request("list", {}, timeout=5))["items"]) == 1


async def test_json_text_callers_over_rpc(peer):
    """What an hp-svc-facs-net caller does: JSON text in the buffer, JSON text back."""
    made = await peer.request("create", DUNE, encoding="json", timeout=5)
    assert made["isbn"] == "9780441013593"
    page = await peer.request("list", {"order": "-year", "limit": 10}, encoding="json", timeout=5)
    assert [b["id"] for b in page["items"]] == [made["id"]]
    reply = await peer.request("get", {"id": "nope"}, encoding="json", timeout=5)
    assert reply == "[HRPC_ERR]=NOT_FOUND: no thing with id 'nope'"
    with pytest.raises(rpc.InbandError, match="CONFLICT: isbn: '9780441013593' is already used"):
        await peer.request("create", DUNE, encoding="json", inband_errors=True, timeout=5)
    bad = await peer.request("create", b"{oops", encoding="raw", timeout=5)
    assert bad == b'"[HRPC_ERR]=ERR_FACS_NET_DATA_FORMAT"'


async def test_concurrent_writers_over_rpc_lose_no_update(peer):
    made = await peer.request("create", {**DUNE, "year": 1000}, timeout=5)

    async def bump(times: int, encoding: str) -> None:
        for _ in range(times):
            while True:
                cur = await peer.request("get", {"id": made["id"]}, encoding=encoding, timeout=5)
                try:
                    await peer.request("update", {"id": made["id"], "version": cur["version"],
                                                  "year": cur["year"] + 1},
                                       encoding=encoding, inband_errors=True, timeout=5)
                    break
                except (rpc.RequestFailedError, rpc.InbandError) as e:
                    assert "CONFLICT" in str(e), e

    await asyncio.gather(*(bump(10, "msgpack" if i % 2 else "json") for i in range(6)))
    final = await peer.request("get", {"id": made["id"]}, timeout=5)
    assert final["year"] == 1060 and final["version"] == 61
