"""KServe v2 / Open Inference Protocol JSON routes."""

from __future__ import annotations

import numpy as np

from .conftest import auth
from .models import reference


def v2_body(x, datatype="FP32", shape=None, **extra):
    arr = np.asarray(x)
    return {"inputs": [{"name": "x", "shape": shape or list(arr.shape), "datatype": datatype,
                        "data": arr.ravel().tolist()}], **extra}


async def test_health(client):
    assert await (await client.get("/v2/health/live")).json() == {"live": True}
    assert await (await client.get("/v2/health/ready")).json() == {"ready": True}


async def test_model_metadata(client, keys):
    r = await client.get("/v2/models/linear", headers=auth(keys["read"]))
    assert await r.json() == {"name": "linear", "versions": ["1"], "platform": "onnxruntime_onnx",
                              "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],   # N is dynamic
                              "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]}


async def test_model_ready_and_unknown(client, keys):
    r = await client.get("/v2/models/linear/ready", headers=auth(keys["read"]))
    assert r.status == 200 and (await r.json())["ready"] is True
    r = await client.get("/v2/models/ghost/ready", headers=auth(keys["read"]))
    assert r.status == 404 and "ghost" in (await r.json())["error"]


async def test_infer(client, keys, model_bytes):
    x = [[1, 2, 3, 4]]
    r = await client.post("/v2/models/linear/infer", json=v2_body(x, id="req-1"), headers=auth(keys["infer"]))
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["model_name"] == "linear" and body["model_version"] == "1" and body["id"] == "req-1"
    (out,) = body["outputs"]
    assert out["name"] == "y" and out["datatype"] == "FP32" and out["shape"] == [1, 3]
    want = reference(model_bytes, {"x": np.asarray(x, dtype=np.float32)})[0]
    np.testing.assert_allclose(np.asarray(out["data"]).reshape(1, 3), want, rtol=1e-6)


async def test_infer_errors_in_v2_shape(client, keys):
    cases = [
        (v2_body([[1, 2, 3, 4]], datatype="INT64"), "must be float32, got int64"),
        (v2_body([[1, 2, 3, 4]], datatype="BYTES"), "datatype 'BYTES'"),
        (v2_body([[1, 2, 3]], shape=[1, 4]), "needs 4 values, data has 3"),
        (v2_body([[1, 2, 3, 4]], outputs=[{"name": "nope"}]), "no outputs ['nope']"),
        ({"inputs": {}}, "body must be"),
    ]
    for body, fragment in cases:
        r = await client.post("/v2/models/linear/infer", json=body, headers=auth(keys["infer"]))
        assert r.status == 400, body
        assert fragment in (await r.json())["error"], (fragment, await r.text())
    r = await client.post("/v2/models/linear/infer", data=b"[", headers={**auth(keys["infer"]),
                                                                        "Content-Type": "application/json"})
    assert r.status == 400 and "not valid JSON" in (await r.json())["error"]
