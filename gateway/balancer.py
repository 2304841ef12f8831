"""Picking a worker for a request: five strategies over live per-worker load.

`Balancer` keeps, per worker, the requests this gateway has in flight there and the
load the worker last reported (capacity pings). Candidates are sorted by id so the
deterministic strategies do not depend on discovery order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Sequence

from workers.coalesce import batch_limits

from .directory import WorkerHandle


@dataclass
class WorkerStats:
    inflight: int = 0          # this gateway's requests now on the worker
    served: int = 0            # requests sent there, all time
    load: int = 0              # the worker's last reported running requests ("running")
    queue: int = 0             # ... and queued ones ("queued")
    max_concurrent: int = 0    # ... and capacity (0: not reported yet)
    reported: dict = field(default_factory=dict)
    last_finished: int = 0     # order in which this gateway's requests there last finished (0: never)
    # (model, version) -> most rows the worker runs in one batch, for the models it batches;
    # (model, None) too when every loaded version of the model batches (the smallest limit)
    batch_rows: dict = field(default_factory=dict)

    def score(self) -> int:
        """Busy-ness for least-connections and power-of-two: ours first, then reported."""
        return self.inflight * 1_000_000 + self.load + self.queue

    def free_capacity(self) -> int:
        return max(self.max_concurrent - self.load - self.queue, 1) if self.max_concurrent else 1


class Balancer:
    def __init__(self, seed: int | None = None):
        self._stats: dict[str, WorkerStats] = {}
        self._rr: dict[str, int] = {}
        self._wrr: dict[str, dict[str, float]] = {}
        self._rng = random.Random(seed)
        self._finishes = 0

    def stats(self, worker_id: str) -> WorkerStats:
        if worker_id not in self._stats:
            self._stats[worker_id] = WorkerStats()
        return self._stats[worker_id]

    def ids(self) -> set[str]:
        return set(self._stats)

    def forget(self, worker_id: str) -> None:
        self._stats.pop(worker_id, None)
        for weights in self._wrr.values():
            weights.pop(worker_id, None)

    def started(self, worker_id: str) -> None:
        s = self.stats(worker_id)
        s.inflight += 1
        s.served += 1

    def finished(self, worker_id: str) -> None:
        s = self.stats(worker_id)
        s.inflight -= 1
        self._finishes += 1
        s.last_finished = self._finishes

    def update_capacity(self, worker_id: str, capacity: Any) -> None:
        """Take an inference worker's `capacity` reply {"running", "queued", "max_concurrent", ...}
        (workers/inference/worker.py)."""
        if not isinstance(capacity, dict):
            return
        s = self.stats(worker_id)
        for key, field_name in (("running", "load"), ("queued", "queue"), ("max_concurrent", "max_concurrent")):
            value = capacity.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                setattr(s, field_name, value)
        s.reported = {k: v for k, v in capacity.items() if isinstance(v, (int, float, str, bool))}
        s.batch_rows = batch_limits(capacity)

    def pick(self, service: str, strategy: str, candidates: Sequence[WorkerHandle]) -> WorkerHandle:
        """One of `candidates` (non-empty) by `strategy`."""
        workers = sorted(candidates, key=lambda h: h.id)
        if len(workers) == 1:
            return workers[0]
        if strategy == "round-robin":
            return workers[self._next(service) % len(workers)]
        if strategy == "least-connections":
            best = min(self.stats(w.id).score() for w in workers)
            tied = [w for w in workers if self.stats(w.id).score() == best]
            # among equals the warm one: the worker that finished a request last is still
            # polling for the next and has it all in cache, while one idle for two requests'
            # time has gone to sleep (a wake-up costs a sequential client ~0.3 ms a request)
            warm = max(self.stats(w.id).last_finished for w in tied)
            if warm:
                return next(w for w in tied if self.stats(w.id).last_finished == warm)
            return tied[self._next(service) % len(tied)]
        if strategy == "weighted":
            return self._smooth_weighted(service, workers)
        if strategy == "random":
            return self._rng.choice(workers)
        if strategy == "power-of-two":
            a, b = self._rng.sample(workers, 2)
            return a if self.stats(a.id).score() <= self.stats(b.id).score() else b
        raise ValueError(f"unknown strategy {strategy!r}")

    def _next(self, service: str) -> int:
        n = self._rr.get(service, 0)
        self._rr[service] = n + 1
        return n

    def _smooth_weighted(self, service: str, workers: Sequence[WorkerHandle]) -> WorkerHandle:
        # nginx's smooth weighted round-robin: even spacing, exact proportions per cycle.
        current = self._wrr.setdefault(service, {})
        weights = {w.id: self.stats(w.id).free_capacity() for w in workers}
        total = sum(weights.values())
        for wid, weight in weights.items():
            current[wid] = current.get(wid, 0.0) + weight
        chosen = max(workers, key=lambda w: current[w.id])
        current[chosen.id] -= total
        return chosen

