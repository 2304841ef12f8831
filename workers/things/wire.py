"""One RPC method, two payload conventions: msgpack, or JSON text for Node callers.

Python peers send msgpack; Node services in the hp-svc-facs-net style send
`JSON.stringify(request)` as the buffer and expect JSON text back, with errors
in-band as the JSON string "[HRPC_ERR]=<message>". A @hyperswarm/rpc method
name can have only one handler, so each CRUD method is registered with the
"raw" encoding and this wrapper picks the convention per request:

* JSON when the payload starts with `{`, `[` or JSON whitespace, or is `null`.
  Requests are objects, and msgpack starts an object (map) with 0x80-0x8f or
  0xde/0xdf, never with those bytes (RPC.md 4: sniffing is safe for top-level
  maps/arrays, not for scalars).
* msgpack otherwise; an empty payload is msgpack's "no value" (None).

JSON requests get JSON replies and in-band errors ("[HRPC_ERR]=CODE: message";
text that is not JSON gets "[HRPC_ERR]=ERR_FACS_NET_DATA_FORMAT" as hp-svc-facs-net
does). msgpack requests get msgpack replies, and errors stay WorkerErrors, which
the RPC layer sends as REQUEST_ERROR with the code as cause code.

msgpack itself enters only through the RPC codec (mesh.rpc.codec); it is
imported when the first msgpack payload arrives so that the JSON path works on
its own.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from workers.errors import InvalidInput, WorkerError

HRPC_ERR = "[HRPC_ERR]="
DATA_FORMAT = "ERR_FACS_NET_DATA_FORMAT"
_JSON_FIRST = frozenset(b"{[ \t\r\n")

Handler = Callable[[Any], Awaitable[Any]]
ErrorHook = Callable[[WorkerError], None]


def is_json(payload: bytes) -> bool:
    """True if a request payload is JSON text (see the module docstring)."""
    return bool(payload) and (payload[0] in _JSON_FIRST or payload == b"null")


def json_text(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def inband_error(err: WorkerError) -> bytes:
    """The hp-svc-facs-net reply for an error: a JSON string with the prefix."""
    return json_text(f"{HRPC_ERR}{err.code}: {err.message}")


def dual(handler: Handler, on_inband_error: ErrorHook | None = None) -> Callable[[bytes | None], Awaitable[bytes]]:
    """A raw-encoding handler that serves `handler` to msgpack and JSON callers.

    `on_inband_error` sees each error answered in-band (a JSON caller gets a
    normal reply, so the RPC layer would count it as a success).
    """

    async def serve(payload: bytes | None) -> bytes:
        payload = bytes(payload or b"")
        if not is_json(payload):
            return _pack(await handler(_unpack(payload)))
        try:
            request = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            err: WorkerError = InvalidInput(DATA_FORMAT)
            if on_inband_error is not None:
                on_inband_error(err)
            return json_text(HRPC_ERR + DATA_FORMAT)
        try:
            return json_text(await handler(request))
        except WorkerError as e:
            if on_inband_error is not None:
                on_inband_error(e)
            return inband_error(e)

    serve.__name__ = f"dual_{getattr(handler, '__name__', 'handler')}"
    return serve


def _unpack(payload: bytes) -> Any:
    if not payload:
        return None
    from mesh.rpc import codec  # the one msgpack importer

    try:
        return codec.get("msgpack").decode(memoryview(codec.frame(payload)))
    except codec.ValueDecodeError as e:
        raise InvalidInput(f"request: expected a msgpack or JSON object, got undecodable bytes ({e})") from None


def _pack(value: Any) -> bytes:
    from mesh.rpc import codec

    inner = codec.unframe(memoryview(codec.get("msgpack").encode(value)))
    return b"" if inner is None else bytes(inner)
