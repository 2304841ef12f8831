"""Gateway routes over a real socket: inference encodings, auth by scope, status, metrics, OpenAPI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gateway import tensors
from gateway.app import GATEWAY

from .conftest import MAX_CONCURRENT, auth, store_model
from .models import reference

X = [[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 0.0, 2.0]]


def expected(model_bytes, x):
    return reference(model_bytes, {"x": np.asarray(x, dtype=np.float32)})[0]


def hold_infer(directory, gate):
    """Make every worker's real infer handler wait for `gate` first."""
    for h in directory.workers("linear"):
        original = h.methods["infer"]

        async def held(value, original=original):
            await gate.wait()
            return await original(value)
        h.methods["infer"] = held


def tensor_body(x=X, dtype="float32", shape=None):
    arr = np.asarray(x)
    return {"inputs": {"x": {"shape": shape if shape is not None else list(arr.shape), "dtype": dtype,
                             "data": arr.ravel().tolist()}}}


async def test_health_needs_no_key(client):
    r = await client.get("/health")
    assert r.status == 200 and (await r.json())["status"] == "ok"


async def test_infer_json(client, keys, model_bytes):
    r = await client.post("/api/v1/inference/linear", json=tensor_body(), headers=auth(keys["infer"]))
    assert r.status == 200, await r.text()
    body = await r.json()
    y = body["outputs"]["y"]
    assert y["shape"] == [2, 3] and y["dtype"] == "float32"
    np.testing.assert_allclose(np.asarray(y["data"]).reshape(2, 3), expected(model_bytes, X), rtol=1e-6)
    assert body["model"] == "linear" and body["worker"].startswith("worker-")


async def test_infer_nested_data_and_x_api_key(client, keys, workers):
    body = {"inputs": {"x": {"shape": [2, 4], "dtype": "float32", "data": X}}}
    r = await client.post("/api/v1/inference/linear", json=body, headers={"X-API-Key": keys["infer"]})
    assert r.status == 200, await r.text()


async def test_infer_raw_octet_stream_in_and_out(client, keys, model_bytes):
    x = np.asarray(X, dtype=np.float32)
    headers = {**auth(keys["infer"]), "Content-Type": "application/octet-stream", "X-Tensor-Shape": "2,4",
               "X-Tensor-Dtype": "float32", "Accept": "application/octet-stream"}
    r = await client.post("/api/v1/inference/linear", data=x.tobytes(), headers=headers)
    assert r.status == 200, await r.text()
    assert r.headers["X-Tensor-Name"] == "y" and r.headers["X-Tensor-Shape"] == "2,3"
    y = np.frombuffer(await r.read(), dtype=r.headers["X-Tensor-Dtype"]).reshape(2, 3)
    np.testing.assert_allclose(y, expected(model_bytes, X), rtol=1e-6)


async def test_infer_multi_tensor_encoding(client, keys, model_bytes):
    body = tensors.encode_multi({"x": np.asarray(X, dtype=np.float32)})
    headers = {**auth(keys["infer"]), "Content-Type": tensors.MESH_TENSORS, "Accept": tensors.MESH_TENSORS}
    r = await client.post("/api/v1/inference/linear", data=body, headers=headers)
    assert r.status == 200, await r.text()
    out = tensors.decode_multi(await r.read())
    np.testing.assert_allclose(out["y"], expected(model_bytes, X), rtol=1e-6)


