"""API keys: stored hashed in SQLite with scopes and per-key rate limits.

A key reads `mk_<id>_<secret>`: the id finds the row, the secret carries 256 bits of
entropy, and only sha256(key) is stored, compared in constant time. Checked keys are
cached for `cache_s` seconds, so a revocation from another process (the keys CLI)
takes effect within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import time
from dataclasses import dataclass

from .errors import Forbidden, Unauthorized

SCOPES = ("infer", "models:read", "models:write", "admin")
PREFIX = "mk_"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  hash BLOB NOT NULL,
  scopes TEXT NOT NULL,
  rate REAL,
  burst INTEGER,
  created REAL NOT NULL,
  revoked REAL
)
"""


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    scopes: frozenset[str]
    rate: float | None = None     # None: the gateway default
    burst: int | None = None
    created: float = 0.0
    revoked: float | None = None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def public(self) -> dict:
        return {"id": self.id, "name": self.name, "scopes": sorted(self.scopes), "rate": self.rate,
                "burst": self.burst, "created": self.created, "revoked": self.revoked}


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def parse_scopes(text: str) -> frozenset[str]:
    scopes = frozenset(s.strip() for s in text.split(",") if s.strip())
    bad = sorted(scopes - set(SCOPES))
    if bad or not scopes:
        raise ValueError(f"scopes must be a comma-separated subset of {', '.join(SCOPES)}; bad: {bad}")
    return scopes


class KeyStore:
    """The SQLite table of hashed keys. Not thread-safe; one per process."""

    def __init__(self, path: str, cache_s: float = 2.0, clock=time.monotonic):
        self.path = path
        self.cache_s = cache_s
        self._clock = clock
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL").fetchall()  # finish every statement: an open one pins a stale snapshot
        self._db.execute(_SCHEMA)
        self._cache: dict[str, tuple[float, tuple[bytes, ApiKey]]] = {}
        self._extra: dict[bytes, ApiKey] = {}

    def close(self) -> None:
        self._db.close()

    def create(self, name: str, scopes: frozenset[str], rate: float | None = None,
               burst: int | None = None) -> tuple[str, ApiKey]:
        """(the key, its record). The key itself is shown once and never stored."""
        key_id = secrets.token_hex(6)
        key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(key_id, name, frozenset(scopes), rate, burst, time.time())
        self._db.execute("INSERT INTO api_keys VALUES (?,?,?,?,?,?,?,NULL)",
                         (key_id, name, digest(key), ",".join(sorted(scopes)), rate, burst, record.created))
        return key, record

    def list(self) -> list[ApiKey]:
        rows = self._db.execute("SELECT id,name,scopes,rate,burst,created,revoked FROM api_keys ORDER BY created")
        return [self._record(r) for r in rows]

    def revoke(self, key_id: str) -> bool:
        """True when an active key with that id was revoked."""
        cur = self._db.execute("UPDATE api_keys SET revoked=? WHERE id=? AND revoked IS NULL", (time.time(), key_id))
        self._cache.pop(key_id, None)
        return cur.rowcount == 1

    def add_static(self, key: str, name: str = "env") -> None:
        """A key given in config (MESH_API_KEY): every scope, kept only as its hash."""
        self._extra[digest(key)] = ApiKey("env", name, frozenset(SCOPES))

    @staticmethod
    def _record(row) -> ApiKey:
        key_id, name, scopes, rate, burst, created, revoked = row
        return ApiKey(key_id, name, frozenset(scopes.split(",")), rate, burst, created, revoked)

    def authenticate(self, key: str | None) -> ApiKey:
        """The active key record of `key`; raises Unauthorized."""
        if not key:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        d = digest(key)
        for extra_digest, record in self._extra.items():
            if hmac.compare_digest(d, extra_digest):
                return record
        parts = key[len(PREFIX):].split("_", 1) if key.startswith(PREFIX) else []
        if len(parts) != 2:
            raise Unauthorized("invalid API key")
        key_id = parts[0]
        now = self._clock()
        cached = self._cache.get(key_id)
        if cached is not None and now - cached[0] < self.cache_s:
            stored, record = cached[1]
        else:
            # fetchall, not fetchone: an unfinished cursor keeps a read snapshot open and
            # would hide revocations made by other processes
            rows = self._db.execute("SELECT hash,id,name,scopes,rate,burst,created,revoked FROM api_keys WHERE id=?",
                                    (key_id,)).fetchall()
            if not rows:
                raise Unauthorized("invalid API key")
            row = rows[0]
            stored, record = bytes(row[0]), self._record(row[1:])
            self._cache[key_id] = (now, (stored, record))
        if not hmac.compare_digest(d, stored):
            raise Unauthorized("invalid API key")
        if record.revoked is not None:
            raise Unauthorized("API key revoked")
        return record


def require(key: ApiKey, scope: str | None) -> None:
    """Raise Forbidden unless `key` has `scope` (None: any valid key will do)."""
    if scope is not None and not key.allows(scope):
        raise Forbidden(f"API key {key.id!r} lacks scope {scope!r} (has {', '.join(sorted(key.scopes))})",
                        required_scope=scope)
