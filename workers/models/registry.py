"""The model registry: one SQLite row per (id, version), naming a stored file by sha256.

Rows change only inside transactions, so a process killed at any point leaves either
the old or the new state. Files are written before their rows and removed after them
(see library.py), so a crash leaves at worst a file with no row, which the library
removes when it opens. Deleted (id, version, sha256) triples leave a tombstone so a
peer's older copy is not pulled back in by replication.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import sqlite3
from typing import Any, Iterable

from .errors import BadRequestError, ConflictError, NotFoundError
from .onnx_meta import TensorSpec
from .store import check_sha256

SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    id TEXT NOT NULL,
    version TEXT NOT NULL,
    type TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    inputs TEXT NOT NULL,
    outputs TEXT NOT NULL,
    created REAL NOT NULL,
    tags TEXT NOT NULL,
    PRIMARY KEY (id, version)
);
CREATE INDEX IF NOT EXISTS models_sha256 ON models (sha256);
CREATE TABLE IF NOT EXISTS tombstones (
    id TEXT NOT NULL,
    version TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    deleted REAL NOT NULL,
    PRIMARY KEY (id, version)
);
"""
_COLUMNS = "id, version, type, sha256, size, inputs, outputs, created, tags"
MAX_NAME = 256


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    id: str
    version: str
    type: str
    sha256: str
    size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    created: float
    tags: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.id, self.version)

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "type": self.type,
                "sha256": self.sha256, "size": self.size,
                "inputs": [s.to_wire() for s in self.inputs],
                "outputs": [s.to_wire() for s in self.outputs],
                "created": self.created, "tags": list(self.tags)}

    @classmethod
    def from_wire(cls, value: Any) -> "ModelEntry":
        """Parse an entry from a peer or a client; BadRequestError if malformed."""
        try:
            if not isinstance(value, dict):
                raise TypeError("entry is not a map")
            size, created = value["size"], value["created"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ValueError(f"bad size {size!r}")
            if not isinstance(created, (int, float)) or isinstance(created, bool):
                raise ValueError(f"bad created {created!r}")
            return cls(id=check_name(value["id"], "id"),
                       version=check_name(value["version"], "version"),
                       type=check_name(value.get("type", "onnx"), "type"),
                       sha256=check_sha256(value["sha256"]), size=size,
                       inputs=tuple(TensorSpec.from_wire(s) for s in value.get("inputs", ())),
                       outputs=tuple(TensorSpec.from_wire(s) for s in value.get("outputs", ())),
                       created=float(created), tags=check_tags(value.get("tags", ())))
        except (KeyError, TypeError, ValueError) as e:
            raise BadRequestError(f"malformed model entry: {e}") from e


@dataclasses.dataclass(frozen=True)
class Tombstone:
    id: str
    version: str
    sha256: str
    deleted: float

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_wire(cls, value: Any) -> "Tombstone":
        try:
            deleted = value["deleted"]
            if not isinstance(deleted, (int, float)) or isinstance(deleted, bool):
                raise ValueError(f"bad deleted time {deleted!r}")
            return cls(check_name(value["id"], "id"), check_name(value["version"], "version"),
                       check_sha256(value["sha256"]), float(deleted))
        except (KeyError, TypeError, ValueError) as e:
            raise BadRequestError(f"malformed tombstone: {e}") from e


@dataclasses.dataclass
class MergePlan:
    """What merging a peer's snapshot would do; applied by the library."""

    new: list[ModelEntry] = dataclasses.field(default_factory=list)
    conflicts: list[tuple[ModelEntry, ModelEntry]] = dataclasses.field(default_factory=list)
    deletions: list[Tombstone] = dataclasses.field(default_factory=list)


def version_key(version: str) -> tuple:
    """Sort key: "10" after "9", "1.10" after "1.9". The same order as
    workers.inference.source.version_key, so a manager and a worker reading a
    folder agree on which version is the newest."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.\-]", version))


def check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME or not value.isprintable():
        raise BadRequestError(f"{what} must be 1-{MAX_NAME} printable characters, got {value!r}")
    return value


def check_tags(value: object) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise BadRequestError(f"tags must be a list of strings, got {value!r}")
    return tuple(sorted({check_name(t, "tag") for t in value}))


class Registry:
    """Model rows in the SQLite file at `path`. Not thread-safe: use from one thread."""

    def __init__(self, path: str | pathlib.Path):
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed row survives power loss, not only a killed process.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def get(self, model_id: str, version: str | None = None) -> ModelEntry:
        """The entry for (id, version), or the newest version (by version_key) when
        version is None. NotFoundError if there is none."""
        if version is None:
            return self.versions(model_id)[-1]
        row = self._db.execute(f"SELECT {_COLUMNS} FROM models WHERE id = ? AND version = ?",
                               (model_id, version)).fetchone()
        if row is None:
            raise NotFoundError(f"no model {model_id} version {version}")
        return _entry(row)

    def find(self, model_id: str, version: str) -> ModelEntry | None:
        try:
            return self.get(model_id, version)
        except NotFoundError:
            return None

    def versions(self, model_id: str) -> list[ModelEntry]:
        """Every version of `model_id`, oldest first by version_key; NotFoundError if none."""
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM models WHERE id = ?",
                                (model_id,)).fetchall()
        if not rows:
            raise NotFoundError(f"no model {model_id}")
        return sorted((_entry(r) for r in rows), key=lambda e: version_key(e.version))

    def list(self, model_type: str | None = None, tag: str | None = None) -> list[ModelEntry]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM models")
        entries = sorted((_entry(r) for r in rows), key=lambda e: (e.id, version_key(e.version)))
        return [e for e in entries
                if (model_type is None or e.type == model_type) and (tag is None or tag in e.tags)]

    def references(self, sha256: str) -> int:
        return self._db.execute("SELECT COUNT(*) FROM models WHERE sha256 = ?",
                                (sha256,)).fetchone()[0]

    def hashes(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT DISTINCT sha256 FROM models")}

    def insert(self, entry: ModelEntry, *, clear_tombstone: bool = True) -> ModelEntry:
        """Add `entry`; returns the stored entry (the existing one when the same
        (id, version) already names the same sha256). ConflictError when it names
        another sha256."""
        with self._transaction():
            row = self._db.execute(f"SELECT {_COLUMNS} FROM models WHERE id = ? AND version = ?",
                                   entry.key).fetchone()
            if row is not None:
                existing = _entry(row)
                if existing.sha256 != entry.sha256:
                    raise ConflictError(f"model {entry.id} version {entry.version} already exists "
                                        f"with sha256 {existing.sha256}")
                return existing
            self._db.execute(f"INSERT INTO models ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
                             _row(entry))
            if clear_tombstone:
                self._db.execute("DELETE FROM tombstones WHERE id = ? AND version = ?", entry.key)
            return entry

    def delete(self, model_id: str, version: str, deleted: float) -> ModelEntry:
        """Remove the row and leave a tombstone; returns the removed entry."""
        with self._transaction():
            entry = self.get(model_id, version)
            self._db.execute("DELETE FROM models WHERE id = ? AND version = ?", entry.key)
            self._db.execute("INSERT OR REPLACE INTO tombstones VALUES (?,?,?,?)",
                             (entry.id, entry.version, entry.sha256, deleted))
            return entry

    def forget_sha256(self, sha256: str) -> list[ModelEntry]:
        """Drop every row naming `sha256` without tombstones (their file is gone,
        so a peer's copy may be fetched again)."""
        with self._transaction():
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM models WHERE sha256 = ?",
                                    (sha256,)).fetchall()
            self._db.execute("DELETE FROM models WHERE sha256 = ?", (sha256,))
            return [_entry(r) for r in rows]

    def tombstones(self) -> list[Tombstone]:
        rows = self._db.execute("SELECT id, version, sha256, deleted FROM tombstones ORDER BY id")
        return [Tombstone(*r) for r in rows]

    def add_tombstone(self, tomb: Tombstone) -> None:
        with self._transaction():
            self._db.execute(
                "INSERT INTO tombstones VALUES (?,?,?,?) ON CONFLICT (id, version) DO UPDATE "
                "SET sha256 = excluded.sha256, deleted = excluded.deleted "
                "WHERE excluded.deleted > tombstones.deleted",
                (tomb.id, tomb.version, tomb.sha256, tomb.deleted))

    def snapshot(self) -> dict[str, Any]:
        """Everything a peer needs to merge this registry into its own."""
        return {"entries": [e.to_wire() for e in self.list()],
                "tombstones": [t.to_wire() for t in self.tombstones()]}

    def plan_merge(self, entries: Iterable[ModelEntry],
                   tombstones: Iterable[Tombstone] = ()) -> MergePlan:
        """Compare a peer's entries and tombstones with ours, by (id, version)."""
        plan = MergePlan()
        local_tombs = {(t.id, t.version): t for t in self.tombstones()}
        for tomb in tombstones:
            mine = self.find(tomb.id, tomb.version)
            known = local_tombs.get((tomb.id, tomb.version))
            if mine is not None and mine.sha256 == tomb.sha256 and mine.created <= tomb.deleted:
                plan.deletions.append(tomb)
            elif mine is None and (known is None or known.deleted < tomb.deleted):
                plan.deletions.append(tomb)
        buried = {(t.id, t.version): t for t in [*local_tombs.values(), *plan.deletions]}
        for entry in entries:
            mine = self.find(entry.id, entry.version)
            if mine is not None:
                if mine.sha256 != entry.sha256:
                    plan.conflicts.append((mine, entry))
                continue
            tomb = buried.get(entry.key)
            if tomb is not None and tomb.sha256 == entry.sha256 and entry.created <= tomb.deleted:
                continue
            plan.new.append(entry)
        return plan

    def _transaction(self) -> "_Transaction":
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""

    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _row(e: ModelEntry) -> tuple:
    return (e.id, e.version, e.type, e.sha256, e.size,
            json.dumps([s.to_wire() for s in e.inputs]),
            json.dumps([s.to_wire() for s in e.outputs]), e.created, json.dumps(list(e.tags)))


def _entry(row: tuple) -> ModelEntry:
    mid, version, mtype, sha, size, inputs, outputs, created, tags = row
    return ModelEntry(mid, version, mtype, sha, size,
                      tuple(TensorSpec.from_wire(s) for s in json.loads(inputs)),
                      tuple(TensorSpec.from_wire(s) for s in json.loads(outputs)),
                      created, tuple(json.loads(tags)))