@pytest.mark.parametrize("body,ctype,fragment", [
    (b"{not json", "application/json", "not valid JSON"),
    (b'{"inputs": []}', "application/json", "at least one input"),
    (json.dumps(tensor_body(dtype="float99")).encode(), "application/json", "dtype 'float99'"),
    (json.dumps(tensor_body(shape=[3, 4])).encode(), "application/json", "needs 12 values, data has 8"),
    (json.dumps(tensor_body(shape=[8, 1])).encode(), "application/json", "must have shape [-1, 4]"),
    (json.dumps(tensor_body(dtype="float64")).encode(), "application/json", "must be float32, got float64"),
    (json.dumps({"inputs": {"z": tensor_body()["inputs"]["x"]}}).encode(), "application/json", "unknown ['z']"),
    (json.dumps({"inputs": {"x": {"shape": [1], "dtype": "float32", "data": ["a"]}}}).encode(),
     "application/json", "not a regular array"),
    (b"x=1", "text/plain", "content type must be"),
    (b"\x00\x00\x00\x09{}", tensors.MESH_TENSORS, "runs past the body"),
])
async def test_infer_bad_input_is_4xx_with_message(client, keys, body, ctype, fragment):
    r = await client.post("/api/v1/inference/linear", data=body,
                          headers={**auth(keys["infer"]), "Content-Type": ctype})
    assert 400 <= r.status < 500
    err = (await r.json())["error"]
    assert fragment in err["message"], err


async def test_raw_tensor_wrong_byte_count(client, keys):
    headers = {**auth(keys["infer"]), "Content-Type": "application/octet-stream", "X-Tensor-Shape": "2,4",
               "X-Tensor-Dtype": "float32"}
    r = await client.post("/api/v1/inference/linear", data=b"\x00" * 31, headers=headers)
    assert r.status == 400 and "needs 32 bytes, got 31" in (await r.json())["error"]["message"]


async def test_body_over_limit_is_413(client, keys, config):
    big = b"\x00" * (config.max_body_bytes + 1)
    headers = {**auth(keys["infer"]), "Content-Type": "application/octet-stream", "X-Tensor-Shape": "1",
               "X-Tensor-Dtype": "uint8"}
    r = await client.post("/api/v1/inference/linear", data=big, headers=headers)
    assert r.status == 413 and (await r.json())["error"]["kind"] == "payload_too_large"


async def test_unknown_model_is_404(client, keys):
    r = await client.post("/api/v1/inference/nope", json=tensor_body(), headers=auth(keys["infer"]))
    assert r.status == 404
    assert (await r.json())["error"] == {"kind": "model_not_found", "message": "no worker serves 'nope'",
                                         "model": "nope"}


async def test_bad_model_id_is_400(client, keys):
    r = await client.post("/api/v1/inference/bad%20id!", json=tensor_body(), headers=auth(keys["infer"]))
    assert r.status == 400


async def test_worker_side_invalid_input_is_400(client, keys, gw):
    gw.catalogue._signatures["linear"] = (gw.dispatcher.now(), None)  # skip the gateway's own check
    r = await client.post("/api/v1/inference/linear", json=tensor_body(dtype="int32"), headers=auth(keys["infer"]))
    assert r.status == 400 and "expected dtype float32, got int32" in (await r.json())["error"]["message"]


async def test_deadline_is_504(config, directory, keystore, keys, workers, manager):
    from .conftest import replace, start_gateway
    import asyncio
    hold_infer(directory, asyncio.Event())   # never set: the request outlives its deadline
    c = await start_gateway(replace(config, request_timeout_s=0.2), directory, keystore)
    try:
        r = await c.post("/api/v1/inference/linear", json=tensor_body(), headers=auth(keys["infer"]))
        assert r.status == 504 and (await r.json())["error"]["kind"] == "deadline_exceeded"
    finally:
        await c.close()


def raw_upload(data: bytes) -> dict:
    import hashlib
    return {"data": data, "headers": {"Content-Type": "application/octet-stream",
                                      "X-Checksum-Sha256": hashlib.sha256(data).hexdigest()}}


RAW = raw_upload(b"")  # filled in by the test with the real model
V2_BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}

