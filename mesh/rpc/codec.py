"""Value encodings for RPC payloads: the one module that imports msgpack.

Every encoding is wrapped in compact-encoding `optionalBuffer` framing
(`uint length ‖ bytes`, length 0 = None), @hyperswarm/rpc's default, so a Node
caller that passes plain buffers interoperates with any of them:

* "msgpack" (default for Python peers): numpy arrays travel as extension type
  0x4E whose data is msgpack `[dtype.str, shape]` followed by the raw array
  bytes; they decode with np.frombuffer over the extension bytes msgpack hands
  us (no further copy; the array is read-only).
* "json": UTF-8 JSON text (hp-svc-facs-net's convention; the same bytes as
  compact-encoding `c.json` except for null).
* "raw": bytes as they are (None <-> empty).
* "bare": bytes with no optionalBuffer framing, for Node peers that chose
  `valueEncoding: c.raw`.

Decoders raise only ValueDecodeError; encoders only ValueEncodeError.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from ..errors import DecodeError
from .errors import ValueDecodeError, ValueEncodeError
from .wire import Buf, enc_uint, read_uint

EXT_NDARRAY = 0x4E
_ALLOWED_KINDS = frozenset("biufc")  # bool, ints, uints, floats, complex: no objects, no structs
HRPC_ERR_PREFIX = "[HRPC_ERR]="


@dataclass(frozen=True)
class Encoding:
    """A named value encoding: encode(value) -> bytes, decode(memoryview) -> value."""
    name: str
    encode: Callable[[Any], bytes]
    decode: Callable[[memoryview], Any]


# ---------------------------------------------------------------- optionalBuffer

def frame(b: Buf | None) -> bytes:
    if not b:
        return b"\x00"
    return enc_uint(len(b)) + b


def unframe(view: memoryview) -> memoryview | None:
    """The optionalBuffer inside a value (trailing bytes tolerated); None for length 0."""
    try:
        n, pos = read_uint(view, 0, len(view))
    except DecodeError as e:
        raise ValueDecodeError(f"bad optionalBuffer: {e}") from None
    if n > len(view) - pos:
        raise ValueDecodeError(f"optionalBuffer of {n} bytes, {len(view) - pos} present")
    return view[pos:pos + n] if n else None


# ---------------------------------------------------------------- msgpack + numpy

# msgpack.packb builds a Packer with a 256 KiB buffer on every call (and the
# nested call for an ndarray header makes glibc map and unmap it each time):
# one Packer per thread, reused, costs a fraction. A Packer is not reentrant, so
# ndarray headers are built without it (and cached by dtype and shape). The
# caches are plain dicts and lists: a race between threads can only repeat work.
_packers = threading.local()
_CACHE_MAX = 256
# (dtype, shape) -> header bytes, for encoding
_headers: dict[tuple[np.dtype, tuple[int, ...]], bytes] = {}
# the most recently decoded headers: (header bytes, (dtype, shape, count, offset))
_recent: list[tuple[bytes, tuple[np.dtype, tuple[int, ...], int, int]]] = []
_RECENT_MAX = 8


def _packer() -> msgpack.Packer:
    p = getattr(_packers, "packer", None)
    if p is None:
        p = _packers.packer = msgpack.Packer(default=_pack_default, use_bin_type=True, autoreset=True)
    return p


def _ndarray_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    key = (dtype, shape)
    header = _headers.get(key)
    if header is None:
        header = msgpack.packb([dtype.str, list(shape)], use_bin_type=True)
        if len(_headers) >= _CACHE_MAX:
            _headers.clear()
        _headers[key] = header
    return header


def _pack_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        dtype = obj.dtype
        if dtype.kind not in _ALLOWED_KINDS:
            raise TypeError(f"numpy dtype {dtype} cannot be sent")
        # (ascontiguousarray would turn a 0-d array into a 1-d one)
        arr = obj if obj.flags.c_contiguous else np.ascontiguousarray(obj)
        data = b"".join((_ndarray_header(dtype, obj.shape), arr.reshape(-1).data))  # one copy
        return tuple.__new__(msgpack.ExtType, (EXT_NDARRAY, data))  # (ExtType's own checks hold by construction)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, memoryview):
        return obj.tobytes()
    raise TypeError(f"cannot msgpack a {type(obj).__name__}")


def _read_header(data: bytes) -> tuple[object, object, int]:
    """(dtype str, shape, offset of the array bytes) as msgpack reads them (unchecked)."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(data) or 1)
    unpacker.feed(data)
    header = unpacker.unpack()
    if not (isinstance(header, list) and len(header) == 2):
        raise DecodeError("bad ndarray header")
    return header[0], header[1], unpacker.tell()


