"""Real in-process workers for the gateway tests: onnxruntime inference and a disk model store.

They speak the worker RPC method shapes the gateway expects (infer, capacity, models;
upload_begin/chunk/commit/abort, list_models, get_model, delete_model), raising errors
with a `code` attribute as worker handlers do over RPC.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import pathlib
import secrets

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from gateway.directory import LocalWorker


class CodedError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def linear_model(n_in: int = 4, n_out: int = 3, seed: int = 0) -> bytes:
    """y = x @ W + b, x: float32 [N, n_in]."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((n_in, n_out)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(n_out).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
        "linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n_out])], initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64", "tensor(int32)": "int32"}


class OnnxWorker:
    """An inference worker for one model; `gate` (an Event) can hold requests to build up load."""

    def __init__(self, model_id: str, model_bytes: bytes, max_concurrent: int = 8, version: str = "1"):
        self.model_id = model_id
        self.version = version
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
        self.max_concurrent = max_concurrent
        self.load = 0
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.busy = False          # refuse every infer with BUSY
        self.fail_capacity = False

    def signature(self) -> dict:
        def meta(args):
            return [{"name": a.name, "dtype": _DTYPES[a.type],
                     "shape": [d if isinstance(d, int) else -1 for d in a.shape]} for a in args]
        return {"id": self.model_id, "version": self.version, "inputs": meta(self.session.get_inputs()),
                "outputs": meta(self.session.get_outputs())}

    async def infer(self, value: dict) -> dict:
        if value.get("model") != self.model_id:
            raise CodedError("MODEL_NOT_FOUND", f"model {value.get('model')!r} is not loaded here")
        if self.busy or self.load >= self.max_concurrent:
            raise CodedError("BUSY", "worker at capacity")
        inputs = value["inputs"]
        for spec in self.session.get_inputs():
            arr = inputs.get(spec.name)
            if arr is None or arr.dtype.name != _DTYPES[spec.type]:
                raise CodedError("INVALID_INPUT", f"input {spec.name!r} must be {_DTYPES[spec.type]}")
        self.load += 1
        self.calls += 1
        try:
            if self.gate is not None:
                await self.gate.wait()
            outputs = self.session.run(None, inputs)
        finally:
            self.load -= 1
        names = [o.name for o in self.session.get_outputs()]
        return {"outputs": dict(zip(names, outputs)), "version": self.version}

    async def capacity(self, value: dict) -> dict:
        if self.fail_capacity:
            raise CodedError("INTERNAL", "capacity check failed")
        return {"load": self.load, "queue": 0, "max_concurrent": self.max_concurrent}

    async def models(self, value: dict) -> dict:
        return {"models": [self.signature()]}

    def handle(self, worker_id: str) -> LocalWorker:
        return LocalWorker(worker_id, {"infer": self.infer, "capacity": self.capacity, "models": self.models})


class ModelStore:
    """A model manager: content-addressed files under `root`, index in index.json."""

    def __init__(self, root: pathlib.Path):
        self.root = root
        self.uploads: dict[str, dict] = {}
        self.index: dict[str, dict] = {}
        self.chunks = 0

    async def upload_begin(self, v: dict) -> dict:
        uid = secrets.token_hex(8)
        self.uploads[uid] = {"meta": v, "sha": hashlib.sha256(), "size": 0, "path": self.root / f"{uid}.part"}
        self.uploads[uid]["path"].write_bytes(b"")
        return {"upload": uid}

    async def upload_chunk(self, v: dict) -> dict:
        up = self.uploads.get(v["upload"])
        if up is None:
            raise CodedError("NOT_FOUND", "no such upload")
        if v["offset"] != up["size"]:
            raise CodedError("INVALID_INPUT", f"chunk at {v['offset']}, expected {up['size']}")
        with up["path"].open("ab") as f:
            f.write(v["data"])
        up["sha"].update(v["data"])
        up["size"] += len(v["data"])
        self.chunks += 1
        return {"received": up["size"]}

    async def upload_commit(self, v: dict) -> dict:
        up = self.uploads.pop(v["upload"])
        digest = up["sha"].hexdigest()
        if digest != v["sha256"]:
            up["path"].unlink()
            raise CodedError("CHECKSUM_MISMATCH", f"stored sha256 {digest} != {v['sha256']}")
        up["path"].rename(self.root / digest)
        meta = up["meta"]
        record = {"id": meta["model"], "version": meta["version"] or "1", "sha256": digest, "size": up["size"],
                  "metadata": meta["metadata"]}
        self.index[meta["model"]] = record
        (self.root / "index.json").write_text(json.dumps(self.index))
        return record

    async def upload_abort(self, v: dict) -> dict:
        up = self.uploads.pop(v["upload"], None)
        if up is not None:
            up["path"].unlink()
        return {"aborted": up is not None}

    async def list_models(self, v: dict) -> dict:
        return {"models": list(self.index.values())}

    async def get_model(self, v: dict) -> dict:
        if v["model"] not in self.index:
            raise CodedError("MODEL_NOT_FOUND", f"no model {v['model']!r}")
        return self.index[v["model"]]

    async def delete_model(self, v: dict) -> dict:
        if self.index.pop(v["model"], None) is None:
            raise CodedError("MODEL_NOT_FOUND", f"no model {v['model']!r}")
        return {"deleted": v["model"]}

    def handle(self, worker_id: str) -> LocalWorker:
        names = ("upload_begin", "upload_chunk", "upload_commit", "upload_abort", "list_models", "get_model",
                 "delete_model")
        return LocalWorker(worker_id, {n: getattr(self, n) for n in names})
