"""Per-key token buckets: `rate` tokens per second up to `burst`; idle buckets pruned.

`take` answers how long to wait when the bucket is empty, which becomes Retry-After.
Time is passed in so tests can step it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Bucket:
    rate: float
    burst: float
    tokens: float
    last: float

    def take(self, now: float, cost: float = 1.0) -> float:
        """0.0 when a token was taken, else the seconds until one will be there."""
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate if self.rate > 0 else math.inf


class RateLimiter:
    def __init__(self, idle_s: float = 300.0):
        self.idle_s = idle_s
        self._buckets: dict[str, Bucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key_id: str, rate: float, burst: int, now: float) -> float:
        """0.0 if `key_id` may go now, else seconds to wait. A changed rate/burst resets the bucket."""
        b = self._buckets.get(key_id)
        if b is None or b.rate != rate or b.burst != burst:
            b = self._buckets[key_id] = Bucket(rate, float(burst), float(burst), now)
        return b.take(now)

    def prune(self, now: float) -> int:
        """Drop buckets unused for idle_s (they would be full again anyway); returns how many."""
        idle = [k for k, b in self._buckets.items() if now - b.last >= self.idle_s]
        for k in idle:
            del self._buckets[k]
        return len(idle)


def retry_after_header(seconds: float) -> str:
    """Retry-After in whole seconds, never 0 (HTTP wants an integer)."""
    return str(max(1, math.ceil(seconds))) if math.isfinite(seconds) else "3600"
