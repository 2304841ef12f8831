"""A small real ONNX model for the gateway tests, and onnxruntime's own answer for it."""

from __future__ import annotations

import hashlib
import json
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


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


def write_model_dir(folder: pathlib.Path, models: dict[str, bytes], version: str = "1") -> pathlib.Path:
    """`folder` with each model as <id>-<version>.onnx and a manifest.json (LocalDirectorySource's format)."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for model_id, data in models.items():
        name = f"{model_id}-{version}.onnx"
        (folder / name).write_bytes(data)
        entries.append({"id": model_id, "version": version, "file": name, "sha256": hashlib.sha256(data).hexdigest(),
                        "size": len(data)})
    (folder / "manifest.json").write_text(json.dumps({"models": entries}))
    return folder


def reference(model: bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The model's outputs computed by onnxruntime in this process."""
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)
