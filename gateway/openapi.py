"""The OpenAPI 3.1 document of the gateway (a test checks its paths against the router)."""

from __future__ import annotations

from . import __version__

_ERR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_JSON = {"application/json": {"schema": {"type": "object"}}}


def _op(summary: str, scope: str | None, ok: str = "200", request: dict | None = None, params=(), **extra) -> dict:
    op: dict = {"summary": summary, "responses": {ok: {"description": "success", "content": _JSON}, "default": _ERR}}
    if scope == "public":
        op["security"] = []
    else:
        op["description"] = (f"Needs an API key{'' if scope is None else f' with scope {scope}'}. "
                             "X-Request-Timeout (seconds) may shorten the gateway's deadline.")
    if request:
        op["requestBody"] = {"required": True, "content": request}
    if params:
        op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params]
    op.update(extra)
    return op


_TENSORS_IN = {
    "application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                 "description": "one raw tensor; headers X-Tensor-Name, X-Tensor-Shape, X-Tensor-Dtype"},
    "application/x-mesh-tensors": {"schema": {"type": "string", "format": "binary"},
                                   "description": "4-byte big-endian header length, JSON header, tensor bytes"},
}

_PATHS = {
    "/": {"get": _op("Dashboard page (HTML)", "public")},
    "/health": {"get": _op("Liveness of the gateway", "public")},
    "/api/v1/status": {"get": _op("DHT state, topics, workers with load and health, models", "admin")},
    "/api/v1/inference/{modelId}": {"post": _op("Run a model", "infer", request=_TENSORS_IN, params=("modelId",))},
    "/api/v1/models": {
        "get": _op("List models in the catalogue (?type=, ?tag=)", "models:read"),
        "post": _op("Upload a model (streamed to the model manager, which verifies size and sha256); "
                    "?id=&version= or X-Model-Id, X-Model-Version; required X-Checksum-Sha256 and "
                    "Content-Length; optional X-Model-Type (onnx), X-Model-Tags (comma-separated)",
                    "models:write", ok="201",
                    request={"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}),
    },
    "/api/v1/models/{modelId}": {
        "get": _op("One model's entry (newest version, or ?version=)", "models:read", params=("modelId",)),
        "delete": _op("Delete one version (?version=) or every version of a model", "models:write",
                      params=("modelId",)),
    },
    "/api/v1/openapi.json": {"get": _op("This document", None)},
    "/metrics": {"get": _op("Prometheus metrics", "admin")},
    "/v2": {"get": _op("KServe v2 server metadata", None)},
    "/v2/health/live": {"get": _op("KServe v2 liveness", "public")},
    "/v2/health/ready": {"get": _op("KServe v2 readiness", "public")},
    "/v2/models/{name}": {"get": _op("KServe v2 model metadata", "models:read", params=("name",))},
    "/v2/models/{name}/ready": {"get": _op("KServe v2 model readiness", "models:read", params=("name",))},
    "/v2/models/{name}/infer": {"post": _op("KServe v2 inference (JSON)", "infer", params=("name",),
                                             request={"application/json": {"schema": {"type": "object"}}})},
}

_SCHEMAS = {
    "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
        "kind": {"type": "string"}, "message": {"type": "string"}}}}},
    "Tensor": {"type": "object", "required": ["shape", "dtype", "data"], "properties": {
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "dtype": {"type": "string", "enum": ["bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16",
                                             "int32", "int64", "float16", "float32", "float64"]},
        "data": {"type": "array"}}},
    "InferenceRequest": {"type": "object", "required": ["inputs"], "properties": {
        "inputs": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/Tensor"}}}},
}


def spec() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "inference-mesh gateway", "version": __version__},
        "components": {"schemas": _SCHEMAS, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}},
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": _PATHS,
    }
