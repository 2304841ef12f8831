"""RpcServer: a method table served on any number of secure connections."""

from __future__ import annotations

from typing import Any

from . import codec
from .channel import Handler, Responder, RpcChannel
from .config import RpcConfig
from .errors import DuplicateChannelError
from .messages import PROTOCOL
from .session import Connection, session_for


class RpcServer:
    """Like @hyperswarm/rpc's Server: respond()/unrespond() apply to every current
    and future connection; attach(conn) serves on a connection whose local public
    key is the server's key (the channel id, as in @hyperswarm/rpc)."""

    def __init__(self, config: RpcConfig | None = None, *, capability: bytes | None = None):
        self.config = config or RpcConfig()
        self.capability = capability
        self.responders: dict[str, Responder] = {}
        self.channels: set[RpcChannel] = set()

    def respond(self, method: str, handler: Handler, *, encoding: str | codec.Encoding | None = None,
                inband_errors: bool = False, in_task: bool = True) -> RpcServer:
        """Serve `method` with `handler(value)` (sync or async; its return value is the response).

        encoding: "msgpack" (default), "json", "raw", "bare" or a codec.Encoding.
        inband_errors: hp-svc-facs-net convention for JSON methods: a failure is
        answered with the JSON string "[HRPC_ERR]=message" instead of REQUEST_ERROR.
        in_task: an async handler carries on in a Task after its first await (the
        default). False: it carries on from the done callback of each future it
        awaits, a loop turn or two sooner per await; only for handlers that await
        asyncio futures alone and need no current task (no asyncio.timeout()).
        """
        enc = codec.get(encoding or self.config.default_encoding)
        self.responders[method] = Responder(handler, enc, inband_errors, in_task)
        return self

    def unrespond(self, method: str) -> RpcServer:
        self.responders.pop(method, None)
        return self

    def attach(self, conn: Connection, *, id: bytes | None = None) -> RpcChannel:  # noqa: A002
        """Serve this server's methods on `conn`; returns the channel (await
        channel.closed to learn when it ends). A peer that closes and reopens
        its channel is served again."""
        session = session_for(conn)
        channel_id = id if id is not None else conn.public_key

        def reopen(_id: bytes | None, _handshake: bytes) -> None:
            try:
                self._open(session, channel_id)
            except DuplicateChannelError:
                pass  # ours is still open: protomux rejects the second open



        session.on_remote_open(PROTOCOL, channel_id, reopen)
        # A Node peer's own RPC server opens its channel (id = its key) on every
        # connection, and @hyperswarm/rpc destroys the connection if that channel is
        # rejected: keep it pending until an RpcPeer on this connection pairs with it.
        remote_key = getattr(conn, "remote_public_key", None)
        if remote_key is not None and remote_key != channel_id:
            session.defer_remote_open(PROTOCOL, remote_key)
        return self._open(session, channel_id)

    def _open(self, session: Any, channel_id: bytes) -> RpcChannel:
        ch = RpcChannel(session, channel_id, self.responders, self.config, self.capability)
        self.channels.add(ch)
        ch.closed.add_done_callback(lambda _f: self.channels.discard(ch))
        return ch