def _parse_header(data: bytes) -> tuple[np.dtype, tuple[int, ...], int, int]:
    """(dtype, shape, element count, data offset) of an ndarray extension, checked."""
    dtype_str, shape, offset = _read_header(data)
    if not (isinstance(dtype_str, str) and isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise DecodeError("bad ndarray header")
    dtype = np.dtype(dtype_str)
    if dtype.kind not in _ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise DecodeError(f"refused ndarray dtype {dtype_str!r}")
    count = 1
    for d in shape:
        count *= d
    parsed = (dtype, tuple(shape), count, offset)
    if len(_recent) >= _RECENT_MAX:
        del _recent[-1]
    _recent.insert(0, (bytes(data[:offset]), parsed))
    return parsed


def _ext_hook(code: int, data: bytes) -> Any:
    if code != EXT_NDARRAY:
        return msgpack.ExtType(code, data)
    # A header is a complete msgpack value, so one that `data` starts with is the
    # header `data` holds: the tensors of a stream of requests skip the parse.
    for header, parsed in _recent:
        if data.startswith(header):
            break
    else:
        parsed = _parse_header(data)
    dtype, shape, count, offset = parsed
    if count * dtype.itemsize != len(data) - offset:
        raise DecodeError("ndarray shape does not match its data")
    return np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape)


def _msgpack_encode(value: Any) -> bytes:
    try:
        return frame(_packer().pack(value))
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueEncodeError(f"cannot msgpack value: {e}") from None


def _msgpack_decode(view: memoryview) -> Any:
    inner = unframe(view)
    if inner is None:
        return None
    try:
        return msgpack.unpackb(inner, ext_hook=_ext_hook, raw=False, strict_map_key=False)
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as e:
        raise ValueDecodeError(f"bad msgpack value: {e}") from None


# ---------------------------------------------------------------- json, raw

def _json_encode(value: Any) -> bytes:
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as e:
        raise ValueEncodeError(f"cannot JSON-encode value: {e}") from None
    return frame(text.encode("utf-8"))


def _json_decode(view: memoryview) -> Any:
    inner = unframe(view)
    if inner is None:
        return None
    try:
        return json.loads(str(inner, "utf-8"))
    except (ValueError, RecursionError) as e:
        raise ValueDecodeError(f"bad JSON value: {e}") from None


def _raw_encode(value: Any) -> bytes:
    if value is None:
        return b"\x00"
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ValueEncodeError(f"raw encoding needs bytes, got {type(value).__name__}")
    return frame(value)


def _raw_decode(view: memoryview) -> bytes | None:
    inner = unframe(view)
    return None if inner is None else bytes(inner)


def _bare_encode(value: Any) -> bytes:
    if value is None:
        return b""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ValueEncodeError(f"bare encoding needs bytes, got {type(value).__name__}")
    return bytes(value)


ENCODINGS: dict[str, Encoding] = {
    "msgpack": Encoding("msgpack", _msgpack_encode, _msgpack_decode),
    "json": Encoding("json", _json_encode, _json_decode),
    "raw": Encoding("raw", _raw_encode, _raw_decode),
    "bare": Encoding("bare", _bare_encode, lambda view: bytes(view)),
}


def get(encoding: str | Encoding) -> Encoding:
    """Look an encoding up by name (or pass an Encoding through)."""
    if isinstance(encoding, Encoding):
        return encoding
    try:
        return ENCODINGS[encoding]
    except KeyError:
        raise ValueError(f"unknown value encoding {encoding!r}; known: {sorted(ENCODINGS)}") from None


# ---------------------------------------------------------------- hp-svc-facs-net in-band errors

def inband_error(message: str) -> str:
    """The JSON reply hp-svc-facs-net workers send instead of a protocol error."""
    return HRPC_ERR_PREFIX + message


def inband_error_message(value: Any) -> str | None:
    """The message of an "[HRPC_ERR]=..." reply, or None if `value` is not one."""
    if isinstance(value, str) and value.startswith(HRPC_ERR_PREFIX):
        return value[len(HRPC_ERR_PREFIX):]
    return None
