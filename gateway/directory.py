"""Where the gateway finds workers: the `WorkerDirectory` / `WorkerHandle` interface.

Everything above this interface (balancing, health, routes) only sees handles with an
`id` and `call(method, value, timeout)`. Two directories implement it:
`LocalWorkerDirectory` here (workers living in this process, for embedding and tests)
and `mesh_client.MeshWorkerDirectory` (workers found on the DHT, called over RPC).

A handle's `call` returns the worker's reply value or raises a GatewayError:
WorkerUnavailable (never reached the worker), WorkerBusy, DeadlineExceeded, or the
error its code maps to (errors.from_worker_code).
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Iterable, Protocol

from .errors import DeadlineExceeded, GatewayError, UnknownMethod, WorkerUnavailable, from_worker_code


class WorkerHandle(Protocol):
    id: str

    async def call(self, method: str, value: Any, timeout: float) -> Any: ...


class WorkerDirectory(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def watch(self, service: str) -> None: ...          # start finding workers of a service (idempotent)
    async def unwatch(self, service: str) -> None: ...
    def workers(self, service: str) -> list[WorkerHandle]: ...  # the ones known now
    async def wait_for_workers(self, service: str, timeout: float, at_least: int = 1) -> list[WorkerHandle]: ...
    def services(self) -> list[str]: ...
    def describe(self) -> dict: ...                           # discovery state for /api/v1/status


Handler = Callable[[Any], Awaitable[Any]]


class LocalWorker:
    """A worker whose RPC methods are coroutines in this process.

    A handler error with a `code` attribute becomes the gateway error of that code,
    exactly as a REQUEST_ERROR with that cause code would over RPC.
    `disconnect()` makes calls fail as an unreachable peer does (before starting).
    """

    def __init__(self, worker_id: str, methods: dict[str, Handler]):
        self.id = worker_id
        self.methods = dict(methods)
        self.connected = True

    def disconnect(self) -> None:
        self.connected = False

    def reconnect(self) -> None:
        self.connected = True

    async def call(self, method: str, value: Any, timeout: float) -> Any:
        if not self.connected:
            raise WorkerUnavailable(f"worker {self.id} is not connected")
        handler = self.methods.get(method)
        if handler is None:
            raise UnknownMethod(f"worker {self.id} has no method {method!r}", worker_code="UNKNOWN_METHOD")
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for wraps the call in a new Task
            async with asyncio.timeout(timeout):
                return await handler(value)
        except TimeoutError:
            raise DeadlineExceeded(f"worker {self.id} did not answer {method!r} within {timeout:.3f}s") from None
        except GatewayError:
            raise
        except Exception as e:  # the RPC boundary: any handler error becomes a coded error, as on the wire
            code = getattr(e, "code", None)
            raise from_worker_code(code, str(e)) from e


class LocalWorkerDirectory:
    """A directory of in-process workers, per service (model id or service name)."""

    def __init__(self) -> None:
        self._by_service: dict[str, list[LocalWorker]] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._watched: set[str] = set()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._by_service.clear()

    def add(self, service: str, worker: LocalWorker) -> None:
        workers = self._by_service.setdefault(service, [])
        if worker not in workers:
            workers.append(worker)
        self._event(service).set()

    def remove(self, service: str, worker: LocalWorker) -> None:
        workers = self._by_service.get(service, [])
        if worker in workers:
            workers.remove(worker)

    def _event(self, service: str) -> asyncio.Event:
        if service not in self._changed:
            self._changed[service] = asyncio.Event()
        return self._changed[service]

    async def watch(self, service: str) -> None:
        self._watched.add(service)

    async def unwatch(self, service: str) -> None:
        self._watched.discard(service)

    def workers(self, service: str) -> list[LocalWorker]:
        return list(self._by_service.get(service, ()))

    async def wait_for_workers(self, service: str, timeout: float, at_least: int = 1) -> list[LocalWorker]:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while len(self.workers(service)) < at_least and loop.time() < end:
            event = self._event(service)
            event.clear()
            try:
                await asyncio.wait_for(event.wait(), end - loop.time())
            except asyncio.TimeoutError:
                break  # too few workers appeared: the caller gets what there is
        return self.workers(service)

    def services(self) -> list[str]:
        return sorted(self._watched | {s for s, w in self._by_service.items() if w})

    def describe(self) -> dict:
        return {"kind": "local", "dht": None, "topics": {s: len(self.workers(s)) for s in self.services()}}


def unique(handles: Iterable[WorkerHandle]) -> list[WorkerHandle]:
    """Handles without repeats, in order (one worker can serve several services)."""
    seen: dict[str, WorkerHandle] = {}
    for h in handles:
        seen.setdefault(h.id, h)
    return list(seen.values())
