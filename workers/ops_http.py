"""A worker's small operator HTTP port: GET /health and GET /metrics.

The one module of `workers` that imports aiohttp and prometheus-client. /health
answers the worker's `health()` dict as JSON (200 while serving, 503 while
starting, draining or stopped); /metrics renders the worker's
`workers.metrics.Registry` in the Prometheus text format. Bound to 127.0.0.1 by
default; port 0 in the worker config disables it (this class itself accepts 0 as
"pick a free port", which tests use).
"""

from __future__ import annotations

from typing import Any, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from .metrics import Counter, Gauge, Histogram, Registry

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Collector:
    """Adapts a workers.metrics.Registry to prometheus-client's collector API."""

    def __init__(self, registry: Registry):
        self.registry = registry

    def collect(self):
        for m in self.registry:
            if isinstance(m, (Counter, Gauge)):  # a ReadCounter is a Gauge of kind "counter"
                family = CounterMetricFamily if m.kind == "counter" else GaugeMetricFamily
                fam = family(m.name, m.help, labels=list(m.labelnames))
                for labels, v in m.values.items():
                    fam.add_metric(list(labels), v)
            elif isinstance(m, Histogram):
                fam = HistogramMetricFamily(m.name, m.help, labels=list(m.labelnames))
                with m.lock:
                    series = [(labels, list(s.counts), s.total) for labels, s in m.series.items()]
                for labels, counts, total in series:
                    cumulative, acc = [], 0
                    for bound, c in zip([*map(_bound, m.buckets), "+Inf"], counts):
                        acc += c
                        cumulative.append((bound, acc))
                    fam.add_metric(list(labels), cumulative, total)
            else:  # pragma: no cover - Registry only makes these kinds
                continue
            yield fam


def _bound(b: float) -> str:
    return repr(float(b))


def render_metrics(registry: Registry) -> bytes:
    """The registry in the Prometheus text exposition format."""
    prom = CollectorRegistry(auto_describe=False)
    prom.register(_Collector(registry))
    return generate_latest(prom)


class OpsServer:
    """Serves /health and /metrics for one worker until `close()`."""

    def __init__(self, host: str, port: int, health: Callable[[], dict[str, Any]], registry: Registry):
        self.host = host
        self.requested_port = port
        self._health = health
        self._registry = registry
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> int:
        """Bind and serve; returns the bound port."""
        app = web.Application()
        app.router.add_get("/health", self._on_health)
        app.router.add_get("/metrics", self._on_metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.requested_port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self.port

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _on_health(self, request: web.Request) -> web.Response:
        body = self._health()
        status = 200 if body.get("status") == "serving" else 503
        return web.json_response(body, status=status)

    async def _on_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=render_metrics(self._registry), headers={"Content-Type": CONTENT_TYPE})
