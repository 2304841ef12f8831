"""RPC configuration: one frozen dataclass, built at the edge."""

from __future__ import annotations

from dataclasses import dataclass

# secret-stream refuses atomic writes above 2^24 - 1 - 17 bytes (RPC.md 1.1)
SECRET_STREAM_MAX_MESSAGE = (1 << 24) - 1 - 17


@dataclass(frozen=True)
class RpcConfig:
    """Limits and defaults for RPC channels.

    max_message_size: largest protomux message (request or response) we send or
        accept; bigger ones get MESSAGE_TOO_LARGE and never reach the wire or a
        handler. At most secret-stream's atomic write limit.
    default_timeout: seconds a request waits when the call gives no timeout
        (None = forever, like @hyperswarm/rpc).
    default_encoding: value encoding when a call or respond() names none.
    pool_linger: seconds RpcClient keeps an idle pooled connection (Node: 10 s).
    max_handlers: handler tasks one channel may run at once; requests beyond it are
        answered at once with REQUEST_ERROR, cause code BUSY (a flood cannot pile up tasks).
    """

    max_message_size: int = SECRET_STREAM_MAX_MESSAGE
    default_timeout: float | None = None
    default_encoding: str = "msgpack"
    pool_linger: float = 10.0
    max_handlers: int = 4096

    def __post_init__(self) -> None:
        if not 64 <= self.max_message_size <= SECRET_STREAM_MAX_MESSAGE:
            raise ValueError(f"max_message_size must be in 64..{SECRET_STREAM_MAX_MESSAGE}")
        if self.max_handlers < 1:
            raise ValueError("max_handlers must be >= 1")
        if self.pool_linger < 0:
            raise ValueError("pool_linger must be >= 0")
