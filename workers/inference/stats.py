"""Per-model inference statistics (counts, batch sizes, latencies).

Recorded into the worker's `workers.metrics.Registry`, so the same numbers feed
the `stats` RPC (as dicts) and /metrics (as Prometheus histograms).
"""

from __future__ import annotations

from ..metrics import BATCH_BUCKETS, Registry


class InferenceStats:
    def __init__(self, registry: Registry):
        self.requests = registry.counter("inference_requests_total", "infer calls by model and result code",
                                         ("model", "code"))
        self.rows = registry.counter("inference_rows_total", "rows inferred", ("model",))
        self.batches = registry.counter("inference_batches_total", "onnxruntime runs", ("model",))
        self.batch_rows = registry.histogram("inference_batch_rows", "rows per onnxruntime run", ("model",),
                                             buckets=BATCH_BUCKETS)
        self.batch_requests = registry.histogram("inference_batch_requests", "requests per onnxruntime run",
                                                 ("model",), buckets=BATCH_BUCKETS)
        self.queue_s = registry.histogram("inference_queue_seconds", "time a request waited to run", ("model",))
        self.run_s = registry.histogram("inference_run_seconds", "onnxruntime run time per batch", ("model",))
        self.total_s = registry.histogram("inference_request_seconds", "time from admission to result",
                                          ("model",))
        self.busy = registry.counter("inference_busy_total", "requests refused with BUSY", ("model",))

    def snapshot(self, model: str) -> dict:
        by_code = {labels[1]: int(v) for labels, v in self.requests.values.items() if labels[0] == model}
        return {
            "requests": by_code,
            "rows": int(self.rows.get(model)),
            "batches": int(self.batches.get(model)),
            "busy": int(self.busy.get(model)),
            "batch_rows": self.batch_rows.snapshot(model),
            "batch_requests": self.batch_requests.snapshot(model),
            "queue_seconds": self.queue_s.snapshot(model),
            "run_seconds": self.run_s.snapshot(model),
            "request_seconds": self.total_s.snapshot(model),
        }
