"""The gateway's configuration: one frozen dataclass built at the edge.

Layers, later wins: defaults < topics.toml (`namespace`, `bootstrap`; the file named
by `--config` / MESH_CONFIG, default ./topics.toml, skipped if that default is
absent) < environment `MESH_...` < CLI flags. `build_parser()` is also what
`python -m gateway --help` prints.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from dataclasses import dataclass
from typing import Mapping, Sequence

STRATEGIES = ("round-robin", "least-connections", "weighted", "random", "power-of-two")


@dataclass(frozen=True)
class GatewayConfig:
    host: str = "127.0.0.1"                 # listen address (loopback by default)
    port: int = 3000                        # listen port
    keys_db: str = "gateway-keys.sqlite3"   # SQLite file of hashed API keys
    api_key: str | None = None              # an extra admin key (MESH_API_KEY), kept hashed in memory
    namespace: str = "inference-mesh"       # topic namespace: topic = hash("<namespace>:<model>")
    bootstrap: tuple[tuple[str, int], ...] = (("127.0.0.1", 49737),)  # DHT bootstrap nodes
    models: tuple[str, ...] = ()            # model ids whose topics are joined at start
    model_manager: str = "model-manager"    # topic name of the model manager service
    strategy: str = "least-connections"     # default balancing strategy
    model_strategies: tuple[tuple[str, str], ...] = ()  # per-model overrides (model, strategy)
    rate: float = 50.0                      # default tokens per second per key
    burst: int = 100                        # default bucket size per key
    bucket_idle_s: float = 300.0            # idle buckets older than this are pruned
    max_body_bytes: int = 8 * 1024 * 1024   # inference/JSON body limit (413 above)
    max_model_bytes: int = 512 * 1024 * 1024  # model upload limit (413 above)
    upload_chunk_bytes: int = 256 * 1024    # chunk size when streaming an upload to the manager
    request_timeout_s: float = 30.0         # per-request deadline (504 after)
    worker_wait_s: float = 2.0              # how long a request waits for a first worker to appear
    discovery_interval_s: float = 3.0       # how often watched topics are looked up again (new workers)
    ping_interval_s: float = 2.0            # active health pings (capacity calls)
    ping_timeout_s: float = 1.0
    failure_threshold: int = 3              # consecutive failures before quarantine
    quarantine_base_s: float = 1.0          # first quarantine; doubles per repeat
    quarantine_max_s: float = 60.0
    key_cache_s: float = 2.0                # how long a checked key is trusted before re-reading SQLite
    seed: int | None = None                 # seed for random strategies (tests, benchmarks)
    busy_poll_us: int = 2000                # event loop polls this long (adaptive) before sleeping; 0: off
    coalesce_max_rows: int = 64             # most rows in one joined infer request (workers/coalesce.py); 0 or 1: off

    def strategy_for(self, model: str) -> str:
        """The balancing strategy of `model`."""
        return dict(self.model_strategies).get(model, self.strategy)


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected host:port, got {text!r}")
    return host, int(port)


def _model_strategy(text: str) -> tuple[str, str]:
    model, _, strategy = text.partition("=")
    if strategy not in STRATEGIES:
        raise argparse.ArgumentTypeError(f"expected model=strategy with strategy in {STRATEGIES}, got {text!r}")
    return model, strategy


# (field, flags, type, env, help) for every option; one list keeps CLI, env and help in step.
_OPTIONS = [
    ("host", "--host", str, "MESH_GATEWAY_HOST", "listen address"),
    ("port", "--port", int, "MESH_GATEWAY_PORT", "listen port (0: a free one, shown in the start line)"),
    ("keys_db", "--keys-db", str, "MESH_KEYS_DB", "SQLite file of hashed API keys"),
    ("api_key", "--api-key", str, "MESH_API_KEY", "an extra key with every scope (prefer the env var)"),
    ("namespace", "--namespace", str, "MESH_NAMESPACE", "topic namespace"),
    ("bootstrap", "--bootstrap", _addr, "MESH_BOOTSTRAP", "DHT bootstrap node host:port (repeatable; env: comma-separated)"),
    ("models", "--model", str, "MESH_MODELS", "model id whose topic is joined at start (repeatable; env: comma-separated)"),
    ("model_manager", "--model-manager", str, "MESH_MODEL_MANAGER", "topic name of the model manager"),
    ("strategy", "--strategy", str, "MESH_STRATEGY", f"default balancing strategy: {', '.join(STRATEGIES)}"),
    ("model_strategies", "--model-strategy", _model_strategy, "MESH_MODEL_STRATEGIES", "per-model strategy model=strategy (repeatable)"),
    ("rate", "--rate", float, "MESH_RATE", "default requests per second per key"),
    ("burst", "--burst", int, "MESH_BURST", "default burst (bucket size) per key"),
    ("bucket_idle_s", "--bucket-idle", float, "MESH_BUCKET_IDLE", "seconds after which idle rate buckets are pruned"),
    ("max_body_bytes", "--max-body", int, "MESH_MAX_BODY", "largest inference/JSON body in bytes"),
    ("max_model_bytes", "--max-model", int, "MESH_MAX_MODEL", "largest model upload in bytes"),
    ("upload_chunk_bytes", "--upload-chunk", int, "MESH_UPLOAD_CHUNK", "bytes per chunk sent to the model manager"),
    ("request_timeout_s", "--timeout", float, "MESH_TIMEOUT", "per-request deadline in seconds"),
    ("worker_wait_s", "--worker-wait", float, "MESH_WORKER_WAIT", "seconds a request waits for a first worker"),
    ("discovery_interval_s", "--discovery-interval", float, "MESH_DISCOVERY_INTERVAL",
     "seconds between DHT lookups of watched topics (finds new workers)"),
    ("ping_interval_s", "--ping-interval", float, "MESH_PING_INTERVAL", "seconds between health pings"),
    ("ping_timeout_s", "--ping-timeout", float, "MESH_PING_TIMEOUT", "timeout of one health ping"),
    ("failure_threshold", "--failure-threshold", int, "MESH_FAILURE_THRESHOLD", "consecutive failures before quarantine"),
    ("quarantine_base_s", "--quarantine-base", float, "MESH_QUARANTINE_BASE", "first quarantine in seconds (doubles per repeat)"),
    ("quarantine_max_s", "--quarantine-max", float, "MESH_QUARANTINE_MAX", "longest quarantine in seconds"),
    ("key_cache_s", "--key-cache", float, "MESH_KEY_CACHE", "seconds a checked key is trusted before re-reading the key store"),
    ("seed", "--seed", int, "MESH_SEED", "seed of the random strategies"),
    ("busy_poll_us", "--busy-poll-us", int, "MESH_BUSY_POLL_US",
     "microseconds the event loop polls for I/O before it sleeps (adaptive; saves wake-ups at low load "
     "at the price of CPU time; 0 turns it off)"),
    ("coalesce_max_rows", "--coalesce-max-rows", int, "MESH_COALESCE_MAX_ROWS",
     "most rows in one infer request joined from concurrent requests to the same worker, for models "
     "the worker batches (also capped by its max_batch_size); 0 or 1 turns joining off"),
]
_REPEATABLE = {"bootstrap", "models", "model_strategies"}


DEFAULT_TOPICS = "topics.toml"


def _from_topics(path: str, explicit: bool) -> dict:
    """namespace and bootstrap from a topics.toml; {} if the default file is absent."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        if explicit:
            raise ValueError(f"{path}: no such file") from None
        return {}
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"{path}: {e}") from None
    out: dict = {}
    if "namespace" in doc:
        if not isinstance(doc["namespace"], str) or not doc["namespace"]:
            raise ValueError(f"{path}: namespace must be a non-empty string")
        out["namespace"] = doc["namespace"]
    if "bootstrap" in doc:
        if not isinstance(doc["bootstrap"], list):
            raise ValueError(f"{path}: bootstrap must be a list of \"host:port\" strings")
        try:
            out["bootstrap"] = tuple(_addr(str(a)) for a in doc["bootstrap"])
        except argparse.ArgumentTypeError as e:
            raise ValueError(f"{path}: bootstrap: {e}") from None
    return out


