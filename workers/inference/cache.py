"""An LRU of loaded models bounded by count and by memory.

Memory is estimated by the model file's size (weights dominate an onnxruntime
session's footprint for the models we serve). `put` returns what it evicted so
the caller can drain and un-announce those models; it never evicts the entry
being inserted. A model that alone exceeds the memory bound is refused with
ModelTooLarge rather than emptying the cache for nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, Hashable, TypeVar

from ..errors import ModelTooLarge

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SessionCache(Generic[K, V]):
    def __init__(self, max_models: int, max_bytes: int):
        if max_models < 1 or max_bytes < 1:
            raise ValueError("cache bounds must be positive")
        self.max_models = max_models
        self.max_bytes = max_bytes
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self.total_bytes = 0
        self.evictions = 0

    def get(self, key: K) -> V | None:
        """The value for `key`, marked most recently used; None if absent."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def peek(self, key: K) -> V | None:
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def put(self, key: K, value: V, size: int) -> list[tuple[K, V]]:
        """Insert (or replace) `key`; returns the evicted (key, value) pairs, oldest first."""
        if size > self.max_bytes:
            raise ModelTooLarge(f"model of {size} bytes exceeds the cache bound of {self.max_bytes} bytes",
                                details={"expected": self.max_bytes, "got": size})
        evicted: list[tuple[K, V]] = []
        old = self.pop(key)
        if old is not None:
            evicted.append((key, old))
        while self._entries and (len(self._entries) >= self.max_models or self.total_bytes + size > self.max_bytes):
            k, (v, s) = self._entries.popitem(last=False)
            self.total_bytes -= s
            self.evictions += 1
            evicted.append((k, v))
        self._entries[key] = (value, size)
        self.total_bytes += size
        return evicted

    def pop(self, key: K) -> V | None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        self.total_bytes -= entry[1]
        return entry[0]

    def keys(self) -> list[K]:
        """Keys from least to most recently used."""
        return list(self._entries)

    def values(self) -> list[V]:
        return [v for v, _ in self._entries.values()]

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)
