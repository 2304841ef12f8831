"""The inference worker's ModelSource for the network.

    source = NetworkModelSource(ContentStore(cache_dir, max_size), peers)
    model_file = await source.fetch(model_id, version)   # workers.inference.source.ModelFile

`peers()` returns the RPC peers to ask now: model managers on the model-manager
topic, or workers that serve the model (any peer answering `get` and
`read_chunk`). The file is downloaded chunk by chunk into the local store,
sha256-verified and ONNX-checked, trying the next peer on failure.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable

from workers.inference.source import ModelFile

from .fetch import CHUNK_SIZE, WINDOW, PeerList, RpcPeerLike, fetch_file, resolve
from .library import validator
from .registry import ModelEntry
from .store import ContentStore, StoredFile


class NetworkModelSource:
    """A ModelSource that fetches models from peers into a local store.

    `peers()` returns the RPC peers to ask now (model managers, or workers that
    serve the model). Concurrent fetches of the same file share one download.
    """

    def __init__(self, store: ContentStore, peers: PeerList, *, timeout: float = 10.0,
                 chunk_size: int = CHUNK_SIZE, window: int = WINDOW):
        self.store = store
        self.peers = peers
        self.timeout = timeout
        self.chunk_size = chunk_size
        self.window = window
        self._downloads: dict[str, asyncio.Future[StoredFile]] = {}
        self._resolved: dict[tuple[str, str], ModelEntry] = {}

    async def fetch(self, model_id: str, version: str | None) -> ModelFile:
        """The model's file in the local store, downloading it first if needed.
        NotFoundError (a ModelNotFound) when no peer knows the model, FetchError when
        none could supply it.
        A given (id, version) names fixed content, so once resolved and stored it is
        served from the local store without asking the network again."""
        known = self._resolved.get((model_id, version)) if version is not None else None
        if known is not None and self.store.has(known.sha256):
            return _model_file(known, self.store.stat(known.sha256))
        peers = list(self.peers())
        entry, holder = await resolve(peers, model_id, version, timeout=self.timeout)
        stored = await self._download(entry, [holder] + [p for p in peers if p is not holder])
        self._resolved[(entry.id, entry.version)] = entry
        return _model_file(entry, stored)

    def _download(self, entry: ModelEntry, peers: list[RpcPeerLike]) -> Awaitable[StoredFile]:
        running = self._downloads.get(entry.sha256)
        if running is None:
            running = asyncio.ensure_future(fetch_file(
                peers, entry.sha256, entry.size, self.store, validate=validator(entry.type),
                timeout=self.timeout, chunk_size=self.chunk_size, window=self.window))
            self._downloads[entry.sha256] = running
            running.add_done_callback(lambda _: self._downloads.pop(entry.sha256, None))
        return asyncio.shield(running)


def _model_file(entry: ModelEntry, stored: StoredFile) -> ModelFile:
    return ModelFile(entry.id, entry.version, stored.path, stored.sha256, stored.size)
