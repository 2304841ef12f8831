"""Prometheus metrics (the one importer of prometheus_client), one registry per app."""

from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from mesh.busy_poll import POLLS_HELP, SECONDS_HELP, BusyPollStats

CONTENT_TYPE = CONTENT_TYPE_LATEST
_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _WorkersCollector:
    """workers per topic and health state, read from the gateway at scrape time."""

    def __init__(self, source: Callable[[], Iterable[tuple[str, str, int]]]):
        self._source = source

    def collect(self):
        g = GaugeMetricFamily("gateway_workers", "Workers known per topic and health state",
                              labels=["topic", "state"])
        for topic, state, count in self._source():
            g.add_metric([topic, state], count)
        yield g


class _BusyPollCollector:
    """The event loop's busy-poll counters (mesh.busy_poll), read at scrape time."""

    def __init__(self, source: Callable[[], BusyPollStats | None]):
        self._source = source

    def collect(self):
        stats = self._source()
        if stats is None:
            return
        seconds = CounterMetricFamily("gateway_busy_poll_seconds", SECONDS_HELP)
        seconds.add_metric([], stats.poll_seconds)
        polls = CounterMetricFamily("gateway_busy_polls", POLLS_HELP, labels=["result"])
        for result, count in stats.by_result().items():
            polls.add_metric([result], count)
        yield seconds
        yield polls


class _CoalesceCollector:
    """The dispatcher's coalescing counters (gateway.coalesce), read at scrape time."""

    def __init__(self, source: Callable[[], object | None]):
        self._source = source

    def collect(self):
        c = self._source()
        if c is None:
            return
        for name, text, value in (
                ("gateway_joined_requests", "Inference requests sent to a worker inside a joined request",
                 c.joined_requests),
                ("gateway_joined_calls", "Joined inference requests sent (several requests in one)", c.joined_calls),
                ("gateway_resent_requests", "Requests sent again alone after their joined request failed",
                 c.resent)):
            family = CounterMetricFamily(name, text)
            family.add_metric([], value)
            yield family


class Metrics:
    def __init__(self, workers_source: Callable[[], Iterable[tuple[str, str, int]]],
                 busy_poll_source: Callable[[], BusyPollStats | None] = lambda: None,
                 coalesce_source: Callable[[], object | None] = lambda: None):
        self.registry = CollectorRegistry()
        self.requests = Counter("gateway_requests", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("gateway_request_seconds", "HTTP request latency by route",
                                 ["route"], buckets=_BUCKETS, registry=self.registry)
        self.errors = Counter("gateway_errors", "Errors by kind", ["kind"], registry=self.registry)
        self.retries = Counter("gateway_retries", "Requests moved to another worker", registry=self.registry)
        self.registry.register(_WorkersCollector(workers_source))
        self.registry.register(_BusyPollCollector(busy_poll_source))
        self.registry.register(_CoalesceCollector(coalesce_source))
        self._children: dict = {}   # labels() takes a lock and builds a tuple: cache the children

    def _child(self, metric, *labels):
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self._child(self.requests, route, method, str(status)).inc()
        self._child(self.latency, route).observe(seconds)

    def error(self, kind: str) -> None:
        self._child(self.errors, kind).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def totals(self) -> dict:
        """Request and error totals for the status page (its rates are deltas of these)."""
        requests = errors = 0.0
        for metric in self.registry.collect():
            if metric.name == "gateway_requests":
                requests = sum(s.value for s in metric.samples if s.name.endswith("_total"))
            elif metric.name == "gateway_errors":
                errors = sum(s.value for s in metric.samples if s.name.endswith("_total"))
        return {"requests": requests, "errors": errors}
