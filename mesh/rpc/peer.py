"""RpcPeer: the calling side of RPC on one connection."""

from __future__ import annotations

from typing import Any

from . import codec
from .channel import RpcChannel
from .config import RpcConfig
from .session import Connection, session_for


class RpcPeer:
    """Requests and events to the RPC server at the other end of `conn`.

    The channel id is the remote public key (what @hyperswarm/rpc's client uses),
    so this talks to a Node `rpc.createServer()` or a Python RpcServer alike.
    Many requests may be in flight at once on the one channel.
    """

    def __init__(self, conn: Connection, config: RpcConfig | None = None, *, capability: bytes | None = None,
                 id: bytes | None = None):  # noqa: A002
        self.conn = conn
        self.config = config or RpcConfig()
        channel_id = id if id is not None else conn.remote_public_key
        self.channel = RpcChannel(session_for(conn), channel_id, {}, self.config, capability)
        self.closed = self.channel.closed

    @property
    def is_closed(self) -> bool:
        return self.channel.is_closed

    async def request(self, method: str, value: Any = None, *, timeout: float | None = None,
                      encoding: str | codec.Encoding | None = None, inband_errors: bool = False) -> Any:
        """Call `method`; see RpcChannel.request for the errors raised."""
        return await self.channel.request(method, value, timeout=timeout, encoding=encoding,
                                          inband_errors=inband_errors)

    def event(self, method: str, value: Any = None, *, encoding: str | codec.Encoding | None = None) -> None:
        self.channel.event(method, value, encoding=encoding)

    def close(self) -> None:
        """Close the channel (the connection stays up)."""
        self.channel.close()
