"""KServe v2 / Open Inference Protocol routes (JSON format, datatypes FP32, INT64, ...)."""

from __future__ import annotations

import math

import numpy as np
from aiohttp import web

from . import __version__
from .app import ANY, DEADLINE, PUBLIC, gateway_of
from .bodies import output_arrays, read_json
from .catalogue import check_model_id
from .errors import InvalidTensor, ModelNotReady, NoWorkers
from .jsonio import json_response
from .tensors import check_shape, dtype_name, validate

# Open Inference Protocol datatype <-> numpy dtype name
TO_NUMPY = {"BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
            "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
            "FP16": "float16", "FP32": "float32", "FP64": "float64"}
FROM_NUMPY = {v: k for k, v in TO_NUMPY.items()}


def _datatype(dtype: object) -> str:
    return FROM_NUMPY.get(str(dtype), str(dtype).upper())


def _tensor_meta(entries: object) -> list[dict]:
    out = []
    for e in entries if isinstance(entries, list) else []:
        shape = [d if isinstance(d, int) and d >= 0 else -1 for d in e.get("shape") or []]
        out.append({"name": e.get("name"), "datatype": _datatype(e.get("dtype")), "shape": shape})
    return out


def decode_inputs(body: object) -> tuple[dict[str, np.ndarray], list[str] | None]:
    """(inputs, requested output names or None) of a v2 inference request."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise InvalidTensor('body must be {"inputs": [{"name", "shape", "datatype", "data"}, ...]}')
    inputs = {}
    for i, t in enumerate(body["inputs"]):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise InvalidTensor(f"inputs[{i}] needs a name, shape, datatype and data")
        name = t["name"]
        if t.get("datatype") not in TO_NUMPY:
            raise InvalidTensor(f"input {name!r}: datatype {t.get('datatype')!r} is not one of {', '.join(TO_NUMPY)}")
        shape = check_shape(name, t.get("shape"))
        if not isinstance(t.get("data"), list):
            raise InvalidTensor(f"input {name!r}: data must be a list")
        try:
            arr = np.asarray(t["data"], dtype=TO_NUMPY[t["datatype"]])
        except (ValueError, TypeError, OverflowError) as e:
            raise InvalidTensor(f"input {name!r}: data is not a regular array of {t['datatype']}: {e}") from None
        if arr.size != math.prod(shape):
            raise InvalidTensor(f"input {name!r}: shape {list(shape)} needs {math.prod(shape)} values, data has {arr.size}")
        inputs[name] = arr.reshape(shape)
    wanted = body.get("outputs")
    names = None
    if isinstance(wanted, list):
        names = [o.get("name") for o in wanted if isinstance(o, dict) and isinstance(o.get("name"), str)]
    return inputs, names


async def live(request: web.Request) -> web.Response:
    return json_response({"live": True})


async def ready(request: web.Request) -> web.Response:
    return json_response({"ready": True})


async def server_metadata(request: web.Request) -> web.Response:
    return json_response({"name": "inference-mesh-gateway", "version": __version__, "extensions": []})


async def model_metadata(request: web.Request) -> web.Response:
    gw = gateway_of(request)
    name = check_model_id(request.match_info["name"])
    sig = await gw.catalogue.require_signature(name, request[DEADLINE])
    version = sig.get("version")
    return json_response({"name": name, "versions": [str(version)] if version is not None else [],
                              "platform": sig.get("platform", "onnxruntime_onnx"),
                              "inputs": _tensor_meta(sig.get("inputs")), "outputs": _tensor_meta(sig.get("outputs"))})


async def model_ready(request: web.Request) -> web.Response:
    gw = gateway_of(request)
    name = check_model_id(request.match_info["name"])
    try:
        await gw.dispatcher.candidates(name, request[DEADLINE])
    except NoWorkers as e:
        raise ModelNotReady(f"model {name!r} is not ready: {e.message}") from None
    return json_response({"name": name, "ready": True})


async def infer(request: web.Request) -> web.Response:
    gw = gateway_of(request)
    name = check_model_id(request.match_info["name"])
    deadline = request[DEADLINE]
    body = await read_json(request, gw.config.max_body_bytes)
    inputs, wanted = decode_inputs(body)
    signature = await gw.catalogue.signature(name, deadline)
    validate(name, inputs, signature)
    reply, worker = await gw.dispatcher.call(name, "infer", {"model": name, "version": None, "inputs": inputs},
                                             deadline)
    outputs = output_arrays(reply, worker)
    if wanted:
        unknown = sorted(set(wanted) - set(outputs))
        if unknown:
            raise InvalidTensor(f"model {name!r} has no outputs {unknown}; it has {sorted(outputs)}")
        outputs = {k: outputs[k] for k in wanted}
    result = []
    for k, arr in outputs.items():
        result.append({"name": k, "shape": list(arr.shape), "datatype": _datatype(dtype_name(arr.dtype)),
                       "data": arr.ravel().tolist()})
    out = {"model_name": name, "model_version": str(reply.get("version") or ""), "outputs": result}
    if isinstance(body, dict) and "id" in body:
        out["id"] = body["id"]
    return json_response(out)


ROUTES = [
    ("GET", "/v2", server_metadata, ANY),
    ("GET", "/v2/health/live", live, PUBLIC),
    ("GET", "/v2/health/ready", ready, PUBLIC),
    ("GET", "/v2/models/{name}", model_metadata, "models:read"),
    ("GET", "/v2/models/{name}/ready", model_ready, "models:read"),
    ("POST", "/v2/models/{name}/infer", infer, "infer"),
]
