"""The inference worker's frozen configuration (one flat layer of settings).

Built by `workers.config.layered(InferenceConfig, ...)` from defaults <
topics.toml `[workers]`/`[workers.inference]` < MESH_* < CLI; `models` comes
from topics.toml `[[models]]`. `runner()` and `serving(model)` derive the
settings of the layers below.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..config import ModelConfig, WorkerConfig
from ..errors import ConfigInvalid
from .batcher import ServingConfig
from .runner import RunnerConfig


@dataclass(frozen=True)
class InferenceConfig(WorkerConfig):
    """Inference worker settings (WorkerConfig's plus these).

    model_dir: folder of model files (LocalDirectorySource).  serve: model ids
    loaded at start (empty: every `models` entry with this role).  lazy_load:
    load a model on its first `infer`.  require_sha256: refuse unpinned files.
    providers / intra_op_threads / inter_op_threads / allow_spinning /
    cuda_device_id / cuda_tf32 / cudnn_conv_algo_search / cuda_mem_limit_bytes: see
    RunnerConfig.
    executor_threads: threads running onnxruntime.
    cache_max_models / cache_max_bytes: the session LRU's bounds.
    batching ... max_queue: defaults of ServingConfig for models that do not set them.
    pool_topic: a topic announced for the worker itself while it serves (e.g. "inference":
    a pool that callers ask to `load_model`); "" for none.  preload: with `serve`
    empty, load every `models` entry of this role at start (False for pool workers).
    fetch_dir: where models fetched from peers are stored (content-addressed).
    fetch_timeout_s: deadline of each request to a peer, and of waiting for a first
    model manager connection.  manager_topic: topic name of the model managers.
    network_models: fetch models from managers/workers on the mesh when model_dir
    does not have them (needs a mesh with peers).
    """

    name: str = "inference"
    ops_port: int = 8001
    model_dir: str = "var/models"
    serve: tuple[str, ...] = ()
    lazy_load: bool = True
    require_sha256: bool = True
    providers: tuple[str, ...] = ("auto",)
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    allow_spinning: bool = False
    cuda_device_id: int = 0
    cuda_tf32: bool = False
    cudnn_conv_algo_search: str = "HEURISTIC"
    cuda_mem_limit_bytes: int = 0
    executor_threads: int = 2
    cache_max_models: int = 8
    cache_max_bytes: int = 2 << 30
    batching: bool = True
    max_batch_size: int = 32
    max_delay_ms: float = 1.0
    max_concurrent: int = 2
    max_queue: int = 128
    inline_max_us: float = 200.0
    split_bursts: bool = True
    follow_runs: bool = True
    max_request_rows: int = 1024
    pool_topic: str = ""
    preload: bool = True
    fetch_dir: str = "var/model-cache"
    fetch_timeout_s: float = 30.0
    manager_topic: str = "model-manager"
    network_models: bool = True
    models: tuple[ModelConfig, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            self.runner()
        except ValueError as e:
            raise ConfigInvalid(str(e)) from None

    def runner(self) -> RunnerConfig:
        return RunnerConfig(self.providers, self.intra_op_threads, self.inter_op_threads, self.allow_spinning,
                            self.cuda_device_id, self.cuda_tf32, self.cudnn_conv_algo_search,
                            self.cuda_mem_limit_bytes)

    def model(self, model_id: str, version: str | None = None) -> ModelConfig | None:
        for m in self.models:
            if m.id == model_id and (version is None or m.version == version):
                return m
        return None

    def serving(self, model_id: str, version: str | None = None) -> ServingConfig:
        """The worker defaults with the model's own settings on top."""
        base = ServingConfig(self.batching, self.max_batch_size, self.max_delay_ms,
                             self.max_concurrent, self.max_queue, self.inline_max_us, self.split_bursts,
                             self.follow_runs)
        m = self.model(model_id, version)
        if m is None:
            return base
        overrides = {f.name: getattr(m, f.name) for f in dataclasses.fields(ServingConfig)
                     if getattr(m, f.name) is not None}
        return dataclasses.replace(base, **overrides)
