"""SQLite persistence for things, with a version per record.

One table per kind of thing: `seq` (insertion order), `id`, `version`, the two
timestamps and the document as JSON text. The database runs in WAL mode and each
write is one `BEGIN IMMEDIATE` transaction, so a write either lands whole or not
at all (a killed process leaves the last committed state), and writers from
several connections or processes queue on SQLite's lock instead of racing.

Updates and deletes name the version they read; the `UPDATE ... WHERE version = ?`
inside the transaction refuses a stale one with a Conflict that names the current
version (optimistic concurrency: no lost updates, no locks held across calls).

A ThingStore is a blocking object; use it from one thread at a time (the
service runs it on its own single thread).
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

from workers.errors import Conflict, NotFound, StorageError

from .query import Query, column, encode_cursor, sort_key_sql, where_sql
from .schema import NAME_RE

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Record:
    id: str
    version: int
    created_at: int  # ms since the epoch
    updated_at: int
    data: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The thing as callers see it: its fields plus id, version and timestamps."""
        return {**self.data, "id": self.id, "version": self.version,
                "created_at": self.created_at, "updated_at": self.updated_at}


@dataclass(frozen=True)
class Page:
    items: list[Record]
    next_cursor: str | None  # None on the last page


class ThingStore:
    """Things of one kind in one SQLite table.

    `indexes` maps field names to True (unique) or False (plain index).
    `synchronous` is SQLite's setting: NORMAL survives a killed process (the
    WAL is in the OS cache); FULL also survives power loss, at an fsync per write.
    """

    def __init__(self, path: str, table: str = "things", *, indexes: Mapping[str, bool] | None = None,
                 clock: Callable[[], float] = time.time, synchronous: str = "NORMAL",
                 busy_timeout_ms: int = 10_000):
        if not NAME_RE.match(table):
            raise ValueError(f"bad table name {table!r}")
        if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"bad synchronous setting {synchronous!r}")
        self.path = path
        self.table = table
        self._clock = clock
        self._unique = [n for n, unique in (indexes or {}).items() if unique]
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves.
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                       timeout=busy_timeout_ms / 1000)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            with self._write():
                self._create(indexes or {})
        except sqlite3.Error as e:
            raise StorageError(f"cannot open thing store {path}: {e}") from e

    def _create(self, indexes: Mapping[str, bool]) -> None:
        t = self.table
        self._db.execute(
            f"CREATE TABLE IF NOT EXISTS {t} (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " id TEXT NOT NULL UNIQUE, version INTEGER NOT NULL, created_at INTEGER NOT NULL,"
            " updated_at INTEGER NOT NULL, data TEXT NOT NULL)")
        for name, unique in indexes.items():
            if not NAME_RE.match(name):
                raise ValueError(f"bad index field {name!r}")
            kind = "UNIQUE INDEX" if unique else "INDEX"
            self._db.execute(f"CREATE {kind} IF NOT EXISTS {t}_ix_{name} ON {t}({column(name)})")
        if self._db.execute("PRAGMA user_version").fetchone()[0] == 0:
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed on success, rolled back on any exception."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _now(self) -> int:
        return int(self._clock() * 1000)

    # ------------------------------------------------------------ writes

    def insert(self, thing_id: str, data: dict) -> Record:
        """Store a new thing at version 1; Conflict if the id or a unique value is taken."""
        now = self._now()
        with self._guard(), self._write() as db:
            if self._fetch(thing_id) is not None:
                raise Conflict(f"a thing with id {thing_id!r} already exists", details={"id": thing_id})
            self._check_unique(data, thing_id)
            db.execute(f"INSERT INTO {self.table} (id, version, created_at, updated_at, data)"
                       " VALUES (?, 1, ?, ?, ?)", (thing_id, now, now, _dump(data)))
        return Record(thing_id, 1, now, now, data)

    def update(self, thing_id: str, version: int, change: Callable[[dict], dict]) -> Record:
        """Replace a thing's data with `change(current data)` if it is still at `version`.

        `change` runs inside the transaction (it validates); if it raises,
        nothing is written. NotFound for an unknown id, Conflict for a stale version.
        """
        with self._guard(), self._write() as db:
            current = self._current(thing_id, version)
            data = change(dict(current.data))
            self._check_unique(data, thing_id)
            now = max(self._now(), current.updated_at)
            cur = db.execute(f"UPDATE {self.table} SET data = ?, version = version + 1, updated_at = ?"
                             " WHERE id = ? AND version = ?", (_dump(data), now, thing_id, version))
            if cur.rowcount != 1:  # cannot happen under BEGIN IMMEDIATE; refuse rather than guess
                raise StorageError(f"update of {thing_id!r} matched {cur.rowcount} rows")
        return Record(thing_id, version + 1, current.created_at, now, data)

    def delete(self, thing_id: str, version: int) -> Record:
        """Remove a thing that is still at `version`; returns what was removed."""
        with self._guard(), self._write() as db:
            current = self._current(thing_id, version)
            db.execute(f"DELETE FROM {self.table} WHERE id = ? AND version = ?", (thing_id, version))
        return current

    def _current(self, thing_id: str, version: int) -> Record:
        current = self._fetch(thing_id)
        if current is None:
            raise NotFound(f"no thing with id {thing_id!r}", details={"id": thing_id})
        if current.version != version:
            raise Conflict(f"version {version} of {thing_id!r} is stale: the current version is "
                           f"{current.version}; get it and retry",
                           details={"id": thing_id, "version": version, "current_version": current.version})
        return current

    def _check_unique(self, data: dict, thing_id: str) -> None:
        for name in self._unique:
            if data.get(name) is None:
                continue
            row = self._db.execute(f"SELECT id FROM {self.table} WHERE {column(name)} = ? AND id != ?",
                                   (_bindable(data[name]), thing_id)).fetchone()
            if row is not None:
                raise Conflict(f"{name}: {data[name]!r} is already used by thing {row[0]!r}",
                               details={"field": name, "id": row[0]})

    # ------------------------------------------------------------ reads

    def get(self, thing_id: str) -> Record:
        """The thing with this id, or NotFound."""
        with self._guard():
            record = self._fetch(thing_id)
        if record is None:
            raise NotFound(f"no thing with id {thing_id!r}", details={"id": thing_id})
        return record

    def _fetch(self, thing_id: str) -> Record | None:
        row = self._db.execute(f"SELECT id, version, created_at, updated_at, data FROM {self.table}"
                               " WHERE id = ?", (thing_id,)).fetchone()
        return None if row is None else _record(row)

    def select(self, query: Query) -> Page:
        """One page of things matching `query`, in its order."""
        keys = sort_key_sql(query.order)
        direction = "DESC" if query.descending else "ASC"
        where, args = where_sql(query.where)
        clauses = [where] if where else []
        if query.after is not None:
            op = "<" if query.descending else ">"
            clauses.append(f"({', '.join(keys)}) {op} ({', '.join('?' * len(keys))})")
            args.extend(query.after)
        sql = (f"SELECT id, version, created_at, updated_at, data, {', '.join(keys)} FROM {self.table}"
               + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
               + f" ORDER BY {', '.join(k + ' ' + direction for k in keys)} LIMIT ? OFFSET ?")
        with self._guard():
            rows = self._db.execute(sql, (*args, query.limit + 1, query.offset)).fetchall()
        more = len(rows) > query.limit
        rows = rows[:query.limit]
        cursor = encode_cursor(query, tuple(rows[-1][5:])) if more and rows else None
        return Page([_record(r) for r in rows], cursor)

    def count(self) -> int:
        with self._guard():
            return self._db.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0]

    def integrity_ok(self) -> bool:
        """SQLite's own integrity check of the file (for tests and the operator)."""
        with self._guard():
            return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Turns SQLite failures (disk full, locked past the timeout) into StorageError."""
        try:
            yield
        except sqlite3.Error as e:
            raise StorageError(f"thing store {self.path}: {e}") from e


def _dump(data: dict) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _bindable(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


def _record(row: tuple) -> Record:
    return Record(row[0], row[1], row[2], row[3], json.loads(row[4]))
