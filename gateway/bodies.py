"""Reading request bodies into tensors or JSON, with clear 4xx errors."""

from __future__ import annotations

import numpy as np
from aiohttp import web

from . import jsonio, tensors
from .errors import InvalidTensor, MalformedJSON, PayloadTooLarge, UnsupportedMediaType, WorkerFailed
from .jsonio import json_response

JSON = jsonio.JSON


def check_length(request: web.Request, limit: int) -> None:
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body of {request.content_length} bytes is larger than the limit of {limit} bytes")


async def read_json(request: web.Request, limit: int) -> object:
    """The JSON body; 415 if it is not application/json, 400 if it does not parse."""
    if request.content_type != JSON:
        raise UnsupportedMediaType(f"content type must be {JSON}, got {request.content_type!r}")
    check_length(request, limit)
    raw = await request.read()
    try:
        return jsonio.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedJSON(f"body is not valid JSON: {e}") from None


async def read_inputs(request: web.Request, limit: int, signature: dict | None) -> dict[str, np.ndarray]:
    """The input tensors of an inference request in any of the three encodings (see tensors.py)."""
    ctype = request.content_type
    if ctype == JSON:
        return tensors.inputs_from_json(await read_json(request, limit))
    if ctype not in (tensors.OCTET_STREAM, tensors.MESH_TENSORS):
        raise UnsupportedMediaType(f"content type must be {JSON}, {tensors.OCTET_STREAM} or "
                                   f"{tensors.MESH_TENSORS}, got {ctype!r}")
    check_length(request, limit)
    raw = await request.read()
    if ctype == tensors.MESH_TENSORS:
        return tensors.decode_multi(raw)
    name = request.headers.get("X-Tensor-Name")
    if name is None:
        inputs = (signature or {}).get("inputs") or []
        if len(inputs) != 1:
            raise InvalidTensor("X-Tensor-Name is required unless the model has exactly one input")
        name = inputs[0]["name"]
    return {name: tensors.from_raw(name, request.headers.get("X-Tensor-Shape"),
                                   request.headers.get("X-Tensor-Dtype"), raw)}


def output_arrays(reply: object, worker: str) -> dict[str, np.ndarray]:
    """The numeric output arrays of a worker's infer reply; WorkerFailed if it has none or odd ones."""
    outputs = reply.get("outputs") if isinstance(reply, dict) else None
    if not isinstance(outputs, dict):
        raise WorkerFailed(f"worker {worker} replied without outputs")
    arrays = {str(k): np.asarray(v) for k, v in outputs.items()}
    odd = sorted(k for k, a in arrays.items() if a.dtype.kind not in "biuf")
    if odd:
        raise WorkerFailed(f"worker {worker} returned non-numeric outputs {odd}")
    return arrays


def outputs_response(request: web.Request, model: str, reply: dict, worker: str) -> web.Response:
    """The reply's outputs as JSON, or raw when the client Accepts a raw encoding."""
    arrays = output_arrays(reply, worker)
    accept = request.headers.get("Accept", "")
    if tensors.MESH_TENSORS in accept:
        return web.Response(body=tensors.encode_multi(arrays), content_type=tensors.MESH_TENSORS)
    if tensors.OCTET_STREAM in accept and len(arrays) == 1:
        (name, arr), = arrays.items()
        arr = tensors.little_endian(arr)
        return web.Response(body=arr.tobytes(), content_type=tensors.OCTET_STREAM, headers={
            "X-Tensor-Name": name, "X-Tensor-Shape": ",".join(map(str, arr.shape)),
            "X-Tensor-Dtype": tensors.dtype_name(arr.dtype)})
    body = {"model": model, "version": reply.get("version"), "worker": worker,
            "outputs": {k: tensors.to_json(a) for k, a in arrays.items()}}
    return json_response(body)
