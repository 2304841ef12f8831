"""protomux-rpc message codec (sans-IO) and @hyperswarm/rpc's capability handshake.

Message type 0 = request `uint id ‖ string method ‖ value (rest)` (id 0 = event);
type 1 = response `flags ‖ uint id ‖ value (rest)` or, with flags bit0, the error
`string message ‖ [string code] ‖ [string cause message ‖ string cause code ‖
[string context]]` (RPC.md 2.2-2.3). Values stay memoryview slices of the message.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import crypto
from ..errors import DecodeError
from .errors import WireError
from .wire import Buf, enc_string, enc_uint, read_string, read_uint

PROTOCOL = "protomux-rpc"
REQUEST, RESPONSE = 0, 1

F_ERROR, F_CODE, F_CAUSE, F_CONTEXT = 1, 2, 4, 8


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    method: str
    value: memoryview


@dataclass(frozen=True, slots=True)
class Response:
    id: int
    value: memoryview | None
    error: WireError | None


def encode_request(id: int, method: str, value: Buf) -> bytes:  # noqa: A002
    m = method.encode("utf-8")
    if id <= 0xFC and len(m) <= 0xFC:
        return bytes((id, len(m))) + m + value
    return enc_uint(id) + enc_uint(len(m)) + m + value


def decode_request(payload: Buf) -> Request:
    view = payload if isinstance(payload, memoryview) else memoryview(payload)
    end = len(view)
    rid, pos = read_uint(view, 0, end)
    method, pos = read_string(view, pos, end)
    return Request(rid, method, view[pos:end])


def encode_response(id: int, value: Buf) -> bytes:  # noqa: A002
    if id <= 0xFC:
        return bytes((0, id)) + value
    return b"\x00" + enc_uint(id) + value


def encode_error_response(id: int, error: WireError) -> bytes:  # noqa: A002
    has_cause = error.cause_message is not None
    flags = F_ERROR | (F_CODE if error.code else 0) | (F_CAUSE if has_cause else 0)
    if has_cause and error.context:
        flags |= F_CONTEXT
    out = [bytes((flags,)), enc_uint(id), enc_string(error.message)]
    if error.code:
        out.append(enc_string(error.code))
    if has_cause:
        out.append(enc_string(error.cause_message or ""))
        out.append(enc_string(error.cause_code or ""))
        if error.context:
            out.append(enc_string(error.context))
    return b"".join(out)


def decode_response(payload: Buf) -> Response:
    view = payload if isinstance(payload, memoryview) else memoryview(payload)
    end = len(view)
    if end == 0:
        raise DecodeError("empty response")
    flags = view[0]
    pos = 1
    if flags > 0xFC:  # compact-encoding-bitfield's long form (never used for one byte)
        n = {0xFD: 2, 0xFE: 4, 0xFF: 8}[flags]
        if end < 1 + n:
            raise DecodeError("out of bounds reading response flags")
        flags, pos = view[1], 1 + n
    rid, pos = read_uint(view, pos, end)
    if not flags & F_ERROR:
        return Response(rid, view[pos:end], None)
    message, pos = read_string(view, pos, end)
    code = cause_message = cause_code = context = None
    if flags & F_CODE:
        code, pos = read_string(view, pos, end)
    if flags & F_CAUSE:
        cause_message, pos = read_string(view, pos, end)
        cause_code, pos = read_string(view, pos, end)
        if flags & F_CONTEXT:
            context, pos = read_string(view, pos, end)
    return Response(rid, None, WireError(message, code, cause_message, cause_code or None, context))


# ---------------------------------------------------------------- capability

CAPABILITY_NS = crypto.namespace("hyperswarm-capability", [0])[0]


def capability(is_initiator: bool, key: bytes, handshake_hash: bytes, ns: bytes = CAPABILITY_NS) -> bytes:
    """hyperswarm-capability: BLAKE2b-256(ns ‖ role byte ‖ key) keyed by the handshake hash."""
    return crypto.hash_batch([ns, b"\x01" if is_initiator else b"\x00", key], key=handshake_hash)


def encode_handshake(cap: bytes | None) -> bytes:
    """@rpc/handshake: `uint flags ‖ [fixed32 capability]`; empty when there is no capability."""
    if cap is None:
        return b""
    return b"\x01" + cap


def decode_handshake(b: bytes) -> bytes | None:
    if not b:
        raise DecodeError("missing channel handshake")
    flags, pos = read_uint(b, 0, len(b))
    if not flags & 1:
        return None
    if len(b) - pos < 32:
        raise DecodeError("short capability")
    return b[pos:pos + 32]


def verify_capability(remote_handshake: bytes | None, is_initiator: bool, key: bytes, handshake_hash: bytes,
                      ns: bytes = CAPABILITY_NS) -> bool:
    """Check the peer's capability, computed with the peer's role (not is_initiator)."""
    try:
        got = decode_handshake(remote_handshake or b"")
    except DecodeError:
        return False
    return got is not None and got == capability(not is_initiator, key, handshake_hash, ns)
