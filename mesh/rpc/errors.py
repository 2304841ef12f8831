"""The RPC error tree, under mesh.errors.MeshError.

Every error has a wire-style `code` (protomux-rpc's names where one exists) and a
`message`. Errors a remote peer reported in a response subclass RemoteError;
errors raised on this side (timeout, closed channel, oversized message, a value
that will not encode) subclass the matching local MeshError, so callers can
catch either way. Conversion to and from the wire happens in `from_wire` and in
`messages.py`, nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ClosedError, DecodeError, EncodeError, MeshError, RemoteError, TimeoutError_

# codes protomux-rpc puts on the wire
UNKNOWN_METHOD = "UNKNOWN_METHOD"
REQUEST_ERROR = "REQUEST_ERROR"
DECODE_ERROR = "DECODE_ERROR"
ENCODE_ERROR = "ENCODE_ERROR"
# codes generated locally, never sent
TIMEOUT_EXCEEDED = "TIMEOUT_EXCEEDED"
CHANNEL_CLOSED = "CHANNEL_CLOSED"
CHANNEL_DESTROYED = "CHANNEL_DESTROYED"
MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
# hp-svc-facs-net's in-band JSON error ("[HRPC_ERR]=message")
HRPC_ERR = "HRPC_ERR"


class RpcError(MeshError):
    """Base of every RPC error: `code` and `message`; str() is "CODE: message"."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class RpcRemoteError(RpcError, RemoteError):
    """An error the remote peer sent in a response.

    `wire_code` is the code on the wire (UNKNOWN_METHOD, REQUEST_ERROR, ...);
    `cause_message`, `cause_code`, `context` are the optional cause fields. For a
    REQUEST_ERROR whose cause carries a code (a handler raised an exception with a
    `code` attribute, e.g. "BUSY"), `code` is that cause code and `message` the
    cause message, so callers can branch on the handler's own code.
    """

    def __init__(self, code: str, message: str, *, wire_code: str | None = None, wire_message: str | None = None,
                 cause_message: str | None = None, cause_code: str | None = None, context: str | None = None):
        super().__init__(code, message)
        self.wire_code = wire_code if wire_code is not None else code
        self.wire_message = wire_message if wire_message is not None else message
        self.cause_message = cause_message
        self.cause_code = cause_code
        self.context = context


class UnknownMethodError(RpcRemoteError):
    """The peer has no handler for the method (UNKNOWN_METHOD)."""


class RequestFailedError(RpcRemoteError):
    """The peer's handler raised (REQUEST_ERROR); see cause_message / cause_code."""


class RemoteDecodeError(RpcRemoteError):
    """The peer could not decode our request (DECODE_ERROR)."""


class RemoteEncodeError(RpcRemoteError):
    """The peer could not encode its response (ENCODE_ERROR)."""


class InbandError(RpcRemoteError):
    """An hp-svc-facs-net JSON reply "[HRPC_ERR]=message" (code HRPC_ERR)."""


class RpcTimeoutError(RpcError, TimeoutError_):
    """No response before the request's deadline (TIMEOUT_EXCEEDED)."""

    def __init__(self, message: str):
        super().__init__(TIMEOUT_EXCEEDED, message)


class ChannelClosedError(RpcError, ClosedError):
    """The channel or connection closed before the response came (CHANNEL_CLOSED)."""

    def __init__(self, message: str = "channel closed", code: str = CHANNEL_CLOSED):
        super().__init__(code, message)


class MessageTooLargeError(RpcError, EncodeError):
    """A message over the configured maximum size; it was not sent."""

    def __init__(self, message: str):
        super().__init__(MESSAGE_TOO_LARGE, message)


class ValueEncodeError(RpcError, EncodeError):
    """A value this side could not encode (ENCODE_ERROR); nothing was sent."""

    def __init__(self, message: str):
        super().__init__(ENCODE_ERROR, message)


class ValueDecodeError(RpcError, DecodeError):
    """A response value this side could not decode (DECODE_ERROR)."""

    def __init__(self, message: str):
        super().__init__(DECODE_ERROR, message)


class ProtocolError(RpcError, DecodeError):
    """The peer broke protomux's rules (e.g. "Invalid open message"); fatal for the connection."""

    def __init__(self, message: str):
        super().__init__("PROTOCOL_ERROR", message)


class DuplicateChannelError(RpcError):
    """A channel with this protocol and id is already open on the connection."""

    def __init__(self, message: str):
        super().__init__("DUPLICATE_CHANNEL", message)


class CapabilityError(RpcError):
    """The peer's capability in the channel handshake did not verify; fatal for the connection."""

    def __init__(self, message: str = "Remote sent invalid capability"):
        super().__init__("INVALID_CAPABILITY", message)


@dataclass(frozen=True, slots=True)
class WireError:
    """The error fields of a protomux-rpc response, exactly as on the wire."""
    message: str
    code: str | None = None
    cause_message: str | None = None
    cause_code: str | None = None  # "" on the wire when the cause has no code
    context: str | None = None


def unknown_method(method: str) -> WireError:
    return WireError(f"Unknown method '{method}'", UNKNOWN_METHOD)


def decode_failed(cause: str, cause_code: str | None = None) -> WireError:
    return WireError("Could not decode request", DECODE_ERROR, cause, cause_code)


def encode_failed(cause: str, cause_code: str | None = None) -> WireError:
    return WireError("Could not encode response", ENCODE_ERROR, cause, cause_code)


def busy(limit: int) -> WireError:
    return WireError("Request failed", REQUEST_ERROR, f"more than {limit} requests in progress", "BUSY")


def request_failed(exc: BaseException) -> WireError:
    """REQUEST_ERROR for a handler's exception: its message, and its `code` /
    `context` attributes when they are strings (ints are sent as text)."""
    code = getattr(exc, "code", None)
    context = getattr(exc, "context", None)
    if isinstance(exc, RpcError):
        message = exc.message
    else:
        message = str(exc) or type(exc).__name__
    return WireError("Request failed", REQUEST_ERROR, message,
                     str(code) if isinstance(code, (str, int)) and code != "" else None,
                     context if isinstance(context, str) and context else None)


_REMOTE_CLASSES = {
    UNKNOWN_METHOD: UnknownMethodError,
    REQUEST_ERROR: RequestFailedError,
    DECODE_ERROR: RemoteDecodeError,
    ENCODE_ERROR: RemoteEncodeError,
}


def from_wire(message: str, code: str | None, cause_message: str | None, cause_code: str | None,
              context: str | None) -> RpcRemoteError:
    """Build the caller-side error for a response's error fields."""
    cls = _REMOTE_CLASSES.get(code or "", RpcRemoteError)
    public_code, public_message = code or "REMOTE_ERROR", message
    if code == REQUEST_ERROR and cause_message is not None:
        public_message = cause_message
        if cause_code:
            public_code = cause_code
    return cls(public_code, public_message, wire_code=code or "", wire_message=message,
               cause_message=cause_message, cause_code=cause_code, context=context)
