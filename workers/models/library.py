"""Store plus registry: the one place where files and rows change together.

Order is what keeps a killed process consistent: a file is committed before its
row is inserted, and a row is deleted before its file is removed. A crash between
the two steps leaves a file with no row, which `open` removes; rows whose file is
missing (a disk that lost it) are dropped on open so they can be fetched again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import pathlib
import time
from typing import Awaitable, Callable, Iterator

from .errors import BadRequestError, ConflictError, ModelError
from .onnx_meta import ModelMeta, inspect_model
from .registry import MergePlan, ModelEntry, Registry, Tombstone
from .store import ContentStore, PendingFile, StoredFile

log = logging.getLogger(__name__)

MODEL_TYPES = {"onnx": inspect_model}


@dataclasses.dataclass
class ReconcileReport:
    temp_files_removed: int = 0
    rows_without_file: int = 0
    files_without_row: int = 0


@dataclasses.dataclass
class MergeReport:
    added: list[ModelEntry] = dataclasses.field(default_factory=list)
    conflicts: list[tuple[ModelEntry, ModelEntry]] = dataclasses.field(default_factory=list)
    deleted: list[Tombstone] = dataclasses.field(default_factory=list)
    failed: list[tuple[ModelEntry, Exception]] = dataclasses.field(default_factory=list)


def validator(model_type: str) -> Callable[[pathlib.Path], ModelMeta]:
    """The function that checks a file of `model_type` and reads its I/O specs."""
    try:
        return MODEL_TYPES[model_type]
    except KeyError:
        raise BadRequestError(f"unsupported model type {model_type!r} "
                              f"(supported: {', '.join(sorted(MODEL_TYPES))})") from None


class ModelLibrary:
    """Model files and their registry under one folder. Use from one event loop."""

    def __init__(self, store: ContentStore, registry: Registry):
        self.store = store
        self.registry = registry
        # sha256 of files committed but not yet in a row: delete must not remove them.
        self._pinned: collections.Counter[str] = collections.Counter()
        self.reconcile_report = ReconcileReport(temp_files_removed=store.removed_temp_files)

    @classmethod
    def open(cls, root: str | pathlib.Path, max_size: int) -> "ModelLibrary":
        root = pathlib.Path(root)
        root.mkdir(parents=True, exist_ok=True)
        library = cls(ContentStore(root / "files", max_size), Registry(root / "registry.sqlite3"))
        library.reconcile()
        return library

    def close(self) -> None:
        self.registry.close()

    def reconcile(self) -> ReconcileReport:
        """Drop rows whose file is gone (or has the wrong size) and files no row
        names. Call before serving."""
        report = self.reconcile_report
        files = set(self.store.hashes())
        # A file of the wrong size is damaged (hashing every file would be the full
        # check, but costs a read of the whole store at each start).
        for entry in self.registry.list():
            if entry.sha256 in files and self.store.stat(entry.sha256).size != entry.size:
                log.warning("stored file %s has the wrong size; removing it", entry.sha256)
                self.store.remove(entry.sha256)
                files.discard(entry.sha256)
        for sha in self.registry.hashes() - files:
            dropped = self.registry.forget_sha256(sha)
            report.rows_without_file += len(dropped)
            log.warning("dropped %d registry row(s) whose file %s is missing", len(dropped), sha)
        for sha in files - self.registry.hashes() - set(self._pinned):
            self.store.remove(sha)
            report.files_without_row += 1
            log.info("removed stored file %s that no registry row names", sha)
        return report

    async def add(self, pending: PendingFile, model_id: str, version: str, model_type: str,
                  tags: tuple[str, ...] = (), created: float | None = None) -> ModelEntry:
        """Commit `pending` (verified and validated off the loop), then insert its row.
        Returns the registry entry; rejections leave neither file nor row behind.
        `created` is given for entries merged from a peer (their original time)."""
        check = validator(model_type)
        with self._pin(pending.sha256):
            stored, meta = await asyncio.to_thread(pending.commit, check)
            return self._register(stored, meta, model_id, version, model_type, tags, created)

    async def add_existing(self, stored: StoredFile, model_id: str, version: str,
                           model_type: str, tags: tuple[str, ...] = (),
                           created: float | None = None) -> ModelEntry:
        """Register a file already in the store under a new (id, version)."""
        check = validator(model_type)
        with self._pin(stored.sha256):
            meta = await asyncio.to_thread(check, stored.path)
            return self._register(stored, meta, model_id, version, model_type, tags, created)

    def _register(self, stored: StoredFile, meta: ModelMeta, model_id: str, version: str,
                  model_type: str, tags: tuple[str, ...], created: float | None) -> ModelEntry:
        entry = ModelEntry(model_id, version, model_type, stored.sha256, stored.size,
                           meta.inputs, meta.outputs,
                           time.time() if created is None else created, tags)
        # A local upload revives a deleted (id, version); a merged entry does not.
        return self.registry.insert(entry, clear_tombstone=created is None)

    @contextlib.contextmanager
    def _pin(self, sha256: str) -> Iterator[None]:
        """Hold a file against deletes while it has no row yet; on the way out, remove
        it if it still has none (a rejected, conflicting or abandoned commit)."""
        self._pinned[sha256] += 1
        try:
            yield
        finally:
            self._pinned[sha256] -= 1
            if self._pinned[sha256] <= 0:
                del self._pinned[sha256]
            self._collect(sha256)

    def delete(self, model_id: str, version: str) -> tuple[ModelEntry, bool]:
        """Delete the row, then the file if nothing else names it.
        Returns the deleted entry and whether the file was removed."""
        entry = self.registry.delete(model_id, version, deleted=time.time())
        return entry, self._collect(entry.sha256)

    def apply_tombstone(self, tomb: Tombstone) -> bool:
        """Apply a peer's delete; True if it removed a local row."""
        mine = self.registry.find(tomb.id, tomb.version)
        if mine is None or mine.sha256 != tomb.sha256:
            self.registry.add_tombstone(tomb)
            return False
        self.registry.delete(tomb.id, tomb.version, deleted=tomb.deleted)  # row + tombstone
        self._collect(tomb.sha256)
        return True

    async def merge(self, plan: MergePlan,
                    fetch_file: Callable[[ModelEntry], Awaitable[StoredFile]]) -> MergeReport:
        """Apply a merge plan: deletions, then new entries, fetching files we lack
        with `fetch_file` (which must leave a verified file in the store)."""
        report = MergeReport(conflicts=list(plan.conflicts))
        for tomb in plan.deletions:
            self.apply_tombstone(tomb)
            report.deleted.append(tomb)
        for entry in plan.new:
            try:
                with self._pin(entry.sha256):
                    stored = (self.store.stat(entry.sha256) if self.store.has(entry.sha256)
                              else await fetch_file(entry))
                    added = await self.add_existing(stored, entry.id, entry.version,
                                                    entry.type, entry.tags, created=entry.created)
            except ConflictError as e:
                # Someone registered the same (id, version) while we fetched.
                report.conflicts.append((self.registry.get(entry.id, entry.version), entry))
                log.debug("merge of %s/%s raced: %s", entry.id, entry.version, e)
                continue
            except ModelError as e:
                # One entry that cannot be fetched or validated must not stop the merge.
                report.failed.append((entry, e))
                log.warning("could not merge %s/%s: %s", entry.id, entry.version, e)
                continue
            report.added.append(added)
        return report

    def _collect(self, sha256: str) -> bool:
        """Remove the file if no row names it and no commit holds it."""
        if self.registry.references(sha256) or self._pinned[sha256]:
            return False
        return self.store.remove(sha256)