def build_parser() -> argparse.ArgumentParser:
    """The `python -m gateway` parser (serve options)."""
    p = argparse.ArgumentParser(
        prog="python -m gateway",
        description="HTTP gateway of the inference mesh. Serves REST, KServe v2, /metrics and a dashboard; "
        "finds workers through the DHT and calls them over RPC.",
        epilog="Key management: python -m gateway keys {create,list,revoke} --help. "
        "Every option can also be set by the environment variable shown.",
    )
    defaults = GatewayConfig()
    p.add_argument("--config", dest="config_path", default=None,
                   help=f"topics.toml to read namespace and bootstrap from [env MESH_CONFIG; default {DEFAULT_TOPICS}]")
    for name, flag, typ, env, text in _OPTIONS:
        default = getattr(defaults, name)
        action = "append" if name in _REPEATABLE else "store"
        p.add_argument(flag, dest=name, type=typ, action=action, default=None,
                       help=f"{text} [env {env}; default {default!r}]")
    return p


def _from_env(env: Mapping[str, str]) -> dict:
    out: dict = {}
    for name, _flag, typ, var, _text in _OPTIONS:
        if var not in env or env[var] == "":
            continue
        raw = env[var]
        if name in _REPEATABLE:
            out[name] = tuple(typ(item.strip()) for item in raw.split(",") if item.strip())
        else:
            out[name] = typ(raw)
    return out


def from_args(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """The config from CLI `argv` over environment `env` over topics.toml over defaults.
    Raises SystemExit on bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    env = os.environ if env is None else env
    topics_path = args.config_path or env.get("MESH_CONFIG") or DEFAULT_TOPICS
    try:
        values = _from_topics(topics_path, explicit=topics_path != DEFAULT_TOPICS)
    except ValueError as e:
        parser.error(f"bad topics file: {e}")
    try:
        values.update(_from_env(env))
    except (ValueError, argparse.ArgumentTypeError) as e:
        parser.error(f"bad environment value: {e}")
    for name, *_ in _OPTIONS:
        v = getattr(args, name)
        if v is not None:
            values[name] = tuple(v) if name in _REPEATABLE else v
    config = GatewayConfig(**values)
    if config.strategy not in STRATEGIES:
        parser.error(f"--strategy must be one of {STRATEGIES}")
    if config.coalesce_max_rows < 0:
        parser.error(f"--coalesce-max-rows must be 0 or more, got {config.coalesce_max_rows}")
    if config.busy_poll_us < 0:
        parser.error(f"--busy-poll-us must be 0 or more, got {config.busy_poll_us}")
    return config

