"""Model catalogue: streamed uploads to the model manager with sha256 checks, list, get, delete."""

from __future__ import annotations

import hashlib

from .conftest import auth


async def test_upload_list_get_delete(client, keys, store, model_bytes, config):
    sha = hashlib.sha256(model_bytes).hexdigest()
    headers = {**auth(keys["write"]), "Content-Type": "application/octet-stream", "X-Checksum-Sha256": sha,
               "X-Model-Metadata": '{"task": "regression"}'}
    r = await client.post("/api/v1/models?id=linear2&version=3", data=model_bytes, headers=headers)
    assert r.status == 201, await r.text()
    record = await r.json()
    assert record == {"id": "linear2", "version": "3", "sha256": sha, "size": len(model_bytes),
                      "metadata": {"task": "regression"}}
    assert (store.root / sha).read_bytes() == model_bytes
    assert store.chunks == -(-len(model_bytes) // config.upload_chunk_bytes)   # streamed in chunks
    r = await client.get("/api/v1/models", headers=auth(keys["read"]))
    assert (await r.json())["models"] == [record]
    r = await client.get("/api/v1/models/linear2", headers=auth(keys["read"]))
    assert await r.json() == record
    r = await client.delete("/api/v1/models/linear2", headers=auth(keys["read"]))
    assert r.status == 403
    r = await client.delete("/api/v1/models/linear2", headers=auth(keys["write"]))
    assert r.status == 200
    r = await client.get("/api/v1/models/linear2", headers=auth(keys["read"]))
    assert r.status == 404 and (await r.json())["error"]["kind"] == "model_not_found"


async def test_checksum_mismatch_aborts_upload(client, keys, store, model_bytes):
    headers = {**auth(keys["write"]), "Content-Type": "application/octet-stream", "X-Checksum-Sha256": "0" * 64}
    r = await client.post("/api/v1/models?id=bad", data=model_bytes, headers=headers)
    assert r.status == 400 and (await r.json())["error"]["kind"] == "checksum_mismatch"
    assert store.uploads == {} and list(store.root.iterdir()) == []


async def test_upload_too_large(client, keys, store, config):
    headers = {**auth(keys["write"]), "Content-Type": "application/octet-stream"}
    r = await client.post("/api/v1/models?id=big", data=b"\x00" * (config.max_model_bytes + 1), headers=headers)
    assert r.status == 413


async def test_upload_too_large_without_length_is_cut_while_streaming(client, keys, store, config):
    async def body():
        for _ in range(config.max_model_bytes // 4096 + 2):
            yield b"\x00" * 4096
    headers = {**auth(keys["write"]), "Content-Type": "application/octet-stream"}
    r = await client.post("/api/v1/models?id=big", data=body(), headers=headers)
    assert r.status == 413
    assert store.uploads == {} and list(store.root.iterdir()) == []


async def test_upload_bad_requests(client, keys, store):
    w = auth(keys["write"])
    r = await client.post("/api/v1/models", data=b"x", headers={**w, "Content-Type": "application/octet-stream"})
    assert r.status == 400 and "model id missing" in await r.text()
    r = await client.post("/api/v1/models?id=a", data=b"x", headers={**w, "Content-Type": "text/plain"})
    assert r.status == 415
    r = await client.post("/api/v1/models?id=a&sha256=xyz", data=b"x",
                          headers={**w, "Content-Type": "application/octet-stream"})
    assert r.status == 400 and "64 hex" in await r.text()
    r = await client.post("/api/v1/models?id=a", data=b"x", headers={
        **w, "Content-Type": "application/octet-stream", "X-Model-Metadata": "{"})
    assert r.status == 400 and "X-Model-Metadata" in await r.text()


async def test_no_model_manager_is_503(config, directory, keystore, keys, workers):
    from .conftest import start_gateway
    c = await start_gateway(config, directory, keystore)
    try:
        r = await c.get("/api/v1/models", headers=auth(keys["read"]))
        assert r.status == 503 and "no model manager" in (await r.json())["error"]["message"]
        assert r.headers["Retry-After"] == "1"
    finally:
        await c.close()
