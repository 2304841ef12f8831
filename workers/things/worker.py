"""ThingWorker: the CRUD template on the worker base.

Subclass it, declare `fields` (and `validate` for cross-field rules), set `role`,
`kind` and a config class, and the worker serves create/get/update/delete/list
over RPC on its topic with a SQLite store. docs/writing-a-worker.md walks
through one (workers/book.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from workers.base import Worker
from workers.config import WorkerConfig
from workers.errors import ConfigInvalid, Unavailable

from .schema import Field, Schema
from .service import ThingService
from .store import ThingStore
from .wire import dual

CRUD = ("create", "get", "update", "delete", "list")


@dataclass(frozen=True)
class ThingConfig(WorkerConfig):
    """Settings of a CRUD worker, on top of WorkerConfig's.

    topic: the topic name it announces (key = BLAKE2b-256("<namespace>:<topic>")).
    db_path: its SQLite file (the folder is created).  default_limit/max_limit:
    page sizes for `list`.  synchronous: SQLite's setting; NORMAL survives a
    killed process, FULL also a power cut.
    """

    name: str = "things"
    topic: str = "things"
    db_path: str = "var/things.db"
    default_limit: int = 50
    max_limit: int = 1000
    synchronous: str = "NORMAL"


class ThingWorker(Worker):
    """A worker that stores "things" of one kind and serves CRUD over RPC.

    Class-level hooks for subclasses:
      fields   name -> Field: the document's fields (types, bounds, checks).
      strict   refuse fields not in `fields` (the bare template stores any JSON).
      kind     the SQLite table name (one table per kind).
      validate(data) -> dict | None: cross-field rules; raise InvalidInput
               (workers.things.schema.invalid(field, expected, got)) to refuse, or
               return a replacement document (e.g. normalised values).
    """

    role = "workers.thing"
    config_class: ClassVar[type[ThingConfig]] = ThingConfig
    fields: ClassVar[Mapping[str, Field]] = {}
    strict: ClassVar[bool] = False
    kind: ClassVar[str] = "things"

    def __init__(self, config: ThingConfig, **kw: Any):
        super().__init__(config, **kw)
        self.config: ThingConfig = config
        self.schema = Schema(self.fields, validate=self.validate, strict=self.strict)
        self.service: ThingService | None = None
        # The base counts an in-band error as a success (the reply was sent), so count them here.
        self.inband_errors = self.registry.counter("inband_errors_total", "errors answered in-band to JSON callers",
                                                   ("method", "code"))
        for name in CRUD:
            self.method(name, dual(self._verb(name), self._inband_hook(name)), encoding="raw")

    def validate(self, data: dict) -> dict | None:
        """Cross-field validation hook; the default accepts what the fields accept."""
        return None

    def _verb(self, name: str):
        async def verb(request: Any) -> Any:
            if self.service is None:  # the base already refuses calls outside serving
                raise Unavailable(f"the {self.kind} store is not open")
            return await getattr(self.service, name)(request)
        verb.__name__ = name
        return verb

    def _inband_hook(self, name: str):
        return lambda err: self.inband_errors.inc(name, err.code)

    async def on_start(self) -> None:
        cfg = self.config
        folder = os.path.dirname(cfg.db_path)
        try:
            if folder:
                os.makedirs(folder, exist_ok=True)
            store = ThingStore(cfg.db_path, self.kind, synchronous=cfg.synchronous,
                               indexes={n: f.unique for n, f in self.fields.items() if f.unique or f.index})
        except (OSError, ValueError) as e:
            raise ConfigInvalid(f"{self.role}: cannot open store at {cfg.db_path!r}: {e}") from e
        self.service = ThingService(self.schema, store, default_limit=cfg.default_limit, max_limit=cfg.max_limit)
        await self.join(cfg.topic)
        self.log.info("store open", extra={"db_path": cfg.db_path, "kind": self.kind, "things": store.count()})

    async def on_stop(self) -> None:
        if self.service is not None:
            await self.service.close()
            self.service = None

    def health_details(self) -> dict[str, Any]:
        return {"kind": self.kind, "db_path": self.config.db_path}
