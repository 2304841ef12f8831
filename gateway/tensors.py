"""Tensors in and out of HTTP bodies: JSON, one raw tensor, and a multi-tensor raw format.

JSON tensor: {"shape": [1, 64], "dtype": "float32", "data": [...]} (flat or nested data).
Raw, one tensor: body = the C-order little-endian bytes; headers X-Tensor-Name,
X-Tensor-Shape ("1,64") and X-Tensor-Dtype ("float32"); content type
application/octet-stream.
Raw, several tensors (content type application/x-mesh-tensors): a 4-byte big-endian
length N, N bytes of UTF-8 JSON {"tensors": [{"name", "shape", "dtype"}, ...]}, then each
tensor's bytes in that order, back to back.
Every decoder raises InvalidTensor with a message naming the tensor and what is wrong.
"""

from __future__ import annotations

import math
import struct
from typing import Any, Mapping

import numpy as np

from . import jsonio
from .errors import InvalidTensor

DTYPES = ("bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
          "float16", "float32", "float64")
MESH_TENSORS = "application/x-mesh-tensors"
OCTET_STREAM = "application/octet-stream"
MAX_RANK = 16
# numpy's dtype.name is slow (tens of microseconds); look names up instead
_NAMES = {np.dtype(d): d for d in DTYPES}
_NAMES.update({np.dtype(d).newbyteorder(">"): d for d in DTYPES})


def dtype_name(dtype: np.dtype) -> str:
    name = _NAMES.get(dtype)
    return name if name is not None else dtype.name


_LITTLE = {d: np.dtype(d).newbyteorder("<") for d in DTYPES}


