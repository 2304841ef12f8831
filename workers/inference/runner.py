"""onnxruntime sessions: the ONLY module that imports onnxruntime.

`open_session(path, RunnerConfig)` loads a model file into a `Session` whose
`inputs`/`outputs` are `TensorSpec`s (name, numpy dtype name, shape with
dynamic dims as their symbol or None) and whose `run(feeds)` returns
{output name: ndarray}. `run` is thread-safe (onnxruntime allows concurrent
`InferenceSession.run` calls) and is meant to be called in an executor.

Execution providers: "auto" picks CUDA when onnxruntime-gpu is installed and
reports a GPU, else CPU; an explicit list is used as given, and a provider the
installed onnxruntime lacks is a ModelLoadFailed naming what is available.

onnxruntime-gpu reports CUDA as available whether or not the CUDA libraries
load, and a session whose CUDA provider fails to start runs on CPU without an
error. So a session's providers are checked after it is built: a provider asked
for by name that did not start is a ModelLoadFailed; under "auto" it is a
warning in the log, and the model serves on CPU. Sessions are built with
onnxruntime's own fallback off, which would otherwise print to stdout (a node's
JSON event stream) and switch a failing session to CPU mid-run.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ortstate

from ..errors import InferenceFailed, ModelLoadFailed

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
AUTO = ("auto",)
CONV_ALGO_SEARCHES = ("HEURISTIC", "EXHAUSTIVE", "DEFAULT")

log = logging.getLogger(__name__)

# onnxruntime's pybind errors derive from Exception directly, so name them.
ORT_ERRORS: tuple[type[BaseException], ...] = tuple(
    getattr(_ortstate, n) for n in ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError",
                                    "RuntimeException", "InvalidProtobuf", "ModelLoaded", "NotImplemented",
                                    "InvalidGraph", "EPFail")
    if hasattr(_ortstate, n)
) + (RuntimeError, ValueError, OSError)

_DTYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int8)": "int8", "tensor(int16)": "int16", "tensor(int32)": "int32", "tensor(int64)": "int64",
    "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64", "tensor(bool)": "bool",
}


@dataclass(frozen=True)
class RunnerConfig:
    """How sessions are built.

    providers: ("auto",) or explicit onnxruntime provider names in priority order.
    intra_op_threads / inter_op_threads: onnxruntime thread pools per session
    (0 = onnxruntime's default of one per core). allow_spinning: let idle pool
    threads spin (faster hand-off, burns CPU that other sessions may need).

    CUDA provider options (used when a session runs on CUDA): cuda_device_id;
    cuda_tf32, off by default so that float32 models compute in float32 (with
    TF32 on, a row's result depends on the batch it was run in, ~1e-3 apart);
    cudnn_conv_algo_search, HEURISTIC by default: onnxruntime's EXHAUSTIVE
    benchmarks every convolution again for each new input shape, and a batching
    worker sends shapes of every batch size (measured on an H200: batched
    conv-small at 8 callers fell to 178 rows/s from 2,598 unbatched);
    cuda_mem_limit_bytes, the most GPU memory each session's arena may hold
    (0: onnxruntime's default, no limit), so several models can share a GPU.
    """

    providers: tuple[str, ...] = ("auto",)
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    allow_spinning: bool = False
    cuda_device_id: int = 0
    cuda_tf32: bool = False
    cudnn_conv_algo_search: str = "HEURISTIC"
    cuda_mem_limit_bytes: int = 0

    def __post_init__(self):
        if self.cudnn_conv_algo_search not in CONV_ALGO_SEARCHES:
            raise ValueError(f"cudnn_conv_algo_search must be one of {', '.join(CONV_ALGO_SEARCHES)}, "
                             f"not {self.cudnn_conv_algo_search!r}")
        if self.cuda_device_id < 0:
            raise ValueError(f"cuda_device_id must be >= 0, not {self.cuda_device_id}")
        if self.cuda_mem_limit_bytes < 0:
            raise ValueError(f"cuda_mem_limit_bytes must be >= 0, not {self.cuda_mem_limit_bytes}")

    def cuda_options(self) -> dict[str, str]:
        options = {"device_id": str(self.cuda_device_id), "use_tf32": "1" if self.cuda_tf32 else "0",
                   "cudnn_conv_algo_search": self.cudnn_conv_algo_search}
        if self.cuda_mem_limit_bytes:
            # grow the arena by what is asked, not to the next power of two, so the
            # limit is what the session may hold
            options |= {"gpu_mem_limit": str(self.cuda_mem_limit_bytes), "arena_extend_strategy": "kSameAsRequested"}
        return options


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str                               # numpy dtype name, e.g. "float32"
    shape: tuple[int | str | None, ...]      # int fixed; str symbolic; None unknown

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def resolve_providers(requested: tuple[str, ...]) -> list[str]:
    """The provider list to give onnxruntime for `requested` (see module doc)."""
    available = available_providers()
    if tuple(requested) in ((), AUTO):
        return [CUDA, CPU] if CUDA in available else [CPU]
    missing = [p for p in requested if p not in available]
    if missing:
        raise ModelLoadFailed(f"execution providers {missing} not available; available: {available}")
    return list(requested)


_cuda_lock = threading.Lock()
_cuda_notes: str | None = None


def prepare_cuda() -> str:
    """Load the CUDA and cuDNN libraries onnxruntime-gpu needs from the nvidia-*
    wheels installed beside it (`onnxruntime.preload_dlls`), once per process;
    returns what onnxruntime said about libraries it could not load ("" if none).

    preload_dlls reports by printing, and stdout carries a node's JSON events, so
    its output is captured here. redirect_stdout swaps sys.stdout for every
    thread: call this first where nothing else prints (the worker does at start);
    later calls return the first call's notes without loading anything.
    """
    global _cuda_notes
    with _cuda_lock:
        if _cuda_notes is None:
            out = io.StringIO()
            preload = getattr(ort, "preload_dlls", None)    # onnxruntime >= 1.21
            if preload is not None:
                with contextlib.redirect_stdout(out):
                    try:
                        preload()
                    except (OSError, RuntimeError) as e:
                        print(e)
            _cuda_notes = " ".join(out.getvalue().split())
        return _cuda_notes


def prepare_providers(config: RunnerConfig) -> str:
    """prepare_cuda() when `config` would use CUDA, else ""."""
    try:
        return prepare_cuda() if CUDA in resolve_providers(config.providers) else ""
    except ModelLoadFailed:
        return ""        # reported by the first open_session


class Session:
    """A loaded model: its specs and a thread-safe `run`."""

    def __init__(self, session: ort.InferenceSession, path: str):
        self._session = session
        self.path = path
        self.inputs = tuple(_spec(a) for a in session.get_inputs())
        self.outputs = tuple(_spec(a) for a in session.get_outputs())
        self.providers = tuple(session.get_providers())
        self._output_names = [o.name for o in self.outputs]

    @property
    def batch_dynamic(self) -> bool:
        """True when every input and output has a dynamic leading dimension,
        so requests can be concatenated along axis 0 and split back."""
        specs = self.inputs + self.outputs
        return bool(specs) and all(s.shape and not isinstance(s.shape[0], int) for s in specs)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model; raises InferenceFailed with onnxruntime's message."""
        try:
            values = self._session.run(self._output_names, dict(feeds))
        except ORT_ERRORS as e:
            raise InferenceFailed(f"onnxruntime: {e}") from e
        return dict(zip(self._output_names, values))


def _spec(arg) -> TensorSpec:
    dtype = _DTYPES.get(arg.type)
    if dtype is None:
        raise ModelLoadFailed(f"tensor {arg.name!r} has unsupported type {arg.type}")
    shape = tuple(d if isinstance(d, int) and d >= 0 else (d if isinstance(d, str) else None)
                  for d in (arg.shape or ()))
    return TensorSpec(arg.name, dtype, shape)


def open_session(model: str | bytes, config: RunnerConfig, label: str | None = None) -> Session:
    """Load a model file path, or the model's bytes (what the caller verified),
    into a Session; raises ModelLoadFailed with onnxruntime's reason."""
    path = label or (model if isinstance(model, str) else "<bytes>")
    opts = session_options(config)
    providers = resolve_providers(config.providers)
    notes = prepare_cuda() if CUDA in providers else ""
    try:
        session = ort.InferenceSession(model, sess_options=opts, providers=with_options(providers, config),
                                       enable_fallback=0)
    except ORT_ERRORS as e:
        raise ModelLoadFailed(f"onnxruntime cannot load {path}: {e}") from e
    warning = check_started(config.providers, providers, session.get_providers(), notes, path)
    if warning:
        log.warning(warning)
    return Session(session, path)


def session_options(config: RunnerConfig) -> ort.SessionOptions:
    """The onnxruntime session options of `config` (thread pools, spinning)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = config.intra_op_threads
    opts.inter_op_num_threads = config.inter_op_threads
    if not config.allow_spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return opts


def with_options(providers: list[str], config: RunnerConfig) -> list:
    """`providers` as onnxruntime takes them, CUDA's with config's options."""
    return [(p, config.cuda_options()) if p == CUDA else p for p in providers]


def check_started(requested: tuple[str, ...], asked: list[str], started: list[str], notes: str,
                  path: str) -> str:
    """Compare the providers a session `started` with those it was `asked` for
    (resolved from `requested`): "" when all started; a warning naming the
    missing ones under "auto"; a ModelLoadFailed when they were asked for by name.
    `notes` is prepare_cuda()'s account of libraries that did not load."""
    lost = [p for p in asked if p not in started]
    if not lost:
        return ""
    why = (f"onnxruntime could not start {', '.join(lost)} for {path}: "
           + (notes or "its reason is in onnxruntime's log on stderr"))
    if tuple(requested) not in ((), AUTO):
        raise ModelLoadFailed(why)
    return f"{why}; serving on {', '.join(started)}"
