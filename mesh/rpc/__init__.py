"""RPC over secure connections, wire-compatible with @hyperswarm/rpc 3.5.0.

wire.py       offset-based compact-encoding readers (payloads stay memoryviews)
mux_codec.py  protomux frames: open, reject, close, batch, channel messages (sans-IO)
mux.py        protomux state machine: ids, pairing, buffering, batching (sans-IO)
messages.py   protomux-rpc request/response codec and the capability handshake (sans-IO)
codec.py      value encodings (msgpack with numpy, json, raw); the one msgpack importer
errors.py     the RPC error tree and its wire conversion
config.py     RpcConfig
session.py    asyncio driver of one connection's mux
channel.py    one protomux-rpc channel: requests, responses, handler tasks
server.py     RpcServer: respond()/attach(conn)
peer.py       RpcPeer: request()/event() on one connection
pool.py       RpcClient: one pooled connection per public key, linger, reconnect
pipe.py       in-memory connection pair for tests
"""

from .channel import RequestContext, current_request
from .config import RpcConfig
from .errors import (
    ChannelClosedError,
    InbandError,
    MessageTooLargeError,
    RemoteDecodeError,
    RemoteEncodeError,
    RequestFailedError,
    RpcError,
    RpcRemoteError,
    RpcTimeoutError,
    UnknownMethodError,
    ValueDecodeError,
    ValueEncodeError,
)
from .peer import RpcPeer
from .pool import RpcClient
from .server import RpcServer

__all__ = [
    "ChannelClosedError", "InbandError", "MessageTooLargeError", "RemoteDecodeError", "RemoteEncodeError",
    "RequestContext", "RequestFailedError", "RpcClient", "RpcConfig", "RpcError", "RpcPeer", "RpcRemoteError",
    "RpcServer", "RpcTimeoutError", "UnknownMethodError", "ValueDecodeError", "ValueEncodeError",
    "current_request",
]
