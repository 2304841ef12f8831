"""Layered worker configuration into frozen dataclasses.

Layers, later wins:  dataclass defaults < topics.toml < environment MESH_* < CLI.

* topics.toml: top-level `namespace` and `bootstrap`, the `[workers]` table
  (settings shared by all worker roles), the role's own table (role
  "workers.inference" reads `[workers.inference]`), and `[[models]]` entries
  (see the top-level `topics.toml`).
* environment: `MESH_<FIELD>` for each field of the role's config class, e.g.
  `MESH_OPS_PORT=0`, `MESH_BOOTSTRAP=127.0.0.1:49737,127.0.0.1:49738`.
* CLI: `--<field-name> value` or `--<field-name>=value` (dashes or underscores),
  e.g. `--ops-port 0 --drain-timeout-s 5`.

Values from env and CLI are strings and are converted by the field's type
(int, float, bool, str, tuple of str, host:port tuples); a value that does not
convert raises `ConfigInvalid` naming the field and the layer. Build config at the
edge (`build_config`/`load_topics`); nothing below reads the environment.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

from .errors import ConfigInvalid

ENV_PREFIX = "MESH_"
Address = tuple[str, int]
C = TypeVar("C")


@dataclass(frozen=True)
class WorkerConfig:
    """Settings every worker role has.

    name: shown in logs and /health.  namespace: topic namespace (topic keys are
    BLAKE2b-256("<namespace>:<name>")).  bootstrap: DHT bootstrap addresses (for
    the lead's mesh wiring; workers only pass them on).  ops_host/ops_port: the
    operator HTTP port (/health, /metrics); 0 disables it.  drain_timeout_s: how
    long a graceful stop waits for running requests.  log_level: stdlib level.
    busy_poll_us: how long a worker process's event loop polls for I/O before it
    sleeps (adaptive, see mesh/busy_poll.py); 0 turns polling off.
    """

    name: str = "worker"
    namespace: str = "inference-mesh"
    bootstrap: tuple[Address, ...] = ()
    ops_host: str = "127.0.0.1"
    ops_port: int = 0
    drain_timeout_s: float = 30.0
    log_level: str = "INFO"
    busy_poll_us: int = 2000

    def __post_init__(self) -> None:
        if self.busy_poll_us < 0:
            raise ConfigInvalid(f"busy_poll_us must be 0 or more, got {self.busy_poll_us}")


@dataclass(frozen=True)
class ModelConfig:
    """One `[[models]]` entry of topics.toml: a model the mesh serves.

    `file` is relative to the worker's model_dir (or absolute); `sha256` pins the
    file's content (a load with another digest is refused). Serving settings left
    as None take the worker role's defaults. `role` is the worker role that
    serves it (its import path, e.g. "workers.inference").
    """

    id: str
    version: str = "1"
    file: str | None = None
    sha256: str | None = None
    role: str = "workers.inference"
    batching: bool | None = None
    max_batch_size: int | None = None
    max_delay_ms: float | None = None
    max_concurrent: int | None = None
    max_queue: int | None = None
    inline_max_us: float | None = None
    split_bursts: bool | None = None
    follow_runs: bool | None = None


@dataclass(frozen=True)
class TopicsConfig:
    """The parts of topics.toml that are not per-role settings."""

    namespace: str = "inference-mesh"
    bootstrap: tuple[Address, ...] = ()
    models: tuple[ModelConfig, ...] = ()

    def model(self, model_id: str) -> ModelConfig | None:
        return next((m for m in self.models if m.id == model_id), None)

    def models_for(self, role: str) -> tuple[ModelConfig, ...]:
        return tuple(m for m in self.models if m.role == role)


# ---------------------------------------------------------------- loading


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; a syntax error or a missing file raises ConfigInvalid."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigInvalid(f"cannot read {path}: {e}") from e


def load_topics(doc: Mapping[str, Any] | str | Path) -> TopicsConfig:
    """The namespace, bootstrap list and models of a topics.toml (path or parsed)."""
    if not isinstance(doc, Mapping):
        doc = read_toml(doc)
    models = []
    seen = set()
    for i, entry in enumerate(doc.get("models", [])):
        if not isinstance(entry, Mapping):
            raise ConfigInvalid(f"models[{i}] must be a table")
        m = _from_mapping(ModelConfig, entry, f"models[{i}]")
        if (m.id, m.version) in seen:
            raise ConfigInvalid(f"models[{i}]: model {m.id!r} version {m.version!r} listed twice")
        seen.add((m.id, m.version))
        models.append(m)
    base = _from_mapping(TopicsConfig, {k: doc[k] for k in ("namespace", "bootstrap") if k in doc}, "topics.toml")
    return dataclasses.replace(base, models=tuple(models))


def role_table(doc: Mapping[str, Any], role: str) -> dict[str, Any]:
    """Settings for `role` from topics.toml: top-level namespace/bootstrap, then
    `[workers]` scalars, then the role's own table (e.g. `[workers.inference]`)."""
    out: dict[str, Any] = {k: doc[k] for k in ("namespace", "bootstrap") if k in doc}
    parts = role.split(".")
    table: Any = doc
    for part in parts:
        table = table.get(part, {}) if isinstance(table, Mapping) else {}
        if isinstance(table, Mapping):
            out.update({k: v for k, v in table.items() if not isinstance(v, Mapping)})
    return out


def env_layer(schema: type, env: Mapping[str, str]) -> dict[str, str]:
    """`MESH_<FIELD>` values for the fields of `schema` (others are ignored)."""
    out = {}
    for f in _layered_fields(schema):
        key = ENV_PREFIX + f.name.upper()
        if key in env:
            out[f.name] = env[key]
    return out


def parse_cli(schema: type, argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """(overrides, rest): `--field value` / `--field=value` for `schema`'s fields;
    arguments that name no field are returned in `rest` for the caller's parser."""
    names = {f.name for f in _layered_fields(schema)}
    out: dict[str, str] = {}
    rest: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            key, eq, value = arg[2:].partition("=")
            name = key.replace("-", "_")
            if name in names:
                if not eq:
                    if i + 1 >= len(args):
                        raise ConfigInvalid(f"--{key} needs a value")
                    i += 1
                    value = args[i]
                out[name] = value
                i += 1
                continue
        rest.append(arg)
        i += 1
    return out, rest


def build_config(schema: type[C], *layers: Mapping[str, Any], layer_names: Sequence[str] = ()) -> C:
    """An instance of the frozen dataclass `schema` from `layers` (later wins).

    Keys that are not fields of `schema` are ignored (topics.toml tables are
    shared by roles); values are converted to the field types.
    """
    names = list(layer_names) + [f"layer {i}" for i in range(len(layer_names), len(layers))]
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    values: dict[str, Any] = {}
    for layer, lname in zip(layers, names):
        for key, raw in layer.items():
            if key in fields:
                values[key] = _convert(hints[key], raw, f"{key} ({lname})")
    try:
        return schema(**values)
    except TypeError as e:
        raise ConfigInvalid(f"{schema.__name__}: {e}") from e


def layered(schema: type[C], *, toml: Mapping[str, Any] | None = None, role: str | None = None,
            env: Mapping[str, str] | None = None, cli: Mapping[str, Any] | None = None) -> C:
    """defaults < topics.toml (role's table) < env MESH_* < CLI overrides."""
    toml_layer = role_table(toml, role) if toml is not None and role else dict(toml or {})
    return build_config(schema, toml_layer, env_layer(schema, env or {}), dict(cli or {}),
                        layer_names=("topics.toml", "environment", "command line"))


# ---------------------------------------------------------------- conversion


def _layered_fields(schema: type) -> list[dataclasses.Field]:
    hints = typing.get_type_hints(schema)
    return [f for f in dataclasses.fields(schema) if not _is_model_tuple(hints[f.name])]


def _is_model_tuple(tp: Any) -> bool:
    args = typing.get_args(tp)
    return typing.get_origin(tp) is tuple and bool(args) and dataclasses.is_dataclass(args[0])


def _from_mapping(schema: type[C], raw: Mapping[str, Any], where: str) -> C:
    names = {f.name for f in dataclasses.fields(schema)}
    unknown = set(raw) - names
    if unknown:
        raise ConfigInvalid(f"{where}: unknown keys {sorted(unknown)}")
    return build_config(schema, raw, layer_names=(where,))


def _convert(tp: Any, raw: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        if raw is None or (isinstance(raw, str) and raw.lower() in ("", "none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], raw, where)
    if origin is tuple:
        return _convert_tuple(args, raw, where)
    try:
        if tp is bool:
            return _to_bool(raw)
        if tp is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError(raw)
            return int(raw)
        if tp is float:
            if isinstance(raw, bool):
                raise ValueError(raw)
            return float(raw)
        if tp is str:
            if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
                raise ValueError(raw)
            return str(raw)
    except (TypeError, ValueError):
        raise ConfigInvalid(f"{where}: cannot use {raw!r} as {getattr(tp, '__name__', tp)}") from None
    raise ConfigInvalid(f"{where}: unsupported field type {tp!r}")


def _convert_tuple(args: tuple, raw: Any, where: str) -> tuple:
    if args == (str, int):  # an address
        return parse_address(raw, where)
    if isinstance(raw, str):
        raw = [p.strip() for p in raw.split(",") if p.strip()]
    if not isinstance(raw, (list, tuple)):
        raise ConfigInvalid(f"{where}: expected a list, got {raw!r}")
    item = args[0]
    return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(raw))


def parse_address(raw: Any, where: str = "address") -> Address:
    """("host", port) from "host:port" or a [host, port] pair."""
    if isinstance(raw, (list, tuple)) and len(raw) == 2:
        host, port = raw
    elif isinstance(raw, str) and ":" in raw:
        host, _, port = raw.rpartition(":")
    else:
        raise ConfigInvalid(f"{where}: expected host:port, got {raw!r}")
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise ConfigInvalid(f"{where}: bad port in {raw!r}") from None
    if not 0 <= port <= 65535 or not host:
        raise ConfigInvalid(f"{where}: bad address {raw!r}")
    return (str(host), port)


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(raw, str) and raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


__all__ = [
    "WorkerConfig", "ModelConfig", "TopicsConfig", "load_topics", "read_toml", "role_table",
    "env_layer", "parse_cli", "build_config", "layered", "parse_address",
]
