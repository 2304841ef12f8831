"""The inference worker's model source on a mesh: model_dir first, then peers.

    source = mesh_source(config, mesh)   # mesh: .peers(topic_key), .connection(topic_key, timeout)

A model that model_dir (LocalDirectorySource) does not know is fetched from the
model managers found on `config.manager_topic` (and any other peer this node
dialled: workers that serve the model answer `get`/`read_chunk` too) through
workers.models' NetworkModelSource, sha256-verified, into `config.fetch_dir`.
A fetch first waits (up to `fetch_timeout_s`) for the manager topic's lookup
and dials to settle, so that every manager found is asked, and, when none is
connected yet, for the first one.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from mesh.topics import topic_key

from ..errors import ModelNotFound
from .config import InferenceConfig
from .source import LocalDirectorySource, ModelFile, ModelSource


class LocalThenNetwork:
    """A ModelSource: `local` when it has the model, else `network`."""

    def __init__(self, local: ModelSource, network: Any, wait_for_peer: Callable[[], Awaitable[Any]]):
        self.local = local
        self.network = network
        self._wait_for_peer = wait_for_peer

    async def fetch(self, model_id: str, version: str | None) -> ModelFile:
        try:
            return await self.local.fetch(model_id, version)
        except ModelNotFound:
            pass
        await self._wait_for_peer()
        return await self.network.fetch(model_id, version)


def mesh_source(config: InferenceConfig, mesh: Any) -> ModelSource:
    """The worker's ModelSource: LocalDirectorySource alone without a mesh that
    has peers (or with network_models off), else LocalThenNetwork."""
    local = LocalDirectorySource(config.model_dir, config.models, require_sha256=config.require_sha256)
    peers_of = getattr(mesh, "peers", None)
    if not config.network_models or peers_of is None:
        return local
    # Imported here: workers.models imports workers.inference (ModelFile).
    from workers.models.errors import FetchError
    from workers.models.source import NetworkModelSource
    from workers.models.store import ContentStore

    managers = topic_key(config.namespace, config.manager_topic)

    def peers() -> list:
        first = peers_of(managers)
        return first + [p for p in peers_of(None) if p not in first]

    async def wait_for_peer() -> None:
        try:
            settle = getattr(mesh, "settle", None)
            if settle is not None:
                await settle(managers, config.fetch_timeout_s)
            if not peers_of(managers):
                await mesh.connection(managers, config.fetch_timeout_s)
        except asyncio.TimeoutError:
            raise FetchError(f"no model manager found on topic {config.manager_topic!r} "
                             f"in {config.fetch_timeout_s} s") from None

    store = ContentStore(config.fetch_dir, config.cache_max_bytes)
    return LocalThenNetwork(local, NetworkModelSource(store, peers, timeout=config.fetch_timeout_s), wait_for_peer)


def join_managers(config: InferenceConfig, mesh: Any) -> None:
    """Look the model managers up (client only) so that fetches have peers."""
    swarm = getattr(mesh, "swarm", None)
    if config.network_models and swarm is not None and getattr(mesh, "peers", None) is not None:
        swarm.join(topic_key(config.namespace, config.manager_topic), server=False, client=True)
