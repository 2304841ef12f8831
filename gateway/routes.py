"""REST routes: health, status, inference, model catalogue, OpenAPI, metrics, dashboard."""

from __future__ import annotations

import pathlib
import time

from aiohttp import web

from . import __version__
from .app import ANY, DEADLINE, PUBLIC, gateway_of
from .bodies import check_length, outputs_response, read_inputs
from .catalogue import UploadRequest, check_model_id
from .errors import BadRequest, LengthRequired, UnsupportedMediaType
from .jsonio import json_response
from .metrics import CONTENT_TYPE
from .openapi import spec
from .tensors import validate

DASHBOARD = pathlib.Path(__file__).with_name("static") / "dashboard.html"


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "version": __version__})


async def status(request: web.Request) -> web.Response:
    gw = gateway_of(request)
    services = gw.directory.services()
    topics = [{"name": s, "topic": gw.topic_hex(s), "workers": gw.dispatcher.worker_report(s)} for s in services]
    models = [s for s in services if s != gw.config.model_manager]
    return json_response({
        "gateway": {"version": __version__, "uptime_s": round(time.time() - gw.started, 3),
                    "strategy": gw.config.strategy, "namespace": gw.config.namespace},
        "discovery": gw.directory.describe(),
        "topics": topics,
        "models": models,
        "totals": {**gw.metrics.totals(), "retries": gw.dispatcher.retries,
                   "joined_requests": gw.dispatcher.coalescer.joined_requests},
        "rate_buckets": len(gw.limiter),
    })


async def infer(request: web.Request) -> web.Response:
    gw = gateway_of(request)
    model = check_model_id(request.match_info["modelId"])
    deadline = request[DEADLINE]
    signature = await gw.catalogue.signature(model, deadline)
    inputs = await read_inputs(request, gw.config.max_body_bytes, signature)
    validate(model, inputs, signature)
    value = {"model": model, "version": request.query.get("version"), "inputs": inputs}
    reply, worker = await gw.dispatcher.call(model, "infer", value, deadline)
    return outputs_response(request, model, reply, worker)


async def list_models(request: web.Request) -> web.Response:
    gw = gateway_of(request)
    return json_response(await gw.catalogue.list(request.query.get("type"), request.query.get("tag"),
                                                     request[DEADLINE]))


async def get_model(request: web.Request) -> web.Response:
    gw = gateway_of(request)
    model = check_model_id(request.match_info["modelId"])
    return json_response(await gw.catalogue.get(model, request.query.get("version"), request[DEADLINE]))


async def delete_model(request: web.Request) -> web.Response:
    """Delete one version (?version=) or, without it, every version of a model."""
    gw = gateway_of(request)
    model = check_model_id(request.match_info["modelId"])
    return json_response(await gw.catalogue.delete(model, request.query.get("version"), request[DEADLINE]))


def _declared_upload(request: web.Request, limit: int) -> UploadRequest:
    """The upload's id, version, type, tags, sha256 and size from query and headers (4xx if unusable)."""
    if request.content_type != "application/octet-stream":
        raise UnsupportedMediaType(f"model upload must be application/octet-stream, got {request.content_type!r}")
    def field(query: str, header: str) -> str | None:
        return request.query.get(query) or request.headers.get(header)
    model = field("id", "X-Model-Id")
    version = field("version", "X-Model-Version")
    if not model or not version:
        raise BadRequest("model id and version are required: pass ?id=<model>&version=<v> "
                         "(or X-Model-Id and X-Model-Version)")
    checksum = field("sha256", "X-Checksum-Sha256")
    if checksum is None:
        raise BadRequest("X-Checksum-Sha256 (the body's sha256 as 64 hex digits) is required: "
                         "the model manager verifies it")
    if len(checksum) != 64 or any(c not in "0123456789abcdefABCDEF" for c in checksum):
        raise BadRequest("X-Checksum-Sha256 must be 64 hex digits")
    if request.content_length is None:
        raise LengthRequired("model upload needs a Content-Length (chunked bodies are refused): "
                             "the model manager verifies the size")
    check_length(request, limit)
    if request.content_length == 0:
        raise BadRequest("model body is empty")
    tags = tuple(t.strip() for t in (field("tags", "X-Model-Tags") or "").split(",") if t.strip())
    return UploadRequest(check_model_id(model), check_model_id(version, "version"), checksum.lower(),
                         request.content_length, field("type", "X-Model-Type") or "onnx", tags)


async def upload_model(request: web.Request) -> web.Response:
    """Raw model bytes in the body; id, version, sha256, type and tags in query or headers.

    201 with the manager's entry when stored; 200 with it when the manager already
    held these bytes under this id and version.
    """
    gw = gateway_of(request)
    declared = _declared_upload(request, gw.config.max_model_bytes)
    chunks = request.content.iter_chunked(gw.config.upload_chunk_bytes)
    entry, created = await gw.catalogue.upload(declared, chunks, request[DEADLINE])
    return json_response(entry, status=201 if created else 200)


async def openapi(request: web.Request) -> web.Response:
    return json_response(spec())


async def metrics(request: web.Request) -> web.Response:
    body = gateway_of(request).metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def dashboard(request: web.Request) -> web.Response:
    return web.Response(body=DASHBOARD.read_bytes(), content_type="text/html", charset="utf-8")


ROUTES = [
    ("GET", "/", dashboard, PUBLIC),
    ("GET", "/health", health, PUBLIC),
    ("GET", "/api/v1/status", status, "admin"),
    ("POST", "/api/v1/inference/{modelId}", infer, "infer"),
    ("GET", "/api/v1/models", list_models, "models:read"),
    ("POST", "/api/v1/models", upload_model, "models:write"),
    ("GET", "/api/v1/models/{modelId}", get_model, "models:read"),
    ("DELETE", "/api/v1/models/{modelId}", delete_model, "models:write"),
    ("GET", "/api/v1/openapi.json", openapi, ANY),
    ("GET", "/metrics", metrics, "admin"),
]