# (method, path, request kwargs, scope needed, statuses when allowed)
ENDPOINTS = [
    ("GET", "/api/v1/status", {}, "admin", (200,)),
    ("POST", "/api/v1/inference/linear", {"json": tensor_body()}, "infer", (200,)),
    ("GET", "/api/v1/models", {}, "read", (200,)),
    ("POST", "/api/v1/models?id=fresh&version=1", RAW, "write", (201, 200)),  # 200: already stored
    ("GET", "/api/v1/models/stored", {}, "read", (200,)),
    ("DELETE", "/api/v1/models/stored", {}, "write", (200, 404)),   # the second allowed key finds it gone
    ("GET", "/api/v1/openapi.json", {}, "any", (200,)),
    ("GET", "/metrics", {}, "admin", (200,)),
    ("GET", "/v2", {}, "any", (200,)),
    ("GET", "/v2/models/linear", {}, "read", (200,)),
    ("GET", "/v2/models/linear/ready", {}, "read", (200,)),
    ("POST", "/v2/models/linear/infer", {"json": V2_BODY}, "infer", (200,)),
]


@pytest.mark.parametrize("method,path,kwargs,scope,ok", ENDPOINTS)
async def test_every_endpoint_keys_and_scopes(client, keys, manager, model_bytes, method, path, kwargs, scope,
                                              ok):
    await store_model(manager, "stored", "1", model_bytes)
    if kwargs is RAW:
        kwargs = raw_upload(model_bytes)
    extra = kwargs.get("headers", {})
    kwargs = {k: v for k, v in kwargs.items() if k != "headers"}
    r = await client.request(method, path, headers=extra, **kwargs)
    assert r.status == 401 and "missing API key" in await r.text()
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = await client.request(method, path, headers={**extra, **auth("mk_0000_wrong")}, **kwargs)
    assert r.status == 401
    r = await client.request(method, path, headers={**extra, **auth(keys["revoked"])}, **kwargs)
    assert r.status == 401 and "revoked" in await r.text()
    for name in ("infer", "read", "write", "admin"):
        r = await client.request(method, path, headers={**extra, **auth(keys[name])}, **kwargs)
        allowed = scope in ("any", name) or name == "admin"
        if allowed:
            assert r.status in ok, (name, r.status, await r.text())
        else:
            assert r.status == 403, (name, r.status, await r.text())
            assert "lacks scope" in await r.text()


async def test_public_routes(client):
    for path in ("/health", "/v2/health/live", "/v2/health/ready", "/"):
        r = await client.get(path)
        assert r.status == 200, path


async def test_unknown_route_is_json_404_and_wrong_method_405(client, keys):
    r = await client.get("/api/v1/nothing", headers=auth(keys["admin"]))
    assert r.status == 404 and (await r.json())["error"]["kind"] == "not_found"
    r = await client.put("/api/v1/models", headers=auth(keys["admin"]))
    assert r.status == 405 and (await r.json())["error"]["kind"] == "method_not_allowed"


async def test_status_shows_workers_topics_models(client, keys):
    await client.post("/api/v1/inference/linear", json=tensor_body(), headers=auth(keys["infer"]))
    await client.server.app[GATEWAY].dispatcher.ping_all()
    r = await client.get("/api/v1/status", headers=auth(keys["admin"]))
    body = await r.json()
    assert body["models"] == ["linear"]
    topic = next(t for t in body["topics"] if t["name"] == "linear")
    assert len(topic["topic"]) == 64 and len(topic["workers"]) == 3
    assert {w["health"] for w in topic["workers"]} == {"healthy"}
    assert {w["max_concurrent"] for w in topic["workers"]} == {MAX_CONCURRENT}   # the workers' capacity reply
    assert sum(w["served"] for w in topic["workers"]) >= 1
    assert body["totals"]["requests"] >= 1


