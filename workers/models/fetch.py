"""Fetch model files from peers (managers or workers that hold them), chunk by chunk.

A peer is anything with `await peer.request(method, value, timeout=...)` (a
mesh.rpc RpcPeer on a swarm connection, or an in-process double in tests). Files
land in a local ContentStore through the same verified, atomic path as uploads:
a peer that sends wrong, short or extra bytes is dropped and the next one tried.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import pathlib
from typing import Any, Callable, Protocol, Sequence

from mesh.errors import MeshError

from .errors import BadRequestError, FetchError, ModelError, NotFoundError
from .registry import ModelEntry
from .store import ContentStore, PendingFile, StoredFile, check_sha256

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20      # the most a read_chunk request may ask for
WINDOW = 4                # read_chunk requests in flight per peer
NOT_FOUND_CODES = {"MODEL_NOT_FOUND", "NOT_FOUND"}

# What makes us give up on one peer and try the next: the network or the peer's
# RPC layer failing, the peer refusing, or its bytes failing verification.
PEER_FAILURES = (MeshError, ModelError, TimeoutError, ConnectionError)


class RpcPeerLike(Protocol):
    async def request(self, method: str, value: Any, *, timeout: float) -> Any: ...


PeerList = Callable[[], Sequence[RpcPeerLike]]


async def resolve(peers: Sequence[RpcPeerLike], model_id: str, version: str | None,
                  *, timeout: float = 10.0) -> tuple[ModelEntry, RpcPeerLike]:
    """The entry for (id, version) (newest version when None) from the first peer
    that knows it, and that peer. NotFoundError if every peer that answered said
    not found; FetchError if none could answer."""
    value = {"id": model_id} if version is None else {"id": model_id, "version": version}
    failures: list[str] = []
    not_found = 0
    for peer in peers:
        try:
            return ModelEntry.from_wire(await peer.request("get", value, timeout=timeout)), peer
        except PEER_FAILURES as e:
            if getattr(e, "code", None) in NOT_FOUND_CODES:
                not_found += 1
            else:
                failures.append(f"{type(e).__name__}: {e}")
    what = model_id if version is None else f"{model_id} version {version}"
    if not_found and not failures:
        raise NotFoundError(f"no peer knows model {what}")
    raise FetchError(f"could not resolve model {what} from {len(peers)} peer(s): "
                     f"{'; '.join(failures) or 'no peers'}")


async def fetch_file(peers: Sequence[RpcPeerLike], sha256: str, size: int, store: ContentStore,
                     *, validate: Callable[[pathlib.Path], Any] | None = None,
                     timeout: float = 10.0, chunk_size: int = CHUNK_SIZE,
                     window: int = WINDOW) -> StoredFile:
    """Put the file `sha256` of `size` bytes into `store`, pulling it from the first
    peer that delivers it whole and verified. Returns the stored file; FetchError
    if no peer could."""
    sha256 = check_sha256(sha256)
    if store.has(sha256):
        return store.stat(sha256)
    failures: list[str] = []
    for peer in peers:
        pending = store.begin(sha256, size)
        try:
            await _pull(peer, pending, chunk_size, window, timeout)
            stored, _ = await asyncio.to_thread(pending.commit, validate)
            return stored
        except PEER_FAILURES as e:
            failures.append(f"{type(e).__name__}: {e}")
            log.info("fetch of %s from a peer failed, trying the next: %s", sha256, e)
        finally:
            pending.abort()
    raise FetchError(f"no peer supplied file {sha256} ({len(peers)} tried): "
                     f"{'; '.join(failures) or 'no peers'}")


async def _pull(peer: RpcPeerLike, pending: PendingFile, chunk_size: int, window: int,
                timeout: float) -> None:
    """Read the whole file from `peer` into `pending`, keeping `window` requests in
    flight and writing replies in offset order."""
    size = pending.size
    offsets = iter(range(0, size, chunk_size))

    def request(offset: int) -> asyncio.Task:
        value = {"sha256": pending.sha256, "offset": offset,
                 "length": min(chunk_size, size - offset)}
        return asyncio.ensure_future(peer.request("read_chunk", value, timeout=timeout))

    inflight: collections.deque[asyncio.Task] = collections.deque()
    try:
        for _ in range(window):
            offset = next(offsets, None)
            if offset is None:
                break
            inflight.append(request(offset))
        while inflight:
            data = chunk_data(await inflight.popleft())
            expected = min(chunk_size, size - pending.received)
            if len(data) != expected:
                raise FetchError(f"peer sent {len(data)} bytes at offset {pending.received}, "
                                 f"expected {expected}")
            pending.write(data)
            offset = next(offsets, None)
            if offset is not None:
                inflight.append(request(offset))
    finally:
        for task in inflight:
            task.cancel()
        await asyncio.gather(*inflight, return_exceptions=True)


def chunk_data(reply: Any) -> bytes:
    """The bytes of a read_chunk reply; BadRequestError if it is malformed."""
    data = reply.get("data") if isinstance(reply, dict) else None
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BadRequestError("read_chunk reply has no data bytes")
    return bytes(data)
