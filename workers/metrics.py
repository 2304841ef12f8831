"""Plain-Python counters, gauges and histograms for workers.

Workers record into these from the event loop (and from executor threads, hence
the lock on histograms); the `stats` RPC reads them as dicts and the operator
HTTP port (`ops_http.py`, the one importer of prometheus-client) renders them in
the Prometheus text format. Keeping the numbers here means a worker without the
HTTP port still has its stats, and prometheus-client enters through one module.
"""

from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable

Labels = tuple[str, ...]

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass
class Counter:
    name: str
    help: str
    labelnames: Labels = ()
    values: dict[Labels, float] = field(default_factory=dict)
    kind = "counter"

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0.0)


@dataclass
class Gauge:
    """A gauge whose values are read from `read()` at collection time."""

    name: str
    help: str
    labelnames: Labels
    read: Callable[[], dict[Labels, float]]
    kind = "gauge"

    @property
    def values(self) -> dict[Labels, float]:
        return self.read()


@dataclass
class ReadCounter(Gauge):
    """A counter whose totals are kept elsewhere and read at collection time."""

    kind = "counter"


@dataclass
class HistogramSeries:
    counts: list[int]          # per bucket, not cumulative; last is +Inf
    total: float = 0.0
    count: int = 0


@dataclass
class Histogram:
    name: str
    help: str
    labelnames: Labels = ()
    buckets: tuple[float, ...] = LATENCY_BUCKETS_S
    series: dict[Labels, HistogramSeries] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    kind = "histogram"

    def observe(self, value: float, *labels: str) -> None:
        # on every request several times: no helper calls inside the lock
        with self.lock:
            s = self.series.get(labels)
            if s is None:
                s = self.series[labels] = HistogramSeries([0] * (len(self.buckets) + 1))
            s.counts[bisect.bisect_left(self.buckets, value)] += 1  # first bucket with value <= bound
            s.total += value
            s.count += 1

    def snapshot(self, *labels: str) -> dict:
        """{"count", "sum", "buckets": {upper_bound: count_in_bucket}} (not cumulative)."""
        with self.lock:
            s = self.series.get(labels)
            if s is None:
                return {"count": 0, "sum": 0.0, "buckets": {}}
            bounds = [*(str(b) for b in self.buckets), "+Inf"]
            return {"count": s.count, "sum": s.total,
                    "buckets": {b: c for b, c in zip(bounds, s.counts) if c}}

    def quantile(self, q: float, *labels: str) -> float:
        """Upper bound of the bucket holding quantile `q` (NaN when empty)."""
        with self.lock:
            s = self.series.get(labels)
            if s is None or s.count == 0:
                return math.nan
            rank, seen = q * s.count, 0
            for bound, c in zip((*self.buckets, math.inf), s.counts):
                seen += c
                if seen >= rank:
                    return bound
            return math.inf


Metric = Counter | Gauge | ReadCounter | Histogram


class Registry:
    """The metrics of one worker (one per worker, so tests can run several)."""

    def __init__(self, prefix: str = "mesh_worker"):
        self.prefix = prefix
        self._metrics: dict[str, Metric] = {}

    def _add(self, metric: Metric) -> Metric:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name!r} registered twice")
        self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help: str, labelnames: Labels = ()) -> Counter:
        return self._add(Counter(f"{self.prefix}_{name}", help, labelnames))

    def histogram(self, name: str, help: str, labelnames: Labels = (),
                  buckets: tuple[float, ...] = LATENCY_BUCKETS_S) -> Histogram:
        return self._add(Histogram(f"{self.prefix}_{name}", help, labelnames, buckets))

    def gauge(self, name: str, help: str, labelnames: Labels,
              read: Callable[[], dict[Labels, float]]) -> Gauge:
        return self._add(Gauge(f"{self.prefix}_{name}", help, labelnames, read))

    def read_counter(self, name: str, help: str, labelnames: Labels,
                     read: Callable[[], dict[Labels, float]]) -> ReadCounter:
        return self._add(ReadCounter(f"{self.prefix}_{name}", help, labelnames, read))

    def __iter__(self) -> Iterable[Metric]:
        return iter(list(self._metrics.values()))