async def test_metrics(client, keys):
    await client.post("/api/v1/inference/linear", json=tensor_body(), headers=auth(keys["infer"]))
    await client.post("/api/v1/inference/linear", data=b"{", headers={**auth(keys["infer"]),
                                                                       "Content-Type": "application/json"})
    text = await (await client.get("/metrics", headers=auth(keys["admin"]))).text()
    assert 'gateway_requests_total{method="POST",route="/api/v1/inference/{modelId}",status="200"} 1.0' in text
    assert 'gateway_errors_total{kind="malformed_json"} 1.0' in text
    assert 'gateway_request_seconds_bucket{le="0.005",route="/api/v1/inference/{modelId}"}' in text
    assert 'gateway_workers{state="healthy",topic="linear"} 3.0' in text
    # the loop's busy-poll counters (mesh.busy_poll), zero here: the test loop does not poll
    assert "gateway_busy_poll_seconds_total 0.0" in text
    assert 'gateway_busy_polls_total{result="hit"} 0.0' in text


async def test_openapi_matches_router(client, keys):
    spec = await (await client.get("/api/v1/openapi.json", headers=auth(keys["read"]))).json()
    routes = {}
    for route in client.server.app.router.routes():
        if route.method in ("HEAD", "OPTIONS"):
            continue
        routes.setdefault(route.resource.canonical, set()).add(route.method.lower())
    documented = {path: set(ops) for path, ops in spec["paths"].items()}
    assert documented == routes


async def test_env_api_key_has_every_scope(config, directory, keystore, workers, manager):
    from .conftest import replace, start_gateway
    c = await start_gateway(replace(config, api_key="env-key-" + "z" * 40), directory, keystore)
    try:
        for path in ("/api/v1/status", "/api/v1/models", "/metrics"):
            assert (await c.get(path, headers={"X-API-Key": "env-key-" + "z" * 40})).status == 200
        assert (await c.get("/api/v1/status", headers={"X-API-Key": "env-key-wrong"})).status == 401
    finally:
        await c.close()


async def test_client_can_shorten_the_deadline(client, keys, directory):
    import asyncio
    gate = asyncio.Event()
    hold_infer(directory, gate)
    r = await client.post("/api/v1/inference/linear", json=tensor_body(),
                          headers={**auth(keys["infer"]), "X-Request-Timeout": "0.1"})
    assert r.status == 504
    r = await client.post("/api/v1/inference/linear", json=tensor_body(),
                          headers={**auth(keys["infer"]), "X-Request-Timeout": "soon"})
    assert r.status == 400 and "X-Request-Timeout" in await r.text()
    gate.set()


async def test_worker_returning_garbage_is_502(client, keys, workers, directory):
    async def garbage(value):
        return {"outputs": {"y": {"not": "a tensor"}}}
    for handle in directory.workers("linear"):
        handle.methods["infer"] = garbage
    r = await client.post("/api/v1/inference/linear", json=tensor_body(), headers=auth(keys["infer"]))
    assert r.status == 502 and "non-numeric outputs ['y']" in (await r.json())["error"]["message"]


async def test_background_pings_reach_every_worker(config, directory, keystore, workers, manager):
    import asyncio
    from .conftest import replace, start_gateway
    pinged = {h.id: asyncio.Event() for h in directory.workers("linear")}
    for h in directory.workers("linear"):
        original = h.methods["capacity"]

        async def capacity(value, wid=h.id, original=original):
            pinged[wid].set()
            return await original(value)
        h.methods["capacity"] = capacity
    c = await start_gateway(replace(config, ping_interval_s=0.01, models=("linear",)), directory, keystore)
    try:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in pinged.values())), 5)
    finally:
        await c.close()


async def test_worker_without_models_method_is_not_quarantined(client, keys, directory, gw):
    for handle in directory.workers("linear"):
        del handle.methods["models"]
    for _ in range(10):
        r = await client.post("/api/v1/inference/linear", json=tensor_body(), headers=auth(keys["infer"]))
        assert r.status == 200
    assert all(gw.dispatcher.health.get(h.id).failures == 0 for h in directory.workers("linear"))
    r = await client.post("/api/v1/inference/linear", json=tensor_body(dtype="int32"), headers=auth(keys["infer"]))
    assert r.status == 400 and "expected dtype float32" in await r.text()   # the worker's own check
