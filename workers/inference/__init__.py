"""The inference worker role: serves ONNX models over the mesh.

Files: runner.py (the only importer of onnxruntime: sessions, tensor specs,
providers), validate.py (request tensors against a model's inputs), batcher.py
(admission/capacity, dynamic batching, executor runs), cache.py (LRU of loaded
models by count and bytes), stats.py (per-model counts and histograms),
source.py (ModelSource protocol, LocalDirectorySource with sha256 checks),
config.py (InferenceConfig), worker.py (InferenceWorker and its RPC methods),
network.py (model_dir first, then managers/workers on the mesh).

Entry points (for `python -m mesh.node`, which imports the role named in
topics.toml, e.g. role = "workers.inference"):

    config = workers.inference.role_config(topics_doc_or_path, env=os.environ,
                                           argv=remaining_cli_args, topic="digits")
    await workers.inference.run_role(config, mesh)   # mesh: .swarm and .rpc

`run_role` serves until SIGTERM/SIGINT, then drains and returns. `main(argv)`
(`python -m workers.inference --topics topics.toml [--serve digits] ...`) runs
the worker standalone without a mesh (operator port only), for operators and
tests of the process lifecycle.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..base import run_standalone, setup_logging  # noqa: F401 - the role's logging hook
from ..config import layered, load_topics, parse_cli, read_toml
from .config import InferenceConfig
from .worker import InferenceWorker

ROLE = "workers.inference"

__all__ = ["ROLE", "InferenceConfig", "InferenceWorker", "role_config", "run_role", "main"]


def role_config(topics: Mapping[str, Any] | str | Path | None = None, *, env: Mapping[str, str] | None = None,
                argv: Sequence[str] = (), cli: Mapping[str, Any] | None = None,
                topic: str | None = None) -> InferenceConfig:
    """InferenceConfig from topics.toml (parsed or a path) < env MESH_* < CLI.

    `argv` is parsed for `--<field> value` options of InferenceConfig (others are
    ignored: they belong to the caller); `cli` adds already-parsed overrides.
    `topic` is the topic the node was started for: a model id in `[[models]]`
    makes the worker load that model at start and serve only it; any other name
    (e.g. "inference") is a pool topic the worker announces, loading models only
    when asked (`load_model`, or `infer` with lazy_load).
    """
    doc = read_toml(topics) if isinstance(topics, (str, Path)) else dict(topics or {})
    overrides, _rest = parse_cli(InferenceConfig, argv)
    overrides.update(cli or {})
    config = layered(InferenceConfig, toml=doc, role=ROLE, env=env or {}, cli=overrides)
    config = dataclasses.replace(config, models=load_topics(doc).models_for(ROLE))
    if topic is not None and config.model(topic) is not None:
        config = dataclasses.replace(config, serve=(topic,))
    elif topic is not None:
        config = dataclasses.replace(config, pool_topic=topic, preload=bool(config.serve))
    return config


async def run_role(config: InferenceConfig, mesh: Any = None) -> None:
    """Run an inference worker on `mesh` (`.swarm`, `.rpc`, optional `.peers` and
    `.connection` for fetching models from managers) until SIGTERM/SIGINT."""
    from .network import join_managers, mesh_source

    join_managers(config, mesh)
    await InferenceWorker(config, mesh_source(config, mesh)).run(mesh)


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone worker without a mesh: `--topics PATH` plus any config option."""
    return run_standalone(role_config, run_role, sys.argv[1:] if argv is None else list(argv))
