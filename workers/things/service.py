"""The CRUD verbs on plain dicts: request checking, validation, then the store.

This is the worker's logic without any transport: each verb takes the decoded
request value and returns the reply value, or raises a WorkerError (INVALID_INPUT,
NOT_FOUND, CONFLICT, STORAGE_ERROR). The blocking SQLite calls run on one
dedicated thread so the event loop never waits on the disk or on SQLite's lock.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Callable

from .query import parse_list
from .schema import Schema, invalid
from .store import ThingStore

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
ID_EXPECTED = "a string of 1-128 letters, digits, '_', '.', ':' or '-' (starting with a letter or digit)"


class ThingService:
    """create/get/update/delete/list for one kind of thing."""

    def __init__(self, schema: Schema, store: ThingStore, *, default_limit: int = 50, max_limit: int = 1000,
                 new_id: Callable[[], str] = lambda: uuid.uuid4().hex):
        self.schema = schema
        self.store = store
        self.default_limit = default_limit
        self.max_limit = max_limit
        self._new_id = new_id
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"store-{store.table}")

    async def _run(self, fn: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, partial(fn, *args))

    async def create(self, req: Any) -> dict:
        """{field: value, ..., "id"?} -> the stored thing (version 1)."""
        _need_object(req, "create")
        fields = dict(req)
        thing_id = _thing_id(fields.pop("id")) if "id" in fields else self._new_id()
        data = self.schema.clean(fields)
        record = await self._run(self.store.insert, thing_id, data)
        return record.to_dict()

    async def get(self, req: Any) -> dict:
        """{"id"} -> the thing."""
        _need_object(req, "get")
        _only(req, {"id"})
        record = await self._run(self.store.get, _thing_id(req.get("id")))
        return record.to_dict()

    async def update(self, req: Any) -> dict:
        """{"id", "version", field: value, ...} -> the thing at version + 1.

        The given fields replace the stored ones (null removes an optional field);
        the merged document is validated as a whole before anything is written.
        """
        _need_object(req, "update")
        patch = dict(req)
        thing_id = _thing_id(patch.pop("id", None))
        version = _version(patch.pop("version", None))
        if not patch:
            raise invalid("update", "at least one field to change besides id and version", show_got=False)
        for name in ("created_at", "updated_at"):
            if name in patch:
                raise invalid(name, "no value here (the store sets it)", patch[name])

        def change(current: dict) -> dict:
            merged = {**current, **patch}
            return self.schema.clean({k: v for k, v in merged.items() if v is not None})

        record = await self._run(self.store.update, thing_id, version, change)
        return record.to_dict()

    async def delete(self, req: Any) -> dict:
        """{"id", "version"} -> {"id", "version", "deleted": true}."""
        _need_object(req, "delete")
        _only(req, {"id", "version"})
        record = await self._run(self.store.delete, _thing_id(req.get("id")), _version(req.get("version")))
        return {"id": record.id, "version": record.version, "deleted": True}

    async def list(self, req: Any) -> dict:
        """{"where"?, "order"?, "limit"?, "cursor"?, "offset"?} -> {"items", "next_cursor"}."""
        query = parse_list(req, self.schema, self.default_limit, self.max_limit)
        page = await self._run(self.store.select, query)
        return {"items": [r.to_dict() for r in page.items], "next_cursor": page.next_cursor}

    async def close(self) -> None:
        """Close the database on its own thread, then stop the thread."""
        await self._run(self.store.close)
        self._thread.shutdown(wait=True)


def _need_object(req: Any, method: str) -> None:
    if not isinstance(req, dict):
        raise invalid("request", f"an object (the {method} request)", req)


def _only(req: dict, allowed: set[str]) -> None:
    for key in req:
        if key not in allowed:
            raise invalid(str(key), "no such key here (known: " + ", ".join(sorted(allowed)) + ")",
                          show_got=False)


def _thing_id(value: Any) -> str:
    if not isinstance(value, str) or not ID_RE.match(value):
        raise invalid("id", ID_EXPECTED, value)
    return value


def _version(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise invalid("version", "the integer version you last read (from create, get or list)", value)
    return value
