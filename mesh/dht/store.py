"""What a persistent node stores for others (sans-IO): announce records, router
entries for servers, and mutable / immutable values.

Records are kept per target then public key and expire 20 minutes after their
last announce; memory is bounded by a two-generation cache (every 2/3 of the
max age the old generation is dropped and the young one becomes old), plus a
hard cap on entries. Mutable and immutable values live 48 hours.
"""

from __future__ import annotations

from ..encoding import Address

RECORD_MAX_AGE = 20 * 60.0
VALUE_MAX_AGE = 48 * 3600.0
MAX_RECORDS = 65_536
MAX_VALUES = 32_768
MAX_RECORDS_PER_REPLY = 20
MAX_BUMP_DRIFT_MS = 60_000


class _Entry:
    __slots__ = ("value", "at")

    def __init__(self, value, at: float):
        self.value = value
        self.at = at


class GenerationCache:
    """A key -> value map with max age and size, using two generations."""

    __slots__ = ("max_age", "max_size", "_young", "_old", "_rotated")

    def __init__(self, max_age: float, max_size: int, now: float):
        self.max_age = max_age
        self.max_size = max_size
        self._young: dict = {}
        self._old: dict = {}
        self._rotated = now

    def _gc(self, now: float) -> None:
        while now - self._rotated >= self.max_age * 2 / 3:
            self._old, self._young = self._young, {}
            self._rotated += self.max_age * 2 / 3
            if not self._old:
                self._rotated = max(self._rotated, now)
        if len(self._young) >= self.max_size:
            self._old, self._young = self._young, {}
            self._rotated = now

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def set(self, key, value, now: float) -> None:
        self._gc(now)
        self._old.pop(key, None)
        self._young[key] = _Entry(value, now)

    def get(self, key, now: float):
        self._gc(now)
        e = self._young.get(key) or self._old.get(key)
        if e is None or now - e.at > self.max_age:
            return None
        return e.value

    def peek(self, key):
        """The stored value regardless of age, without collecting."""
        e = self._young.get(key) or self._old.get(key)
        return None if e is None else e.value

    def delete(self, key) -> None:
        self._young.pop(key, None)
        self._old.pop(key, None)

    def items(self, now: float):
        self._gc(now)
        for gen in (self._young, self._old):
            for k, e in gen.items():
                if now - e.at <= self.max_age:
                    yield k, e.value


class RouterEntry:
    """A server's self-announce held by this node: where to relay its handshakes."""

    __slots__ = ("relay", "record")

    def __init__(self, relay: Address, record: bytes):
        self.relay = relay
        self.record = record


MAX_RECORDS_PER_TARGET = 256


class Store:
    __slots__ = ("records", "bumps", "router", "mutables", "immutables")

    def __init__(self, now: float):
        # target -> {public_key: _Entry(encoded peer record)}; the cache bounds the
        # number of targets and their age, MAX_RECORDS_PER_TARGET the rest
        self.records = GenerationCache(RECORD_MAX_AGE, MAX_RECORDS // 16, now)
        self.bumps = GenerationCache(RECORD_MAX_AGE, MAX_RECORDS, now)
        self.router = GenerationCache(RECORD_MAX_AGE, MAX_RECORDS, now)
        self.mutables = GenerationCache(VALUE_MAX_AGE, MAX_VALUES, now)
        self.immutables = GenerationCache(VALUE_MAX_AGE, MAX_VALUES, now)

    # ---- announce records
    def add_record(self, target: bytes, public_key: bytes, record: bytes, now: float) -> None:
        per = self.records.get(target, now)
        if per is None:
            per = {}
        per.pop(public_key, None)
        per[public_key] = _Entry(record, now)
        if len(per) > MAX_RECORDS_PER_TARGET:
            del per[next(iter(per))]
        self.records.set(target, per, now)

    def remove_record(self, target: bytes, public_key: bytes) -> None:
        per = self.records.peek(target)
        if per is not None:
            per.pop(public_key, None)

    def get_records(self, target: bytes, now: float, limit: int = MAX_RECORDS_PER_REPLY) -> list[bytes]:
        per = self.records.get(target, now)
        if not per:
            return []
        stale = [pk for pk, e in per.items() if now - e.at > RECORD_MAX_AGE]
        for pk in stale:
            del per[pk]
        # newest first, so a fresh announce is never crowded out by old ones
        return [e.value for e in reversed(per.values())][:limit]

    def set_bump(self, target: bytes, bump: int, now: float, wall_ms: int) -> None:
        current = self.bumps.get(target, now) or 0
        if current < bump <= wall_ms + MAX_BUMP_DRIFT_MS:
            self.bumps.set(target, bump, now)

    def get_bump(self, target: bytes, now: float) -> int:
        return self.bumps.get(target, now) or 0

    # ---- router entries (target = hash(server public key))
    def set_router(self, target: bytes, relay: Address, record: bytes, now: float) -> None:
        self.router.set(target, RouterEntry(relay, record), now)

    def get_router(self, target: bytes, now: float) -> RouterEntry | None:
        return self.router.get(target, now)

    def delete_router(self, target: bytes) -> None:
        self.router.delete(target)

    def record_count(self, now: float) -> int:
        return sum(len(per) for _, per in self.records.items(now))
