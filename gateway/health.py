"""Worker health: passive failure counting, quarantine with exponential backoff.

A worker is quarantined after `threshold` consecutive failures, for
base * 2**(n-1) seconds (capped) on its n-th quarantine in a row. When that ends it is
on probation: one success clears its record, one failure quarantines it again for
twice as long. Time is passed in (`now`), so tests step it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class WorkerHealth:
    failures: int = 0            # consecutive failures
    quarantines: int = 0         # quarantines in a row without a success
    until: float = 0.0           # end of the current quarantine
    last_error: str = ""

    def state(self, now: float) -> str:
        if now < self.until:
            return "quarantined"
        if self.quarantines:
            return "probation"
        return "suspect" if self.failures else "healthy"


class HealthTracker:
    def __init__(self, threshold: int = 3, base_s: float = 1.0, max_s: float = 60.0):
        self.threshold = max(threshold, 1)
        self.base_s = base_s
        self.max_s = max_s
        self._workers: dict[str, WorkerHealth] = {}

    def get(self, worker_id: str) -> WorkerHealth:
        if worker_id not in self._workers:
            self._workers[worker_id] = WorkerHealth()
        return self._workers[worker_id]

    def ids(self) -> set[str]:
        return set(self._workers)

    def forget(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)

    def available(self, worker_id: str, now: float) -> bool:
        h = self._workers.get(worker_id)
        return h is None or now >= h.until

    def success(self, worker_id: str) -> None:
        h = self._workers.get(worker_id)
        if h is not None:
            h.failures = 0
            h.quarantines = 0
            h.until = 0.0

    def failure(self, worker_id: str, now: float, reason: str = "") -> bool:
        """Count a failure; returns True when it put the worker in quarantine."""
        h = self.get(worker_id)
        h.failures += 1
        h.last_error = reason
        if h.failures >= self.threshold or h.quarantines:
            h.quarantines += 1
            h.failures = 0
            h.until = now + min(self.base_s * 2 ** (h.quarantines - 1), self.max_s)
            return True
        return False
