"""The inference worker's model source on a mesh: model_dir first, then peers.

    source = mesh_source(config, mesh)   # mesh: .peers(topic_key), .connection(topic_key, timeout)

A model that model_dir (LocalDirectorySource) does not know is fetched from the
model managers found on `config.manager_topic`, then from the workers that
serve it (found by looking up the model's own topic as a client; they answer
`get`/`read_chunk` too), then any other peer this node dialled, through
workers.models' NetworkModelSource, sha256-verified, into `config.fetch_dir`.
A fetch first waits (up to `fetch_timeout_s`) for those lookups and dials to
settle, so that every peer found is asked, and, when no manager or worker is
connected yet, for a first manager. A model topic looked up only for a fetch is
left again if the fetch fails (once the model loads, the worker announces it).
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from mesh.topics import topic_key

from ..errors import ModelNotFound
from .config import InferenceConfig
from .source import LocalDirectorySource, ModelFile, ModelSource


class LocalThenNetwork:
    """A ModelSource: `local` when it has the model, else `network`, after
    `prepare(model_id)` has found peers; `done(model_id, ok)` follows the fetch."""

    def __init__(self, local: ModelSource, network: Any, prepare: Callable[[str], Awaitable[Any]],
                 done: Callable[[str, bool], Awaitable[Any]]):
        self.local = local
        self.network = network
        self._prepare = prepare
        self._done = done

    async def fetch(self, model_id: str, version: str | None) -> ModelFile:
        try:
            return await self.local.fetch(model_id, version)
        except ModelNotFound:
            pass
        ok = False
        try:
            await self._prepare(model_id)
            found = await self.network.fetch(model_id, version)
            ok = True
            return found
        finally:
            await self._done(model_id, ok)


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
    settle = getattr(mesh, "settle", None)
    look_up = getattr(mesh, "look_up", None)
    forget = getattr(mesh, "forget", None)
    looked_up: set[bytes] = set()

    def peers() -> list:
        order = peers_of(managers)
        for topic in looked_up:
            order += [p for p in peers_of(topic) if p not in order]
        return order + [p for p in peers_of(None) if p not in order]

    async def prepare(model_id: str) -> None:
        model_topic = topic_key(config.namespace, model_id)
        if look_up is not None and look_up(model_topic):
            looked_up.add(model_topic)
        try:
            if settle is not None:
                await settle(managers, config.fetch_timeout_s)
                await settle(model_topic, config.fetch_timeout_s)
            if not peers():
                await mesh.connection(managers, config.fetch_timeout_s)
        except asyncio.TimeoutError:
            raise FetchError(f"no model manager or worker with model {model_id!r} found in "
                             f"{config.fetch_timeout_s} s") from None

    async def done(model_id: str, ok: bool) -> None:
        model_topic = topic_key(config.namespace, model_id)
        if model_topic in looked_up:
            looked_up.discard(model_topic)
            if not ok and forget is not None:
                await forget(model_topic)

    store = ContentStore(config.fetch_dir, config.cache_max_bytes)
    return LocalThenNetwork(local, NetworkModelSource(store, peers, timeout=config.fetch_timeout_s), prepare, done)


def join_managers(config: InferenceConfig, mesh: Any) -> None:
    """Look the model managers up (client only) so that fetches have peers."""
    swarm = getattr(mesh, "swarm", None)
    if config.network_models and swarm is not None and getattr(mesh, "peers", None) is not None:
        swarm.join(topic_key(config.namespace, config.manager_topic), server=False, client=True)
