"""RPC peers on the swarm's live connections, for `peers()` of the replicator and
of NetworkModelSource.

    peers = ConnectionPeers(make_peer=RpcPeer)      # mesh.rpc.RpcPeer
    swarm.on_connection(peers.on_connection)
    ModelManager(config, peers=peers)               # peers() -> current RPC peers

A connection is dropped when its `closed` future completes. Connections to peers
that are not model managers are harmless: they answer registry_snapshot with
UNKNOWN_METHOD and the replicator skips them.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from .fetch import RpcPeerLike


class ConnectionPeers:
    def __init__(self, make_peer: Callable[[Any], RpcPeerLike]):
        self._make_peer = make_peer
        self._peers: dict[int, RpcPeerLike] = {}

    def on_connection(self, conn: Any, peer_info: Any = None) -> None:
        """Swarm connection callback: track an RPC peer on `conn` until it closes."""
        key = id(conn)
        self._peers[key] = self._make_peer(conn)
        closed = getattr(conn, "closed", None)
        if isinstance(closed, asyncio.Future):
            closed.add_done_callback(lambda _: self._peers.pop(key, None))

    def __call__(self) -> list[RpcPeerLike]:
        return list(self._peers.values())
