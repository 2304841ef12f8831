"""Services that run on the mesh: inference workers, the model manager, the worker
base, and the CRUD template worker.

base.py        Worker: lifecycle (start, drain on SIGTERM, stop), RPC method table,
               topic joins; the API is documented in its module docstring
errors.py      the package's error tree; each error's `code` is its wire cause code
config.py      layered frozen config (defaults < topics.toml < MESH_* < CLI),
               topics.toml's [[models]] entries
logging.py     structured JSON logs (one object per line) on stdlib logging
metrics.py     plain counters/gauges/histograms behind `stats` RPCs and /metrics
ops_http.py    operator HTTP port: /health and /metrics (aiohttp, prometheus-client)
inference/     the inference worker role (onnxruntime runner, batching, cache)
inference_client.py  InferenceClient: calling inference workers from Python, joining
               concurrent calls
coalesce.py    joining concurrent infer calls to one worker (the gateway's and the client's)
models/        the model manager role, model storage, replication, fetching
thing.py, things/, book.py  the CRUD template worker and its example
(roles are configured in the top-level topics.toml and started by `python -m mesh.node`)
"""
