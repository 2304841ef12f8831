"""The gateway's side of the mesh: the only module that touches mesh.runtime and mesh.rpc.

`MeshWorkerDirectory` runs one `mesh.runtime.MeshRuntime` (DHT + Swarm + RPC, the
same assembly `python -m mesh.node` roles run on), joins each watched service's
topic (topic_key(namespace, name)) as a client, uses the runtime's RpcPeer of each
worker connection (the Swarm keeps connections up and reconnects), and exposes
each worker as a `MeshWorker` handle whose `call` is an RPC request. RPC and
connection failures become gateway errors here:
  RpcError(code)                -> errors.from_worker_code(code)  (BUSY, INVALID_INPUT, ...,
                                   TIMEOUT_EXCEEDED, CHANNEL_CLOSED/DESTROYED)
  mesh ClosedError / ConnectionError / a connection already closed -> WorkerUnavailable
  A connection lost while a call waits counts as "not started" and is retried once:
  inference has no side effects. Uploads are not retried (catalogue.py calls one handle).
  mesh TimeoutError_ / asyncio timeout                              -> DeadlineExceeded

Mesh API used: MeshRuntime(RuntimeConfig(keypair, bootstrap)), runtime.swarm.join(topic,
server=False, client=True) -> discovery with `await discovery.flushed()` and
`await discovery.refresh()`,
runtime.worker_swarm.on_connection(cb(conn, peer_info)) (peer_info.public_key,
peer_info.topics: 32-byte topics, may grow), runtime.peer(conn) -> RpcPeer,
conn.closed (a future done on close); RpcPeer.request(method, value, timeout=s,
encoding="msgpack"); RpcError.code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from mesh import crypto
from mesh.errors import ClosedError, MeshError, TimeoutError_
from mesh.rpc import RpcError, RpcPeer
from mesh.runtime import MeshRuntime, RuntimeConfig
from mesh.topics import topic_key

from .catalogue import entry_model
from .config import GatewayConfig
from .errors import DeadlineExceeded, GatewayError, WorkerUnavailable, from_worker_code

log = logging.getLogger("gateway.mesh")


class MeshWorker:
    """One worker connection, called over RPC."""

    def __init__(self, conn: Any, peer_info: Any, rpc: RpcPeer):
        self.conn = conn
        self.peer_info = peer_info
        self.id = bytes(peer_info.public_key).hex()
        self.rpc = rpc
        self.probed_topics: set[bytes] = set()   # topics of the models it says it serves

    @property
    def closed(self) -> bool:
        return self.conn.closed.done()

    def abandon(self, reason: str) -> None:
        """Drop the connection: calls waiting on it fail with WorkerUnavailable (retried on
        another worker) and the Swarm dials the peer again if it is still there."""
        if not self.closed:
            log.warning("abandoning worker %s: %s", self.id[:16], reason)
            self.conn.destroy()

    def serves(self, topic: bytes) -> bool:
        """Does it announce `topic` (the Swarm's peer info) or say it serves its model (a probe)?"""
        return topic in self.probed_topics or any(t == topic for t in getattr(self.peer_info, "topics", ()) or ())

    async def call(self, method: str, value: Any, timeout: float) -> Any:
        if self.closed:
            raise WorkerUnavailable(f"connection to worker {self.id[:16]} is closed")
        try:
            return await self.rpc.request(method, value, timeout=timeout, encoding="msgpack")
        except RpcError as e:
            code = getattr(e, "code", None)
            if code == "REQUEST_ERROR":   # the handler's own code travels as the cause code
                code = getattr(e, "cause_code", None) or code
            raise from_worker_code(code, str(e)) from e
        except (TimeoutError_, asyncio.TimeoutError) as e:
            raise DeadlineExceeded(f"worker {self.id[:16]} did not answer {method!r} within {timeout:.3f}s") from e
        except (ClosedError, ConnectionError) as e:
            # the request could not be sent or the connection died: the worker did not
            # run it to completion for us, and the swarm will drop or replace the connection
            raise WorkerUnavailable(f"worker {self.id[:16]}: {e}") from e
        except MeshError as e:
            raise WorkerUnavailable(f"worker {self.id[:16]}: {type(e).__name__}: {e}") from e


class MeshWorkerDirectory:
    """Workers of each watched service, found through the DHT with one Swarm."""

    def __init__(self, config: GatewayConfig, keypair: Any | None = None):
        self.config = config
        self.keypair = keypair or crypto.keypair()
        self.runtime: MeshRuntime | None = None
        self._topics: dict[str, bytes] = {}          # service -> topic
        self._discoveries: dict[str, Any] = {}
        self._workers: dict[str, MeshWorker] = {}    # worker id -> handle
        self._probes: dict[str, asyncio.Task] = {}
        self._changed = asyncio.Event()
        self._lost = asyncio.Event()                 # a worker connection closed: look again soon
        self._rediscover: asyncio.Task | None = None

    async def start(self) -> None:
        runtime = MeshRuntime(RuntimeConfig(keypair=self.keypair, bootstrap=tuple(self.config.bootstrap)))
        await runtime.start()
        runtime.worker_swarm.on_connection(self._on_connection)
        self.runtime = runtime
        self._rediscover = asyncio.create_task(self._rediscover_loop())

    async def _rediscover_loop(self) -> None:
        """Look every watched topic up again every `discovery_interval_s`, and at once after a
        worker left: the Swarm's own refresh is every ~10 minutes, and a new or restarted
        worker (server-only, it never dials us) must get traffic within seconds."""
        while True:
            try:
                await asyncio.wait_for(self._lost.wait(), self.config.discovery_interval_s)
            except asyncio.TimeoutError:
                pass
            self._lost.clear()
            results = await asyncio.gather(*(d.refresh() for d in list(self._discoveries.values())),
                                           return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException) and not isinstance(r, MeshError):
                    raise r   # a bug, not a network failure (those the next round retries)

    async def close(self) -> None:
        if self._rediscover is not None:
            self._rediscover.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rediscover
            self._rediscover = None
        for probe in self._probes.values():
            probe.cancel()
        self._probes.clear()
        if self.runtime is not None:
            await self.runtime.stop()
            self.runtime = None
        self._workers.clear()

    def _on_connection(self, conn: Any, peer_info: Any) -> None:
        worker = MeshWorker(conn, peer_info, self.runtime.peer(conn))
        old = self._workers.get(worker.id)
        self._workers[worker.id] = worker
        conn.closed.add_done_callback(lambda _f, w=worker: self._on_close(w))
        if old is not None and old.conn is not conn:
            old.conn.destroy()  # the swarm deduplicates; keep the newest connection
        self._probes[worker.id] = asyncio.create_task(self._probe(worker))
        self._changed.set()

    async def _probe(self, worker: MeshWorker) -> None:
        """Learn the models a worker serves, in case peer_info.topics does not name them all."""
        try:
            reply = await worker.call("models", {}, self.config.ping_timeout_s)
        except GatewayError:
            return  # not an inference worker (e.g. the model manager): topics alone place it
        entries = reply.get("models") if isinstance(reply, dict) else reply
        ids = {entry_model(e) for e in entries if isinstance(e, dict) and isinstance(entry_model(e), str)} \
            if isinstance(entries, list) else set()
        worker.probed_topics = {topic_key(self.config.namespace, i) for i in ids}
        self._changed.set()

    def _on_close(self, worker: MeshWorker) -> None:
        if self._workers.get(worker.id) is worker:
            del self._workers[worker.id]
            probe = self._probes.pop(worker.id, None)
            if probe is not None:
                probe.cancel()
            self._lost.set()
        self._changed.set()

    async def watch(self, service: str) -> None:
        if service in self._topics or self.runtime is None:
            return
        topic = topic_key(self.config.namespace, service)
        self._topics[service] = topic
        self._discoveries[service] = self.runtime.swarm.join(topic, server=False, client=True)

    async def unwatch(self, service: str) -> None:
        topic = self._topics.pop(service, None)
        self._discoveries.pop(service, None)
        if topic is not None and self.runtime is not None:
            await self.runtime.swarm.leave(topic)

    def workers(self, service: str) -> list[MeshWorker]:
        topic = self._topics.get(service)
        if topic is None:
            return []
        return [w for w in self._workers.values() if not w.closed and w.serves(topic)]

    async def wait_for_workers(self, service: str, timeout: float, at_least: int = 1) -> list[MeshWorker]:
        """The workers of `service` once there are `at_least` of them, or whatever there are at `timeout`."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        discovery = self._discoveries.get(service)
        if discovery is not None and len(self.workers(service)) < at_least:
            try:
                await asyncio.wait_for(discovery.flushed(), max(end - loop.time(), 0))
            except asyncio.TimeoutError:
                pass  # no answer in time: whatever connected so far is the answer
            if not self._candidates(service):
                # That flush may be older than this request (a topic watched before, next
                # re-lookup up to discovery_interval_s away): a worker that announced since
                # is missed, so look once more now before answering "nobody".
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(discovery.refresh(), max(end - loop.time(), 0))
            if not self._candidates(service):
                return self.workers(service)   # the lookups found nobody: nothing to wait for
        while len(self.workers(service)) < at_least and loop.time() < end:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), end - loop.time())
            except asyncio.TimeoutError:
                break
        return self.workers(service)

    def _candidates(self, service: str) -> bool:
        """True when the Swarm knows a peer of `service`'s topic it is connected or may still connect to."""
        topic = self._topics.get(service)
        table = getattr(self.runtime.swarm, "table", None) if self.runtime is not None else None
        if topic is None or table is None:
            return True   # cannot tell: wait
        return any(topic in p.topics and not p.banned for p in table.peers.values())

    def services(self) -> list[str]:
        return sorted(self._topics)

    def describe(self) -> dict:
        dht = self.runtime.dht if self.runtime is not None else None
        state = None
        if dht is not None:
            state = {"address": list(getattr(dht, "address", ()) or ()),
                     "firewalled": getattr(dht, "firewalled", None),
                     "public_address": list(getattr(dht, "public_address", ()) or ())}
        return {"kind": "mesh", "public_key": bytes(self.keypair.public_key).hex(), "dht": state,
                "bootstrap": [f"{h}:{p}" for h, p in self.config.bootstrap],
                "connections": len(self._workers),
                "topics": {s: len(self.workers(s)) for s in self.services()}}
