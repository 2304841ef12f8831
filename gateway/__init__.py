"""The HTTP gateway: finds workers through the DHT and calls them over RPC.

Files:
  __main__.py   `python -m gateway` (serve) and `python -m gateway keys ...`
  config.py     GatewayConfig, the frozen config built from CLI and env
  app.py        the aiohttp app: state, middlewares (errors, metrics, auth, limits, deadline)
  routes.py     REST routes, OpenAPI, /metrics, dashboard; kserve.py: KServe v2 routes
  openapi.py    the OpenAPI document; static/dashboard.html: the dashboard page
  bodies.py     request bodies to tensors; tensors.py: tensor encodings and validation
  auth.py       hashed API keys with scopes in SQLite; keys_cli.py: the keys command
  limits.py     per-key token buckets
  directory.py  the WorkerDirectory/WorkerHandle interface and in-process workers
  mesh_client.py the directory over the mesh (mesh.runtime: DHT + Swarm + RPC); the only importer of them
  balancer.py   balancing strategies; health.py: failure counting and quarantine
  dispatch.py   one call to one worker: pick, deadline, retry once, active pings
  catalogue.py  model uploads to the model manager and model signatures
  metrics.py    Prometheus metrics (the one importer of prometheus_client)
  errors.py     the error tree and its HTTP status table
"""

__version__ = "0.1.0"
