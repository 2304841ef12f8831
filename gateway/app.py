"""The aiohttp application: state, and its middleware (errors, metrics, auth, limits, deadlines).

`create_app(config, directory, keys)` builds it; routes come from `routes.py` and
`kserve.py`, each declaring the scope it needs (PUBLIC: no key).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from aiohttp import web

from mesh import eventloop
from mesh.busy_poll import BusyPollStats
from mesh.topics import topic_key

from .auth import ApiKey, KeyStore, require
from .catalogue import Catalogue
from .config import GatewayConfig
from .directory import WorkerDirectory
from .dispatch import Dispatcher
from .errors import (BadRequest, DeadlineExceeded, GatewayError, MethodNotAllowed, NotFound, PayloadTooLarge,
                     RateLimited, error_body, http_status)
from .jsonio import json_response
from .limits import RateLimiter, retry_after_header
from .metrics import Metrics

log = logging.getLogger("gateway")

PUBLIC = "public"   # route scope: no key needed
ANY = None          # route scope: any valid key


@dataclass
class Gateway:
    config: GatewayConfig
    directory: WorkerDirectory
    keys: KeyStore
    dispatcher: Dispatcher
    catalogue: Catalogue
    limiter: RateLimiter
    metrics: Metrics
    started: float = field(default_factory=time.time)
    tasks: list = field(default_factory=list)
    scopes: dict = field(default_factory=dict)   # handler -> scope
    clock: Callable[[], float] | None = None     # rate-limit clock; None: the loop's (tests step their own)

    def now(self) -> float:
        return self.clock() if self.clock is not None else asyncio.get_running_loop().time()

    def topic_hex(self, service: str) -> str:
        return topic_key(self.config.namespace, service).hex()

    def workers_by_state(self):
        now = self.dispatcher.now() if _loop_running() else 0.0
        for service in self.directory.services():
            counts: dict[str, int] = {}
            for w in self.directory.workers(service):
                state = self.dispatcher.health.get(w.id).state(now)
                counts[state] = counts.get(state, 0) + 1
            for state in ("healthy", "suspect", "probation", "quarantined"):
                yield service, state, counts.get(state, 0)

    def busy_poll_stats(self) -> BusyPollStats | None:
        """The busy-poll counters of the loop serving the gateway (None outside a MeshEventLoop)."""
        return eventloop.busy_poll_stats() if _loop_running() else None


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


GATEWAY = web.AppKey("gateway", Gateway)


def _request_key(name: str, kind: type):
    """A typed request key on aiohttp >= 3.14 (web.RequestKey), the plain name before it."""
    key_class = getattr(web, "RequestKey", None)
    return key_class(name, kind) if key_class is not None else name


DEADLINE = _request_key("deadline", float)   # loop time by which the request must be answered
API_KEY = _request_key("api_key", ApiKey)


def gateway_of(request: web.Request) -> Gateway:
    return request.app[GATEWAY]


def _route_name(request: web.Request) -> str:
    info = request.match_info
    if info.http_exception is not None or info.route.resource is None:
        return "unmatched"
    return info.route.resource.canonical


def _error_response(request: web.Request, error: GatewayError) -> web.Response:
    status = http_status(error)
    if request.path.startswith("/v2/"):
        body = {"error": error.message}       # KServe v2 error shape
    else:
        body = error_body(error)
    headers = {}
    if isinstance(error, RateLimited):
        headers["Retry-After"] = retry_after_header(error.retry_after)
    elif status == 503:
        headers["Retry-After"] = "1"   # busy or between workers: worth a retry soon
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="inference-mesh"'
    return json_response(body, status=status, headers=headers)


_HTTP_ERRORS = {404: NotFound, 405: MethodNotAllowed, 413: PayloadTooLarge}


def api_key_of(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("X-API-Key")


def request_timeout(request: web.Request, limit: float) -> float:
    """The request's deadline in seconds: X-Request-Timeout if given and shorter, else `limit`."""
    text = request.headers.get("X-Request-Timeout")
    if text is None:
        return limit
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise BadRequest(f"X-Request-Timeout must be a positive number of seconds, got {text!r}")
    return min(value, limit)


