"""The worker base class: the one place worker lifecycle lives.

A worker is a set of RPC methods plus the topics it announces. Subclasses (the
inference worker, the model manager, the CRUD template worker) add methods and
topics and override the hooks; they never touch the swarm or RPC server directly.

Worker API
----------
    class EchoWorker(Worker):
        role = "workers.echo"

        def __init__(self, config: WorkerConfig):
            super().__init__(config)
            self.method("echo", self.echo)                 # imperative table entry

        @rpc_method("ping", encoding="json")               # declarative table entry
        async def ping(self, value):
            return {"pong": value}

        async def echo(self, value):                        # plain async def value -> value
            if value is None:
                raise InvalidInput("echo needs a value")   # a workers.errors.WorkerError
            return value

        async def on_start(self):  await self.join("echo")  # hooks: on_start / on_stop
        async def on_stop(self):   ...                      # after drain, topics left

    w = EchoWorker(WorkerConfig(name="echo", ops_port=0))
    await w.start(Mesh(swarm=swarm, rpc=rpc_server))   # or start() with no mesh
    await w.call("echo", {"a": 1})                      # in-process, same path as RPC
    await w.run(mesh)   # start, serve until SIGTERM/SIGINT or request_stop(), drain, stop

* `method(name, handler, encoding="msgpack")` adds an RPC method. Handlers are
  `async def handler(value) -> value`; they raise `workers.errors.WorkerError`
  subclasses, whose `code` the RPC layer sends as the REQUEST_ERROR cause code.
  Any other exception is logged with its traceback and leaves as INTERNAL.
  `@rpc_method(name, encoding=...)` on a method does the same declaratively.
* Every call (RPC or `call()`) goes through one wrapper: it refuses new work
  with UNAVAILABLE unless the worker is serving, counts in-flight calls, and
  records `mesh_worker_requests_total{method,code}` and
  `mesh_worker_request_seconds{method}`.
* Topics: `join(name)` announces `topic_key(namespace, name)` as a server
  (`swarm.join(key, server=True, client=False)`), now if serving, else once
  `start()` has made the worker serving (so no caller finds it still starting);
  `leave(name)` un-announces. `topics` lists the joined names.
* The mesh is injected at `start(mesh)`: any object with `.swarm` (Swarm-like:
  `join(topic, server=, client=)`, `leave(topic)`, `on_connection(cb)`) and
  `.rpc` (RpcServer-like: `respond(method, handler, encoding=)`, `attach(conn)`),
  either may be None. With `mesh.attach_connections` true (the default for
  `Mesh`), each swarm connection is attached to the RPC server.
* `stop()` drains gracefully: stop accepting (new calls get UNAVAILABLE), wait
  up to `drain_timeout_s` for running calls, leave all topics, run `on_stop()`,
  close the operator HTTP port. `run()` does this on SIGTERM or SIGINT.
* `health()` is the /health body; subclasses add fields with `health_details()`.
  `registry` (workers.metrics.Registry) holds the metrics /metrics renders.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Protocol

from mesh import eventloop
from mesh.busy_poll import POLLS_HELP, SECONDS_HELP, BusyPollStats
from mesh.topics import topic_key

from .config import WorkerConfig
from .errors import INTERNAL, Unavailable, WorkerError, as_worker_error, wire_error
from .logging import BoundLogger, configure_logging, get_logger
from .metrics import Registry

Handler = Callable[[Any], Awaitable[Any]]
ENCODINGS = ("msgpack", "json", "raw")


class SwarmLike(Protocol):
    def join(self, topic: bytes, *, server: bool = True, client: bool = True) -> Any: ...
    def leave(self, topic: bytes) -> Any: ...
    def on_connection(self, callback: Callable[[Any, Any], Any]) -> Any: ...


class RpcServerLike(Protocol):
    def respond(self, method: str, handler: Handler, encoding: str = "msgpack", in_task: bool = True) -> Any: ...
    def attach(self, conn: Any) -> Any: ...


@dataclass(frozen=True)
class Mesh:
    """What a worker binds to: a swarm and an RPC server (either may be None)."""

    swarm: SwarmLike | None = None
    rpc: RpcServerLike | None = None
    attach_connections: bool = True


@dataclass(frozen=True)
class Method:
    name: str
    handler: Handler       # the wrapped handler (what the RPC server gets)
    encoding: str
    in_task: bool = True   # see RpcServer.respond


def rpc_method(name: str | None = None, *, encoding: str = "msgpack"):
    """Mark an `async def` method of a Worker subclass as an RPC method."""
    def mark(fn):
        fn.__rpc_method__ = (name or fn.__name__, encoding)
        return fn
    return mark


CREATED, STARTING, SERVING, DRAINING, STOPPED = "created", "starting", "serving", "draining", "stopped"


class Worker:
    """Base of every mesh worker; see the module docstring for the API."""

    role = "workers.base"

    def __init__(self, config: WorkerConfig, *, log: BoundLogger | None = None):
        self.config = config
        self.log = log or get_logger(self.role, worker=config.name)
        self.registry = Registry()
        self.state = CREATED
        self._methods: dict[str, Method] = {}
        self._topics: dict[str, bytes] = {}
        self._announced: set[str] = set()
        self._lookups: set[str] = set()
        self._mesh: Mesh | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._serving = asyncio.Event()
        self._stop_requested: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None
        self._started_at = 0.0
        self._ops = None
        self._m_requests = self.registry.counter("requests_total", "RPC calls by method and result code",
                                                 ("method", "code"))
        self._m_seconds = self.registry.histogram("request_seconds", "RPC call latency", ("method",))
        self.registry.gauge("in_flight", "RPC calls running now", (), lambda: {(): float(self._in_flight)})
        self._busy_poll: BusyPollStats | None = None  # of the loop `run()` serves on
        self.registry.read_counter("busy_poll_seconds", SECONDS_HELP, (), self._busy_poll_seconds)
        self.registry.read_counter("busy_polls", POLLS_HELP, ("result",), self._busy_polls)
        for attr in dir(type(self)):
            fn = getattr(type(self), attr, None)
            mark = getattr(fn, "__rpc_method__", None)
            if mark:
                self.method(mark[0], getattr(self, attr), encoding=mark[1])

    # ------------------------------------------------------------ method table

    def method(self, name: str, handler: Handler, *, encoding: str = "msgpack", in_task: bool = True) -> None:
        """Add RPC method `name` (before start; a later add is registered at once).

        in_task=False: the handler carries on from the futures it awaits rather
        than in a Task (RpcServer.respond): for hot handlers that await asyncio
        futures only and use no asyncio.timeout()."""
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        if not inspect.iscoroutinefunction(handler):
            raise TypeError(f"handler for {name!r} must be an async def")
        if name in self._methods:
            raise ValueError(f"RPC method {name!r} registered twice")
        m = Method(name, self._wrap(name, handler), encoding, in_task)
        self._methods[name] = m
        if self._mesh is not None and self._mesh.rpc is not None:
            self._mesh.rpc.respond(name, m.handler, encoding=encoding, in_task=in_task)

    @property
    def methods(self) -> Mapping[str, Method]:
        return dict(self._methods)

    async def call(self, name: str, value: Any = None) -> Any:
        """Call method `name` in-process, through the same wrapper RPC calls use."""
        try:
            m = self._methods[name]
        except KeyError:
            raise Unavailable(f"no RPC method {name!r}") from None
        return await m.handler(value)

    def _wrap(self, name: str, handler: Handler) -> Handler:
        async def wrapped(value: Any) -> Any:
            if self.state != SERVING:
                self._m_requests.inc(name, Unavailable.code)
                raise Unavailable(f"worker {self.config.name} is {self.state}")
            self._in_flight += 1
            if self._in_flight == 1:
                self._idle.clear()
            t0 = time.perf_counter()
            code = "OK"
            try:
                return await handler(value)
            except WorkerError as e:
                code = e.code
                if code == INTERNAL:  # a bug caught lower down: keep its traceback
                    self.log.error("handler failed", exc_info=e.__cause__ or e, extra={"method": name})
                raise
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except Exception as e:
                code = wire_error(e)[0]
                self.log.exception("handler failed", extra={"method": name})
                raise as_worker_error(e) from e
            finally:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._idle.set()
                self._m_requests.inc(name, code)
                self._m_seconds.observe(time.perf_counter() - t0, name)
        wrapped.__name__ = f"rpc_{name}"
        return wrapped

    # ------------------------------------------------------------ topics

    def topic_key(self, name: str) -> bytes:
        return topic_key(self.config.namespace, name)

    @property
    def topics(self) -> list[str]:
        return sorted(self._topics)

    async def join(self, name: str, *, lookup: bool = False) -> bytes:
        """Announce topic `name` as a server (now if serving, else once started).
        `lookup` also looks the topic up as a client, to connect to its other
        members (e.g. model managers replicating each other)."""
        key = self.topic_key(name)
        self._topics[name] = key
        if lookup:
            self._lookups.add(name)
        if self.state == SERVING:  # joins made while starting are announced once serving
            await self._announce(name)
        return key

    async def leave(self, name: str) -> None:
        """Stop announcing topic `name` (no-op if not joined)."""
        self._topics.pop(name, None)
        self._lookups.discard(name)
        if name in self._announced:
            self._announced.discard(name)
            swarm = self._mesh.swarm if self._mesh else None
            if swarm is not None:
                await _maybe_await(swarm.leave(self.topic_key(name)))
            self.log.info("topic left", extra={"topic": name})

    async def _leave_all(self) -> None:
        """Leave every announced topic at once: each unannounce may wait on DHT
        nodes that are gone, and those waits should overlap, not add up."""
        await asyncio.gather(*(self.leave(name) for name in list(self._announced)))

    async def _announce(self, name: str) -> None:
        if name in self._announced:
            return
        self._announced.add(name)
        swarm = self._mesh.swarm if self._mesh else None
        if swarm is not None:
            discovery = swarm.join(self._topics[name], server=True, client=name in self._lookups)
            flushed = getattr(discovery, "flushed", None)
            if callable(flushed) and await _maybe_await(flushed()) is False:
                self.log.warning("topic announce stored on no node yet; retrying",
                                 extra={"topic": name, "key": self._topics[name].hex()})
        self.log.info("topic joined", extra={"topic": name, "key": self._topics[name].hex()})

    # ------------------------------------------------------------ lifecycle

    async def on_start(self) -> None:
        """Hook: runs after methods are registered, before topics are announced."""

    async def on_stop(self) -> None:
        """Hook: runs after the drain and after topics are left."""

    def health_details(self) -> dict[str, Any]:
        """Hook: extra fields for /health."""
        return {}

    def health(self) -> dict[str, Any]:
        return {
            "status": self.state,
            "name": self.config.name,
            "role": self.role,
            "in_flight": self._in_flight,
            "topics": self.topics,
            "uptime_s": round(time.monotonic() - self._started_at, 3) if self._started_at else 0.0,
            **self.health_details(),
        }

    async def start(self, mesh: Mesh | Any | None = None) -> None:
        """Bind to `mesh`, run on_start, announce topics, open the ops port."""
        if self.state != CREATED:
            raise RuntimeError(f"worker already {self.state}")
        self.state = STARTING
        self._stop_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        self._started_at = time.monotonic()
        self._mesh = _as_mesh(mesh)
        try:
            if self._mesh.rpc is not None:
                for m in self._methods.values():
                    self._mesh.rpc.respond(m.name, m.handler, encoding=m.encoding, in_task=m.in_task)
                if self._mesh.swarm is not None and self._mesh.attach_connections:
                    rpc = self._mesh.rpc
                    self._mesh.swarm.on_connection(lambda conn, info=None: rpc.attach(conn))
            await self.on_start()
            if self.config.ops_port:
                from .ops_http import OpsServer
                self._ops = OpsServer(self.config.ops_host, self.config.ops_port, self.health, self.registry)
                await self._ops.start()
            # Serving before announcing: a peer that finds a topic may call at once,
            # and must not be refused as UNAVAILABLE by a worker still starting.
            self.state = SERVING
            for name in list(self._topics):
                await self._announce(name)
        except BaseException:
            self.state = STOPPED
            try:  # undo what started: topics, subclass resources, the ops port
                await self._leave_all()
                await self.on_stop()
            finally:
                await self._close_ops()
                self._stopped.set()
            raise
        self.state = SERVING
        self._serving.set()
        self.log.info("worker started", extra={"methods": sorted(self._methods), "topics": self.topics,
                                              "ops_port": self.ops_port})

    def _busy_poll_seconds(self) -> dict[tuple[str, ...], float]:
        return {(): self._busy_poll.poll_seconds} if self._busy_poll is not None else {}

    def _busy_polls(self) -> dict[tuple[str, ...], float]:
        stats = self._busy_poll
        return {(result,): float(n) for result, n in stats.by_result().items()} if stats is not None else {}

    async def wait_serving(self) -> None:
        """Return once `start()` has finished (for `run()` callers and tests)."""
        await self._serving.wait()

    @property
    def ops_port(self) -> int | None:
        return self._ops.port if self._ops else None

    def request_stop(self) -> None:
        """Ask `run()` to drain and stop (safe from signal handlers)."""
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def stop(self, *, drain_timeout: float | None = None) -> None:
        """Drain and stop: refuse new calls, finish running ones, leave topics."""
        if self.state in (CREATED, STOPPED):
            self.state = STOPPED
            return
        if self.state == DRAINING:
            await self._stopped.wait()
            return
        self.state = DRAINING
        self._serving.clear()
        timeout = self.config.drain_timeout_s if drain_timeout is None else drain_timeout
        self.log.info("draining", extra={"in_flight": self._in_flight, "timeout_s": timeout})
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            self.log.warning("drain timed out", extra={"in_flight": self._in_flight})
        try:
            await self._leave_all()
            await self.on_stop()
        finally:
            await self._close_ops()
            self.state = STOPPED
            self._stopped.set()
            self.log.info("worker stopped")

    async def _close_ops(self) -> None:
        if self._ops is not None:
            await self._ops.close()
            self._ops = None

    async def run(self, mesh: Mesh | Any | None = None,
                  signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
        """Start, serve until a signal or `request_stop()`, then drain and stop.

        The process-wide settings of a worker that owns its process live here, not in
        `start()`: its signal handlers and its event loop's busy polling."""
        loop = asyncio.get_running_loop()
        if eventloop.set_busy_poll(self.config.busy_poll_us / 1e6, loop):
            self._busy_poll = eventloop.busy_poll_stats(loop)
        await self.start(mesh)
        installed = []
        for sig in signals:
            try:
                loop.add_signal_handler(sig, self.request_stop)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # not the main thread / platform
                pass
        try:
            await self._stop_requested.wait()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self.stop()


def _as_mesh(mesh: Any) -> Mesh:
    if mesh is None:
        return Mesh()
    if isinstance(mesh, Mesh):
        return mesh
    return Mesh(swarm=getattr(mesh, "swarm", None), rpc=getattr(mesh, "rpc", None),
                attach_connections=getattr(mesh, "attach_connections", True))


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


def setup_logging(config: Any) -> None:
    """A role's logging hook (`python -m mesh.node` calls it before the role starts):
    JSON lines on stderr at the config's `log_level`."""
    configure_logging(getattr(config, "log_level", "INFO"))


def run_standalone(role_config: Callable[..., Any], run_role: Callable[[Any, Any], Awaitable[None]],
                   argv: list[str]) -> int:
    """A role's `main`: without a mesh (operator port only), `--topics PATH` plus any
    config option, until SIGTERM/SIGINT. Roles on the mesh start through `python -m mesh.node`."""
    argv = list(argv)
    topics = None
    if "--topics" in argv:
        i = argv.index("--topics")
        topics = argv[i + 1] if i + 1 < len(argv) else None
        del argv[i:i + 2]
    import os

    config = role_config(topics, env=os.environ, argv=argv)
    setup_logging(config)
    eventloop.run(run_role(config, None))
    return 0
