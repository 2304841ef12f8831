"""`InferenceWorker`: serves ONNX models over RPC and announces a topic per model.

RPC methods (msgpack; tensors are numpy arrays):

    infer        {"model": id, "version": optional, "inputs": {name: ndarray}}
                 -> {"outputs": {name: ndarray}, "model", "version", "batch_size"}
                 ("batch_size" is the number of rows in the run that served it)
    load_model   {"model": id, "version": optional} -> the model's description
    unload_model {"model": id, "version": optional} -> {"model", "versions": [...]}
    models       -> {"models": [description, ...]}
    capacity     -> {"state", "available", "running", "queued", "max_concurrent",
                     "max_queue", "models": [{"model", "version", ...load}]}
    stats        -> {"models": {"<id>@<version>": {...counts, histograms}}, "cache": {...}}
    get          {"id" or "model": id, "version": optional} -> the model-manager entry
                 of a loaded model (id, version, type, sha256, size, inputs, outputs, ...)
    read_chunk   {"sha256", "offset", "length" <= 1 MiB} -> {"data": bytes, "size"}
                 (get and read_chunk let other workers fetch a model file from this one)

A model is loaded by id and version from a `ModelSource`; the worker hashes the
bytes it loads and refuses them (CHECKSUM_MISMATCH) unless they match the
source's digest and the sha256 pinned in topics.toml. While any version of a
model is loaded, the worker announces topic_key(namespace, model_id); it
leaves the topic when the last version is unloaded or evicted from the LRU.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mesh import eventloop

from ..base import Worker
from ..errors import ChecksumMismatch, InvalidInput, ModelNotFound, ModelNotLoaded, ModelTooLarge, WorkerError
from ..logging import BoundLogger
from .batcher import Dispatcher, RunExecutor, ServingConfig
from .cache import SessionCache
from .config import InferenceConfig
from .files import chunk_request, read_chunk
from .runner import Session, open_session, prepare_providers
from .source import LocalDirectorySource, ModelSource
from .stats import InferenceStats
from .validate import validate_inputs

Key = tuple[str, str]
UNRESOLVED = "-"  # stats label for requests naming no loadable model (bounded cardinality)


@dataclass(eq=False)
class LoadedModel:
    model_id: str
    version: str
    sha256: str
    size: int
    session: Session
    dispatcher: Dispatcher
    serving: ServingConfig
    path: Path
    loaded_at: float

    @property
    def label(self) -> str:
        return f"{self.model_id}@{self.version}"

    def describe(self) -> dict[str, Any]:
        return {"model": self.model_id, "version": self.version, "sha256": self.sha256, "size": self.size,
                "inputs": [s.to_dict() for s in self.session.inputs],
                "outputs": [s.to_dict() for s in self.session.outputs],
                "providers": list(self.session.providers), "batching": self.dispatcher.batching,
                "max_batch_size": self.serving.max_batch_size, "max_concurrent": self.serving.max_concurrent,
                "max_queue": self.serving.max_queue}

    def entry(self) -> dict[str, Any]:
        """The model-manager entry format (workers.models.registry.ModelEntry wire)."""
        return {"id": self.model_id, "version": self.version, "type": "onnx", "sha256": self.sha256,
                "size": self.size, "inputs": [s.to_dict() for s in self.session.inputs],
                "outputs": [s.to_dict() for s in self.session.outputs], "created": self.loaded_at, "tags": []}


class InferenceWorker(Worker):
    role = "workers.inference"

    def __init__(self, config: InferenceConfig, source: ModelSource | None = None, *,
                 log: BoundLogger | None = None):
        super().__init__(config, log=log)
        self.config: InferenceConfig = config
        self.source = source or LocalDirectorySource(config.model_dir, config.models,
                                                     require_sha256=config.require_sha256)
        self.stats = InferenceStats(self.registry)
        self._cache: SessionCache[Key, LoadedModel] = SessionCache(config.cache_max_models, config.cache_max_bytes)
        self._latest: dict[str, str] = {}
        self._loading: dict[tuple[str, str | None], asyncio.Task] = {}
        self._retiring: set[asyncio.Task] = set()
        self._executor: RunExecutor | None = None
        self.registry.gauge("models_loaded", "models in the session cache", (),
                            lambda: {(): float(len(self._cache))})
        self.registry.gauge("cache_bytes", "model bytes in the session cache", (),
                            lambda: {(): float(self._cache.total_bytes)})
        self.registry.gauge("inference_queued", "requests waiting per model", ("model",),
                            lambda: {(m.label,): float(m.dispatcher.load()["queued"]) for m in self._cache.values()})
        self.registry.gauge("inference_running", "runs in flight per model", ("model",),
                            lambda: {(m.label,): float(m.dispatcher.load()["running"]) for m in self._cache.values()})
        self.registry.gauge("model_provider", "1 per loaded model and the execution provider it runs on first "
                            "(CUDAExecutionProvider: on the GPU)", ("model", "provider"),
                            lambda: {(m.label, m.session.providers[0]): 1.0 for m in self._cache.values()})
        # infer awaits only futures (the batcher's, or a load's task): it carries on
        # from their callbacks, a loop turn or two sooner than in a task of its own
        self.method("infer", self.rpc_infer, in_task=False)
        for name in ("capacity", "load_model", "unload_model", "models", "stats", "get", "read_chunk"):
            self.method(name, getattr(self, f"rpc_{name}"))

    # ------------------------------------------------------------ lifecycle

    async def on_start(self) -> None:
        # On the loop thread, blocking it once: prepare_providers captures stdout
        # while it loads the CUDA libraries, and no event may be printed meanwhile.
        notes = prepare_providers(self.config.runner())
        if notes:
            self.log.warning("onnxruntime could not load every CUDA library", extra={"detail": notes})
        self._executor = RunExecutor(self.config.executor_threads, thread_name_prefix="onnx")
        self._unpause_polling = eventloop.pause_busy_poll_while(self._executor.busy)
        if self.config.pool_topic:
            await self.join(self.config.pool_topic)
        serve = self.config.serve or (tuple(m.id for m in self.config.models if m.role == self.role)
                                      if self.config.preload else ())
        for model_id in dict.fromkeys(serve):
            m = self.config.model(model_id)
            await self.load(model_id, m.version if m else None)

    async def on_stop(self) -> None:
        for loaded in self._cache.values():
            await loaded.dispatcher.close()
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        if self._executor is not None:
            self._unpause_polling()
            self._executor.shutdown(wait=True)

    def health_details(self) -> dict[str, Any]:
        return {"models": [m.label for m in self._cache.values()], "cache_bytes": self._cache.total_bytes}

    # ------------------------------------------------------------ models

    def loaded(self, model_id: str, version: str | None = None) -> LoadedModel | None:
        """The loaded model (newest loaded version when `version` is None), marked used."""
        version = version if version is not None else self._latest.get(model_id)
        return None if version is None else self._cache.get((model_id, version))

    async def load(self, model_id: str, version: str | None = None) -> LoadedModel:
        """Load (or find loaded) a model; concurrent loads of the same one share the work."""
        found = self.loaded(model_id, version)
        if found is not None:
            return found
        key = (model_id, version)
        task = self._loading.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(model_id, version))
            self._loading[key] = task
            task.add_done_callback(lambda _t, key=key: self._loading.pop(key, None))
        return await asyncio.shield(task)

    async def _load(self, model_id: str, version: str | None) -> LoadedModel:
        t0 = time.perf_counter()
        file = await self.source.fetch(model_id, version)
        found = self._cache.get((model_id, file.version))
        if found is not None:
            return found
        if file.size > self._cache.max_bytes:
            raise ModelTooLarge(f"model {model_id!r} ({file.size} bytes) exceeds the cache bound of "
                                f"{self._cache.max_bytes} bytes", details={"expected": self._cache.max_bytes})
        data, digest = await asyncio.to_thread(_read_and_hash, file.path)
        pinned = self.config.model(model_id, file.version)
        for expected in {file.sha256, pinned.sha256 if pinned and pinned.sha256 else file.sha256}:
            if digest != expected.lower():
                raise ChecksumMismatch(f"model {model_id!r} version {file.version!r}: expected sha256 "
                                       f"{expected}, got {digest}", details={"expected": expected, "got": digest})
        session = await asyncio.to_thread(open_session, data, self.config.runner(), str(file.path))
        serving = self.config.serving(model_id, file.version)
        label = f"{model_id}@{file.version}"
        loaded = LoadedModel(model_id, file.version, digest, len(data), session,
                             Dispatcher(label, session, serving, self._executor, self.stats), serving,
                             Path(file.path), time.time())
        for _key, old in self._cache.put((model_id, file.version), loaded, len(data)):
            self._retire(old, reason="evicted")
        self._latest[model_id] = file.version
        await self.join(model_id)
        self.log.info("model loaded", extra={"model": model_id, "version": file.version, "bytes": len(data),
                                             "batching": loaded.dispatcher.batching,
                                             "providers": list(session.providers),
                                             "ms": round(1000 * (time.perf_counter() - t0), 1)})
        return loaded

    def _retire(self, old: LoadedModel, reason: str) -> None:
        """Forget `old` now; drain its queue and leave its topic in the background."""
        if self._latest.get(old.model_id) == old.version:
            remaining = [v for (i, v) in self._cache.keys() if i == old.model_id]
            if remaining:
                self._latest[old.model_id] = remaining[-1]
            else:
                del self._latest[old.model_id]
        task = asyncio.get_running_loop().create_task(self._drain_and_leave(old, reason))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _drain_and_leave(self, old: LoadedModel, reason: str) -> None:
        await old.dispatcher.close()
        if old.model_id not in self._latest:
            await self.leave(old.model_id)
        self.log.info("model unloaded", extra={"model": old.model_id, "version": old.version, "reason": reason})

    async def unload(self, model_id: str, version: str | None = None) -> list[str]:
        """Unload one version (or all versions) of a model; returns the versions unloaded."""
        keys = [(i, v) for (i, v) in self._cache.keys() if i == model_id and version in (None, v)]
        if not keys:
            raise ModelNotLoaded(f"model {model_id!r}" + (f" version {version!r}" if version else "")
                                 + " is not loaded")
        retired = []
        for key in keys:
            old = self._cache.pop(key)
            self._retire(old, reason="unloaded")
            retired.append(old)
        await asyncio.gather(*[old.dispatcher.close() for old in retired])
        if model_id not in self._latest:
            await self.leave(model_id)
        return [v for _, v in keys]

    async def _resolve(self, model_id: str, version: str | None) -> LoadedModel:
        found = self.loaded(model_id, version)
        if found is not None:
            return found
        if not self.config.lazy_load:
            raise ModelNotLoaded(f"model {model_id!r} is not loaded on this worker")
        # in a task of its own: `infer` runs outside any task (in_task=False below),
        # and loading may fetch the file over the network with timeouts
        return await asyncio.ensure_future(self.load(model_id, version))

    # ------------------------------------------------------------ RPC methods

    async def rpc_infer(self, value: Any) -> dict[str, Any]:
        t0 = time.perf_counter()
        label = UNRESOLVED
        try:
            model_id, version = _model_ref(value)
            loaded = self.loaded(model_id, version) or await self._resolve(model_id, version)
            label = loaded.label
            feeds, rows = validate_inputs(loaded.session.inputs, value.get("inputs"),
                                          max_rows=self.config.max_request_rows)
            outputs, batch_rows = await loaded.dispatcher.submit(feeds, rows)
        except WorkerError as e:
            self.stats.requests.inc(label, e.code)
            raise
        self.stats.requests.inc(label, "OK")
        self.stats.total_s.observe(time.perf_counter() - t0, label)
        return {"outputs": outputs, "model": loaded.model_id, "version": loaded.version, "batch_size": batch_rows}

    async def rpc_load_model(self, value: Any) -> dict[str, Any]:
        model_id, version = _model_ref(value)
        return (await self.load(model_id, version)).describe()

    async def rpc_unload_model(self, value: Any) -> dict[str, Any]:
        model_id, version = _model_ref(value)
        return {"model": model_id, "versions": await self.unload(model_id, version)}

    async def rpc_models(self, value: Any = None) -> dict[str, Any]:
        return {"models": [m.describe() for m in self._cache.values()]}

    async def rpc_capacity(self, value: Any = None) -> dict[str, Any]:
        per_model = [{"model": m.model_id, "version": m.version, **m.dispatcher.load()}
                     for m in self._cache.values()]
        total = {k: sum(p[k] for p in per_model) for k in ("running", "queued", "max_concurrent", "max_queue")}
        available = self.state == "serving" and (
            not per_model or any(p["running"] < p["max_concurrent"] or p["queued"] < p["max_queue"]
                                 for p in per_model))
        return {"state": self.state, "available": available, **total, "models": per_model,
                "max_request_rows": self.config.max_request_rows}

    async def rpc_stats(self, value: Any = None) -> dict[str, Any]:
        labels = sorted({labels[0] for labels in self.stats.requests.values} |
                        {m.label for m in self._cache.values()})
        return {"models": {label: self.stats.snapshot(label) for label in labels},
                "cache": {"models": len(self._cache), "bytes": self._cache.total_bytes,
                          "evictions": self._cache.evictions, "max_models": self._cache.max_models,
                          "max_bytes": self._cache.max_bytes}}

    async def rpc_get(self, value: Any) -> dict[str, Any]:
        """The entry of a loaded model, so peers can fetch its file from this worker."""
        if isinstance(value, Mapping) and "model" not in value and "id" in value:
            value = {**value, "model": value["id"]}
        model_id, version = _model_ref(value)
        found = self.loaded(model_id, version)
        if found is None:
            raise ModelNotFound(f"model {model_id!r} is not loaded on this worker")
        return found.entry()

    async def rpc_read_chunk(self, value: Any) -> dict[str, Any]:
        sha256, offset, length = chunk_request(value)
        found = next((m for m in self._cache.values() if m.sha256 == sha256), None)
        if found is None:
            raise ModelNotFound(f"no loaded model has sha256 {sha256}")
        return await read_chunk(found.path, found.size, offset, length)


def _model_ref(value: Any) -> tuple[str, str | None]:
    """(model id, version or None) from a request value; InvalidInput otherwise."""
    if not isinstance(value, Mapping):
        raise InvalidInput(f"request must be a map with 'model', got {type(value).__name__}")
    model_id = value.get("model")
    if not isinstance(model_id, str) or not model_id:
        raise InvalidInput("'model' must be a non-empty string (the model id)", details={"expected": "string"})
    version = value.get("version")
    if version is not None and not isinstance(version, (str, int)) or isinstance(version, bool):
        raise InvalidInput("'version' must be a string when given", details={"expected": "string"})
    return model_id, None if version is None else str(version)


def _read_and_hash(path: Path) -> tuple[bytes, str]:
    data = Path(path).read_bytes()
    return data, hashlib.sha256(data).hexdigest()
