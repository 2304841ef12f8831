"""The model manager: a worker role that stores, lists, serves and replicates models.

RPC methods (msgpack values; errors carry the codes of workers/models/errors.py):

    upload_begin  {id, version, sha256, size, type="onnx", tags=[]}
                  -> {upload, offset, chunk_size}  or  {model} when (id, version)
                     already names this sha256 (nothing to send)
    upload_chunk  {upload, offset, data: bytes <= 1 MiB} -> {received}
    upload_commit {upload} -> model entry
    upload_abort  {upload} -> {aborted: true}
    get           {id, version?} -> model entry (newest version when omitted:
                  "10" after "9", "1.10" after "1.9", as workers.inference orders them)
    stat          {sha256} -> {sha256, size}
    read_chunk    {sha256, offset, length <= 1 MiB} -> {data: bytes, size}
    list          {type?, tag?} -> {models: [entry]}
    versions      {id} -> {versions: [entry]}  (oldest version first)
    delete        {id, version} -> {deleted: entry, file_removed: bool}
    registry_snapshot {} -> {entries: [entry], tombstones: [tombstone]}

A model entry is {id, version, type, sha256, size, inputs, outputs, created, tags},
inputs/outputs being [{name, dtype, shape}] with dynamic dims as names or null.
The manager announces the topic topic_key(namespace, "model-manager"); replication
runs against `peers()`, injected at construction (see replication.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any

from workers.base import Worker, rpc_method
from workers.config import WorkerConfig
from workers.errors import ConfigInvalid
from workers.logging import BoundLogger

from .errors import BadRequestError, ConflictError, UploadRejectedError
from .fetch import CHUNK_SIZE, PeerList
from .library import ModelLibrary, validator
from .registry import check_name, check_tags
from .replication import Replicator
from .store import check_sha256
from .uploads import MAX_CHUNK, UploadTable

TOPIC = "model-manager"


@dataclasses.dataclass(frozen=True)
class ManagerConfig(WorkerConfig):
    """Model manager settings.

    data_dir: folder of the file store and the registry database.
    max_model_bytes: largest model file accepted.  upload_timeout_s: an upload
    session idle this long is aborted.  max_uploads: concurrent upload sessions.
    replicate_interval_s: how often to merge peers' registries (0: never).
    peer_timeout_s: deadline of each request to a peer.  fetch_window: read_chunk
    requests in flight per peer while pulling a file.
    """

    name: str = "model-manager"
    data_dir: str = "data/model-manager"
    max_model_bytes: int = 2 << 30
    upload_timeout_s: float = 300.0
    max_uploads: int = 32
    replicate_interval_s: float = 30.0
    peer_timeout_s: float = 10.0
    fetch_window: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        checks = {"max_model_bytes": self.max_model_bytes > 0,
                  "upload_timeout_s": self.upload_timeout_s > 0,
                  "max_uploads": self.max_uploads > 0,
                  "replicate_interval_s": self.replicate_interval_s >= 0,
                  "peer_timeout_s": self.peer_timeout_s > 0,
                  "fetch_window": self.fetch_window > 0,
                  "data_dir": bool(self.data_dir)}
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigInvalid(f"ManagerConfig: out of range: {', '.join(bad)}")


class ModelManager(Worker):
    role = "workers.models"

    def __init__(self, config: ManagerConfig, *, peers: PeerList | None = None,
                 log: BoundLogger | None = None):
        super().__init__(config, log=log)
        self.config: ManagerConfig = config
        self._peers = peers or (lambda: [])
        self.library: ModelLibrary | None = None
        self.uploads: UploadTable | None = None
        self.replicator: Replicator | None = None
        self._tasks: list[asyncio.Task] = []
        self._m_uploads = self.registry.counter("model_uploads_total", "uploads by result", ("result",))

    # ------------------------------------------------------------ lifecycle

    async def on_start(self) -> None:
        cfg = self.config
        self.library = ModelLibrary.open(cfg.data_dir, cfg.max_model_bytes)
        report = self.library.reconcile_report
        self.log.info("model library opened", extra={"data_dir": cfg.data_dir,
                                                     **dataclasses.asdict(report)})
        loop = asyncio.get_running_loop()
        self.uploads = UploadTable(self.library.store, timeout_s=cfg.upload_timeout_s,
                                   max_sessions=cfg.max_uploads, clock=loop.time)
        self.replicator = Replicator(self.library, self._peers,
                                     interval_s=cfg.replicate_interval_s,
                                     timeout_s=cfg.peer_timeout_s, chunk_size=CHUNK_SIZE,
                                     window=cfg.fetch_window)
        self._tasks.append(asyncio.create_task(self._expire_uploads()))
        if cfg.replicate_interval_s > 0:
            self._tasks.append(asyncio.create_task(self.replicator.run()))
        # Replication also needs to dial the other managers on the topic, so look
        # it up as a client too.
        await self.join(TOPIC, lookup=cfg.replicate_interval_s > 0)

    async def on_stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.uploads is not None:
            self.uploads.abort_all()
        if self.library is not None:
            self.library.close()

    async def _expire_uploads(self) -> None:
        # A coarse sweep is enough: a session lives until its deadline plus one period.
        period = max(0.5, min(self.config.upload_timeout_s / 4, 10.0))
        while True:
            await asyncio.sleep(period)
            if expired := self.uploads.expire():
                self._m_uploads.inc("expired", amount=expired)
                self.log.info("expired idle uploads", extra={"count": expired})

    def health_details(self) -> dict[str, Any]:
        if self.library is None:
            return {}
        return {"models": len(self.library.registry.list()), "uploads": len(self.uploads),
                "replication": dataclasses.asdict(self.replicator.stats)}

    # ------------------------------------------------------------ uploads

    @rpc_method("upload_begin")
    async def upload_begin(self, value: Any) -> dict[str, Any]:
        v = _map(value)
        model_id, version = check_name(v.get("id"), "id"), check_name(v.get("version"), "version")
        model_type = check_name(v.get("type", "onnx"), "type")
        validator(model_type)  # refuse an unsupported type before any byte is sent
        sha256, size = check_sha256(v.get("sha256")), v.get("size")
        tags = check_tags(v.get("tags", []))
        existing = self.library.registry.find(model_id, version)
        if existing is not None:
            if existing.sha256 == sha256:
                return {"model": existing.to_wire()}
            raise ConflictError(f"model {model_id} version {version} already exists "
                                f"with sha256 {existing.sha256}")
        session = self.uploads.begin(model_id, version, model_type, tags, sha256, size)
        return {"upload": session.id, "offset": session.received, "chunk_size": MAX_CHUNK}

    @rpc_method("upload_chunk")
    async def upload_chunk(self, value: Any) -> dict[str, Any]:
        v = _map(value)
        data = v.get("data")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise BadRequestError("upload_chunk needs data as bytes")
        try:
            received = self.uploads.write(v.get("upload"), _uint(v.get("offset"), "offset"), data)
        except UploadRejectedError:
            self._m_uploads.inc("rejected")
            raise
        return {"received": received}

    @rpc_method("upload_commit")
    async def upload_commit(self, value: Any) -> dict[str, Any]:
        session = self.uploads.take(_map(value).get("upload"))
        try:
            if session.pending is None:
                stored = self.library.store.stat(session.sha256)
                entry = await self.library.add_existing(stored, session.model_id, session.version,
                                                        session.model_type, session.tags)
            else:
                entry = await self.library.add(session.pending, session.model_id,
                                               session.version, session.model_type, session.tags)
        except BaseException:
            session.abort()
            self._m_uploads.inc("rejected")
            raise
        self._m_uploads.inc("committed")
        self.log.info("model stored", extra={"id": entry.id, "version": entry.version,
                                             "sha256": entry.sha256, "size": entry.size})
        return entry.to_wire()

    @rpc_method("upload_abort")
    async def upload_abort(self, value: Any) -> dict[str, Any]:
        self.uploads.abort(_map(value).get("upload"))
        self._m_uploads.inc("aborted")
        return {"aborted": True}

    # ------------------------------------------------------------ reads

    @rpc_method("get")
    async def get(self, value: Any) -> dict[str, Any]:
        v = _map(value)
        version = v.get("version")
        return self.library.registry.get(
            check_name(v.get("id"), "id"),
            None if version is None else check_name(version, "version")).to_wire()

    @rpc_method("stat")
    async def stat(self, value: Any) -> dict[str, Any]:
        stored = self.library.store.stat(check_sha256(_map(value).get("sha256")))
        return {"sha256": stored.sha256, "size": stored.size}

    @rpc_method("read_chunk")
    async def read_chunk(self, value: Any) -> dict[str, Any]:
        v = _map(value)
        sha256 = check_sha256(v.get("sha256"))
        offset, length = _uint(v.get("offset"), "offset"), _uint(v.get("length"), "length")
        if length > MAX_CHUNK:
            raise BadRequestError(f"length {length} exceeds {MAX_CHUNK}")
        size = self.library.store.stat(sha256).size
        data = await asyncio.to_thread(self.library.store.read, sha256, offset, length)
        return {"data": data, "size": size}

    @rpc_method("list")
    async def list_models(self, value: Any) -> dict[str, Any]:
        v = _map(value if value is not None else {})
        model_type, tag = v.get("type"), v.get("tag")
        entries = self.library.registry.list(
            None if model_type is None else check_name(model_type, "type"),
            None if tag is None else check_name(tag, "tag"))
        return {"models": [e.to_wire() for e in entries]}

    @rpc_method("versions")
    async def versions(self, value: Any) -> dict[str, Any]:
        model_id = check_name(_map(value).get("id"), "id")
        return {"versions": [e.to_wire() for e in self.library.registry.versions(model_id)]}

    @rpc_method("delete")
    async def delete(self, value: Any) -> dict[str, Any]:
        v = _map(value)
        entry, removed = self.library.delete(check_name(v.get("id"), "id"),
                                             check_name(v.get("version"), "version"))
        self.log.info("model deleted", extra={"id": entry.id, "version": entry.version,
                                              "file_removed": removed})
        return {"deleted": entry.to_wire(), "file_removed": removed}

    @rpc_method("registry_snapshot")
    async def registry_snapshot(self, value: Any) -> dict[str, Any]:
        return self.library.registry.snapshot()


def _map(value: Any) -> dict:
    if not isinstance(value, dict):
        raise BadRequestError(f"request value must be a map, got {type(value).__name__}")
    return value


def _uint(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadRequestError(f"{what} must be a non-negative integer, got {value!r}")
    return value