def check_dtype(name: str, dtype: object) -> np.dtype:
    found = _LITTLE.get(dtype) if isinstance(dtype, str) else None
    if found is None:
        raise InvalidTensor(f"tensor {name!r}: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    return found


def check_shape(name: str, shape: object) -> tuple[int, ...]:
    if not isinstance(shape, (list, tuple)) or len(shape) > MAX_RANK or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidTensor(f"tensor {name!r}: shape must be a list of at most {MAX_RANK} non-negative integers, got {shape!r}")
    return tuple(shape)


def from_json(name: str, spec: object) -> np.ndarray:
    """The array of one JSON tensor spec {"shape", "dtype", "data"}."""
    if not isinstance(spec, dict):
        raise InvalidTensor(f"tensor {name!r}: expected an object with shape, dtype and data")
    missing = [k for k in ("shape", "dtype", "data") if k not in spec]
    if missing:
        raise InvalidTensor(f"tensor {name!r}: missing {', '.join(missing)}")
    dtype = check_dtype(name, spec["dtype"])
    shape = check_shape(name, spec["shape"])
    data = spec["data"]
    if not isinstance(data, list):
        raise InvalidTensor(f"tensor {name!r}: data must be a list of numbers")
    try:
        arr = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as e:
        raise InvalidTensor(f"tensor {name!r}: data is not a regular array of {spec['dtype']}: {e}") from None
    expected = math.prod(shape)
    if arr.size != expected:
        raise InvalidTensor(f"tensor {name!r}: shape {list(shape)} needs {expected} values, data has {arr.size}")
    return arr.reshape(shape)


def inputs_from_json(body: object) -> dict[str, np.ndarray]:
    """The inputs of a JSON inference body {"inputs": {name: spec}}."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), dict) or not body["inputs"]:
        raise InvalidTensor('body must be an object {"inputs": {name: {"shape", "dtype", "data"}}} with at least one input')
    return {str(name): from_json(str(name), spec) for name, spec in body["inputs"].items()}


def to_json(arr: np.ndarray) -> dict:
    arr = np.asarray(arr)
    return {"shape": list(arr.shape), "dtype": dtype_name(arr.dtype), "data": arr.ravel().tolist()}


def from_raw(name: str, shape_header: str | None, dtype_header: str | None, data: bytes) -> np.ndarray:
    """One raw tensor from its bytes and X-Tensor-Shape / X-Tensor-Dtype headers."""
    if not shape_header or not dtype_header:
        raise InvalidTensor("raw tensor needs X-Tensor-Shape (e.g. 1,64) and X-Tensor-Dtype (e.g. float32) headers")
    try:
        shape = [int(d) for d in shape_header.replace(" ", "").split(",") if d != ""]
    except ValueError:
        raise InvalidTensor(f"tensor {name!r}: X-Tensor-Shape {shape_header!r} is not comma-separated integers") from None
    return _frombytes(name, check_shape(name, shape), check_dtype(name, dtype_header), data)


def _frombytes(name: str, shape: tuple[int, ...], dtype: np.dtype, data: bytes | memoryview) -> np.ndarray:
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise InvalidTensor(f"tensor {name!r}: shape {list(shape)} of {dtype.name} needs {expected} bytes, got {len(data)}")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def decode_multi(body: bytes) -> dict[str, np.ndarray]:
    """Tensors of an application/x-mesh-tensors body."""
    if len(body) < 4:
        raise InvalidTensor("x-mesh-tensors body shorter than its 4-byte header length")
    (n,) = struct.unpack_from(">I", body)
    if 4 + n > len(body):
        raise InvalidTensor(f"x-mesh-tensors header length {n} runs past the body ({len(body)} bytes)")
    try:
        header = jsonio.loads(body[4:4 + n])
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidTensor(f"x-mesh-tensors header is not JSON: {e}") from None
    specs = header.get("tensors") if isinstance(header, dict) else None
    if not isinstance(specs, list) or not specs:
        raise InvalidTensor('x-mesh-tensors header must be {"tensors": [{"name", "shape", "dtype"}, ...]}')
    view, offset, out = memoryview(body), 4 + n, {}
    for spec in specs:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise InvalidTensor("each x-mesh-tensors entry needs a name, shape and dtype")
        name = spec["name"]
        shape, dtype = check_shape(name, spec.get("shape")), check_dtype(name, spec.get("dtype"))
        size = math.prod(shape) * dtype.itemsize
        out[name] = _frombytes(name, shape, dtype, view[offset:offset + size])
        offset += size
    if offset != len(body):
        raise InvalidTensor(f"x-mesh-tensors body has {len(body) - offset} bytes after its last tensor")
    return out


def little_endian(arr) -> np.ndarray:
    """`arr` as little-endian (tobytes() then gives C-order bytes; 0-d arrays stay 0-d)."""
    arr = np.asarray(arr)
    return arr.astype(arr.dtype.newbyteorder("<"), copy=False)


def encode_multi(tensors: Mapping[str, np.ndarray]) -> bytes:
    """An application/x-mesh-tensors body of `tensors`."""
    arrays = {k: little_endian(v) for k, v in tensors.items()}
    header = jsonio.dumps({"tensors": [{"name": k, "shape": list(a.shape), "dtype": dtype_name(a.dtype)}
                                       for k, a in arrays.items()]})
    return b"".join([struct.pack(">I", len(header)), header, *(a.tobytes() for a in arrays.values())])


def validate(model: str, inputs: Mapping[str, np.ndarray], signature: Mapping[str, Any] | None) -> None:
    """Check `inputs` against a model signature's inputs ([{"name", "dtype", "shape"}]).

    Shape entries that are None, negative or strings are free dimensions. Without a
    signature nothing is checked here (the worker checks).
    """
    if not signature or not isinstance(signature.get("inputs"), list):
        return
    wanted = {i["name"]: i for i in signature["inputs"] if isinstance(i, dict) and "name" in i}
    unknown = sorted(set(inputs) - set(wanted))
    missing = sorted(set(wanted) - set(inputs))
    if unknown or missing:
        raise InvalidTensor(f"model {model!r} takes inputs {sorted(wanted)}; missing {missing}, unknown {unknown}")
    for name, arr in inputs.items():
        spec = wanted[name]
        if spec.get("dtype") and dtype_name(arr.dtype) != spec["dtype"]:
            raise InvalidTensor(f"input {name!r} of model {model!r} must be {spec['dtype']}, got {dtype_name(arr.dtype)}")
        dims = spec.get("shape")
        if not isinstance(dims, list):
            continue
        if len(dims) != arr.ndim or any(isinstance(d, int) and d >= 0 and d != a for d, a in zip(dims, arr.shape)):
            shown = [d if isinstance(d, int) and d >= 0 else -1 for d in dims]
            raise InvalidTensor(f"input {name!r} of model {model!r} must have shape {shown} (-1: any), got {list(arr.shape)}")