@web.middleware
async def gateway_middleware(request: web.Request, handler):
    """Every request's frame, in one middleware (each one more is a coroutine per request):
    key, scope and rate limit, the deadline, errors as JSON, and metrics."""
    gw = gateway_of(request)
    start = time.perf_counter()
    try:
        response = await _authorized(gw, request, handler)
    except GatewayError as e:
        gw.metrics.error(e.kind)
        response = _error_response(request, e)
    except web.HTTPException as e:
        if e.status not in _HTTP_ERRORS:
            raise
        error = _HTTP_ERRORS[e.status](e.reason if e.status != 413 else
                                       f"body is larger than the limit of {gw.config.max_body_bytes} bytes")
        gw.metrics.error(error.kind)
        response = _error_response(request, error)
    except Exception:  # the HTTP edge: a bug becomes a logged 500 in the JSON shape, not a dropped connection
        log.exception("unhandled error in %s %s", request.method, request.path)
        error = GatewayError("internal error")
        gw.metrics.error(error.kind)
        response = _error_response(request, error)
    gw.metrics.observe(_route_name(request), request.method, response.status, time.perf_counter() - start)
    return response


async def _authorized(gw: Gateway, request: web.Request, handler):
    """The handler's response, once the key, its scope and its rate allow it, within the deadline."""
    info = request.match_info
    if info.http_exception is not None:
        return await handler(request)
    scope = gw.scopes.get(info.handler, ANY)
    if scope != PUBLIC:
        key = gw.keys.authenticate(api_key_of(request))
        require(key, scope)
        wait = gw.limiter.take(key.id, key.rate if key.rate is not None else gw.config.rate,
                               key.burst if key.burst is not None else gw.config.burst, gw.now())
        if wait > 0:
            raise RateLimited(f"rate limit of key {key.id!r} exceeded; retry in {wait:.2f}s", retry_after=wait)
        request[API_KEY] = key
    timeout = request_timeout(request, gw.config.request_timeout_s)
    request[DEADLINE] = asyncio.get_running_loop().time() + timeout
    scope_timeout = asyncio.timeout(timeout)
    try:
        async with scope_timeout:
            return await handler(request)
    except TimeoutError:
        if not scope_timeout.expired():
            raise
        raise DeadlineExceeded(f"request took longer than its deadline of {timeout}s") from None


async def _prune_buckets(gw: Gateway) -> None:
    while True:
        await asyncio.sleep(max(gw.config.bucket_idle_s / 4, 0.05))
        gw.limiter.prune(gw.now())


async def _on_startup(app: web.Application) -> None:
    gw = app[GATEWAY]
    await gw.directory.start()
    for service in (*gw.config.models, gw.config.model_manager):
        await gw.directory.watch(service)
    gw.tasks += [asyncio.create_task(gw.dispatcher.run_pings()), asyncio.create_task(_prune_buckets(gw))]


async def _on_cleanup(app: web.Application) -> None:
    gw = app[GATEWAY]
    for task in gw.tasks:
        task.cancel()
    for task in gw.tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await gw.dispatcher.coalescer.close()
    await gw.directory.close()


def create_app(config: GatewayConfig, directory: WorkerDirectory, keys: KeyStore) -> web.Application:
    """The gateway app over `directory`, authenticating with `keys`."""
    from . import kserve, routes   # late: they import this module's helpers

    if config.api_key:
        keys.add_static(config.api_key)
    dispatcher = Dispatcher(directory, config)
    gw = Gateway(config, directory, keys, dispatcher, Catalogue(dispatcher), RateLimiter(config.bucket_idle_s),
                 metrics=None)  # type: ignore[arg-type]
    gw.metrics = Metrics(gw.workers_by_state, gw.busy_poll_stats, lambda: dispatcher.coalescer)
    dispatcher.on_retry = gw.metrics.retries.inc
    app = web.Application(middlewares=[gateway_middleware],
                          client_max_size=config.max_body_bytes)
    app[GATEWAY] = gw
    for module in (routes, kserve):
        for method, path, handler, scope in module.ROUTES:
            app.router.add_route(method, path, handler)
            gw.scopes[handler] = scope
    app.on_startup.append(_on_startup)
    app.on_cleanup.append(_on_cleanup)
    return app
