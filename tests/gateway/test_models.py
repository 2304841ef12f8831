"""Model catalogue over the real ModelManager: streamed uploads with declared size and sha256,
list, get, versions, delete, and the manager's error codes as HTTP statuses."""

from __future__ import annotations

import hashlib

from .conftest import auth, store_model
from .models import linear_model


def upload_headers(key: str, data: bytes, **extra) -> dict:
    return {**auth(key), "Content-Type": "application/octet-stream",
            "X-Checksum-Sha256": hashlib.sha256(data).hexdigest(), **extra}


def count_calls(directory, method: str) -> list:
    """Record the values of `method` calls on the manager's handle (still the real handler)."""
    (h,) = directory.workers("model-manager")
    original, calls = h.methods[method], []

    async def counted(value):
        calls.append(value)
        return await original(value)
    h.methods[method] = counted
    return calls


async def test_upload_list_get_delete(client, keys, manager, model_bytes, config, directory):
    chunks = count_calls(directory, "upload_chunk")
    sha = hashlib.sha256(model_bytes).hexdigest()
    r = await client.post("/api/v1/models?id=linear2&version=3", data=model_bytes,
                          headers=upload_headers(keys["write"], model_bytes, **{"X-Model-Tags": "demo,small"}))
    assert r.status == 201, await r.text()
    entry = await r.json()
    assert {k: entry[k] for k in ("id", "version", "type", "sha256", "size", "tags")} == \
        {"id": "linear2", "version": "3", "type": "onnx", "sha256": sha, "size": len(model_bytes),
         "tags": ["demo", "small"]}
    assert entry["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["N", 4]}]
    assert manager.library.store.has(sha)
    assert len(chunks) == -(-len(model_bytes) // config.upload_chunk_bytes)   # streamed in chunks
    assert [c["offset"] for c in chunks] == list(range(0, len(model_bytes), config.upload_chunk_bytes))

    r = await client.get("/api/v1/models", headers=auth(keys["read"]))
    assert (await r.json())["models"] == [entry]
    r = await client.get("/api/v1/models?tag=demo", headers=auth(keys["read"]))
    assert len((await r.json())["models"]) == 1
    r = await client.get("/api/v1/models?tag=other", headers=auth(keys["read"]))
    assert (await r.json())["models"] == []
    r = await client.get("/api/v1/models/linear2", headers=auth(keys["read"]))
    assert await r.json() == entry
    r = await client.get("/api/v1/models/linear2?version=3", headers=auth(keys["read"]))
    assert await r.json() == entry

    r = await client.delete("/api/v1/models/linear2", headers=auth(keys["read"]))
    assert r.status == 403
    r = await client.delete("/api/v1/models/linear2", headers=auth(keys["write"]))
    assert r.status == 200 and [e["version"] for e in (await r.json())["deleted"]] == ["3"]
    r = await client.get("/api/v1/models/linear2", headers=auth(keys["read"]))
    assert r.status == 404 and (await r.json())["error"]["kind"] == "model_not_found"
    r = await client.delete("/api/v1/models/linear2", headers=auth(keys["write"]))
    assert r.status == 404


async def test_delete_one_version(client, keys, manager, model_bytes):
    other = linear_model(seed=1)
    await store_model(manager, "m", "1", model_bytes)
    await store_model(manager, "m", "2", other)
    r = await client.delete("/api/v1/models/m?version=1", headers=auth(keys["write"]))
    assert r.status == 200
    r = await client.get("/api/v1/models/m", headers=auth(keys["read"]))
    assert (await r.json())["version"] == "2"


async def test_same_bytes_again_is_200_and_sends_nothing(client, keys, manager, model_bytes, directory):
    await store_model(manager, "linear", "1", model_bytes)
    chunks = count_calls(directory, "upload_chunk")
    r = await client.post("/api/v1/models?id=linear&version=1", data=model_bytes,
                          headers=upload_headers(keys["write"], model_bytes))
    assert r.status == 200 and (await r.json())["id"] == "linear"
    # the same content under a new version: the manager has the file, so no chunk travels
    r = await client.post("/api/v1/models?id=linear&version=2", data=model_bytes,
                          headers=upload_headers(keys["write"], model_bytes))
    assert r.status == 201 and (await r.json())["version"] == "2"
    assert chunks == []


async def test_other_bytes_under_a_taken_version_is_409(client, keys, manager, model_bytes):
    await store_model(manager, "linear", "1", model_bytes)
    other = linear_model(seed=1)
    r = await client.post("/api/v1/models?id=linear&version=1", data=other, headers=upload_headers(keys["write"], other))
    assert r.status == 409 and (await r.json())["error"]["kind"] == "conflict"


async def test_checksum_mismatch_aborts_upload(client, keys, manager, model_bytes):
    headers = upload_headers(keys["write"], model_bytes, **{"X-Checksum-Sha256": "0" * 64})
    r = await client.post("/api/v1/models?id=bad&version=1", data=model_bytes, headers=headers)
    assert r.status == 400 and (await r.json())["error"]["kind"] == "checksum_mismatch"
    assert len(manager.uploads) == 0 and manager.library.registry.list() == []


async def test_not_a_model_is_422(client, keys, manager):
    junk = b"these bytes are not an ONNX model" * 4
    r = await client.post("/api/v1/models?id=junk&version=1", data=junk, headers=upload_headers(keys["write"], junk))
    assert r.status == 422 and (await r.json())["error"]["kind"] == "invalid_model"
    assert len(manager.uploads) == 0 and manager.library.registry.list() == []


async def test_upload_too_large(client, keys, manager, config):
    big = b"\x00" * (config.max_model_bytes + 1)
    r = await client.post("/api/v1/models?id=big&version=1", data=big, headers=upload_headers(keys["write"], big))
    assert r.status == 413


async def test_manager_size_limit_is_413(client, keys, model_bytes, tmp_path, directory):
    from workers.models.manager import ManagerConfig, ModelManager
    from .conftest import handle
    small = ModelManager(ManagerConfig(data_dir=str(tmp_path / "small"), replicate_interval_s=0,
                                       max_model_bytes=64))
    await small.start()
    try:
        (h,) = directory.workers("model-manager")
        directory.remove("model-manager", h)
        directory.add("model-manager", handle(small, "manager-small"))
        r = await client.post("/api/v1/models?id=m&version=1", data=model_bytes,
                              headers=upload_headers(keys["write"], model_bytes))
        assert r.status == 413 and (await r.json())["error"]["kind"] == "payload_too_large"
    finally:
        await small.stop(drain_timeout=1.0)


async def test_chunked_upload_without_length_is_411(client, keys, manager, model_bytes):
    async def body():
        yield model_bytes
    r = await client.post("/api/v1/models?id=m&version=1", data=body(), headers=upload_headers(keys["write"], model_bytes))
    assert r.status == 411 and "Content-Length" in (await r.json())["error"]["message"]
    assert len(manager.uploads) == 0


async def test_upload_bad_requests(client, keys, manager):
    w = auth(keys["write"])
    octet = {**w, "Content-Type": "application/octet-stream", "X-Checksum-Sha256": "a" * 64}
    r = await client.post("/api/v1/models?version=1", data=b"x", headers=octet)
    assert r.status == 400 and "model id and version are required" in await r.text()
    r = await client.post("/api/v1/models?id=a", data=b"x", headers=octet)
    assert r.status == 400 and "model id and version are required" in await r.text()
    r = await client.post("/api/v1/models?id=a&version=1", data=b"x", headers={**w, "Content-Type": "text/plain"})
    assert r.status == 415
    r = await client.post("/api/v1/models?id=a&version=1", data=b"x",
                          headers={**w, "Content-Type": "application/octet-stream"})
    assert r.status == 400 and "X-Checksum-Sha256" in await r.text() and "required" in await r.text()
    r = await client.post("/api/v1/models?id=a&version=1&sha256=xyz", data=b"x",
                          headers={**w, "Content-Type": "application/octet-stream"})
    assert r.status == 400 and "64 hex" in await r.text()
    r = await client.post("/api/v1/models?id=a&version=1", data=b"", headers=octet)
    assert r.status == 400 and "empty" in await r.text()
    r = await client.post("/api/v1/models?id=a&version=bad%20v", data=b"x", headers=octet)
    assert r.status == 400 and "version" in await r.text()


async def test_no_model_manager_is_503(config, directory, keystore, keys, workers):
    from .conftest import start_gateway
    c = await start_gateway(config, directory, keystore)
    try:
        r = await c.get("/api/v1/models", headers=auth(keys["read"]))
        assert r.status == 503 and "no model manager" in (await r.json())["error"]["message"]
        assert r.headers["Retry-After"] == "1"
    finally:
        await c.close()
