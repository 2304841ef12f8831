"""Sending one call to one worker of a service, with balancing, health and failover.

`Dispatcher.call` picks a healthy worker, calls it before the deadline and, when the
worker did not start the request (unreachable, or BUSY), retries once on another one.
Concurrent `infer` calls to one worker may travel as one request (workers/coalesce.py).
`Dispatcher.ping_all` is one round of active health checks (capacity calls);
`Dispatcher.run_pings` repeats it on an interval. A worker whose pings put it in
quarantine is abandoned (its handle's optional `abandon(reason)`: the mesh drops
the connection), so requests waiting on a dead peer are retried elsewhere at once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from workers.coalesce import Coalescer

from .balancer import Balancer
from .config import GatewayConfig
from .directory import WorkerDirectory, WorkerHandle, unique
from .errors import (RETRYABLE, DeadlineExceeded, GatewayError, ModelNotFound, ModelNotReady, NoWorkers,
                     UnknownMethod, WorkerBusy, WorkerFailed, WorkerUnavailable)
from .health import HealthTracker

log = logging.getLogger("gateway.dispatch")

# Errors of a joined infer request that each of its calls would have got alone as well.
_SHARED_ERRORS = (*RETRYABLE, DeadlineExceeded, ModelNotFound, ModelNotReady, UnknownMethod)


def _shared_error(error: BaseException) -> bool:
    return isinstance(error, _SHARED_ERRORS)


class Dispatcher:
    def __init__(self, directory: WorkerDirectory, config: GatewayConfig,
                 balancer: Balancer | None = None, health: HealthTracker | None = None):
        self.directory = directory
        self.config = config
        self.balancer = balancer or Balancer(config.seed)
        self.health = health or HealthTracker(config.failure_threshold, config.quarantine_base_s,
                                              config.quarantine_max_s)
        self.retries = 0
        self.on_retry: Callable[[], object] = lambda: None
        self.coalescer = Coalescer(config.coalesce_max_rows, self._batch_rows, _shared_error)

    def _batch_rows(self, worker_id: str, model: str, version: Any) -> int:
        return self.balancer.stats(worker_id).batch_rows.get((model, version), 0)

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def candidates(self, service: str, deadline: float) -> list[WorkerHandle]:
        """The healthy workers of `service`, waiting (bounded) for a first one to appear.

        Raises ModelNotFound when no worker serves it, NoWorkers when all are quarantined.
        """
        workers = self.directory.workers(service)
        if not workers:
            await self.directory.watch(service)
            # leave part of the deadline for the answer "no such model" itself
            wait = min(self.config.worker_wait_s, max(0.8 * (deadline - self.now()), 0.0))
            workers = await self.directory.wait_for_workers(service, wait)
            if not workers:
                if service not in self.config.models:
                    await self.directory.unwatch(service)
                raise ModelNotFound(f"no worker serves {service!r}", model=service)
        now = self.now()
        healthy = [w for w in workers if self.health.available(w.id, now)]
        if not healthy:
            raise NoWorkers(f"all {len(workers)} workers of {service!r} are quarantined after failures", model=service)
        return healthy

    async def call(self, service: str, method: str, value: Any, deadline: float,
                   strategy: str | None = None) -> tuple[Any, str]:
        """(reply, worker id) of `method` on a worker of `service`, by `deadline` (loop time)."""
        candidates = await self.candidates(service, deadline)
        strategy = strategy or self.config.strategy_for(service)
        plan = self.coalescer.plan(value) if method == "infer" else None
        last: GatewayError | None = None
        last_id = ""
        for attempt in range(2):
            pool = [w for w in candidates if w.id != last_id]
            if not pool:
                break
            if attempt == 1:
                self.retries += 1
                self.on_retry()
            # a call that joins a request still open goes with it: the balancer spreads joined requests
            worker = self.coalescer.open_worker(plan, pool) or self.balancer.pick(service, strategy, pool)
            remaining = deadline - self.now()
            if remaining <= 0:
                raise DeadlineExceeded(f"deadline passed before {service!r} could be called")
            self.balancer.started(worker.id)
            try:
                if method == "infer":
                    reply = await self.coalescer.call(worker, value, remaining, plan)
                else:
                    reply = await worker.call(method, value, remaining)
            except RETRYABLE as e:
                last, last_id = e, worker.id
                if isinstance(e, WorkerUnavailable):
                    self.health.failure(worker.id, self.now(), e.message)
                continue
            except UnknownMethod:
                raise
            except (DeadlineExceeded, WorkerFailed) as e:
                # the worker took the request and did not deliver: a health failure, not retried
                self.health.failure(worker.id, self.now(), e.message)
                raise
            finally:
                self.balancer.finished(worker.id)
            self.health.success(worker.id)
            return reply, worker.id
        assert last is not None
        if isinstance(last, WorkerBusy):
            raise WorkerBusy(f"workers of {service!r} are busy: {last.message}", model=service)
        raise WorkerUnavailable(f"no worker of {service!r} could be reached: {last.message}", model=service)

    async def ping(self, worker: WorkerHandle) -> None:
        """One capacity call; updates load on success, counts a failure otherwise."""
        try:
            capacity = await worker.call("capacity", {}, self.config.ping_timeout_s)
        except UnknownMethod:
            capacity = None   # it answered, so it is alive; it just does not report load (e.g. a model manager)
        except GatewayError as e:
            if self.health.failure(worker.id, self.now(), f"ping: {e.message}"):
                # quarantined: give up its connection, so that calls stuck on a dead peer fail
                # now (and move to another worker) instead of at their deadlines
                abandon = getattr(worker, "abandon", None)
                if abandon is not None:
                    abandon(f"quarantined after failed pings: {e.message}")
            return
        self.balancer.update_capacity(worker.id, capacity)
        self.health.success(worker.id)

    def all_workers(self) -> list[WorkerHandle]:
        return unique(w for s in self.directory.services() for w in self.directory.workers(s))

    async def ping_all(self) -> None:
        """Ping every known worker that is not in quarantine, concurrently; forget departed ones."""
        now = self.now()
        workers = self.all_workers()
        due = [w for w in workers if self.health.available(w.id, now)]
        await asyncio.gather(*(self.ping(w) for w in due))
        self.forget_departed({w.id for w in workers})

    def forget_departed(self, present: set[str]) -> None:
        """Drop load and health records of workers that left (so churn does not grow them)."""
        for worker_id in self.balancer.ids() - present:
            if self.balancer.stats(worker_id).inflight == 0:
                self.balancer.forget(worker_id)
        for worker_id in self.health.ids() - present:
            self.health.forget(worker_id)

    async def run_pings(self) -> None:
        """Ping rounds forever; a bug in one round is logged and the next round still runs."""
        while True:
            try:
                await self.ping_all()
            except Exception:  # supervisor loop: health checking must outlive one bad round
                log.exception("health ping round failed")
            await asyncio.sleep(self.config.ping_interval_s)

    def worker_report(self, service: str) -> list[dict]:
        """Per-worker load and health of `service`, for /api/v1/status."""
        now = self.now()
        out = []
        for w in sorted(self.directory.workers(service), key=lambda h: h.id):
            s, h = self.balancer.stats(w.id), self.health.get(w.id)
            out.append({"id": w.id, "health": h.state(now), "failures": h.failures,
                        "quarantined_for_s": round(max(h.until - now, 0.0), 3), "last_error": h.last_error,
                        "inflight": s.inflight, "served": s.served, "load": s.load, "queue": s.queue,
                        "max_concurrent": s.max_concurrent})
        return out
