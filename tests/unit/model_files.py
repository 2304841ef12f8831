"""Small real ONNX models for the model store, registry and manager tests."""

from __future__ import annotations

import hashlib
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def onnx_bytes(seed: int = 0, n_in: int = 4, n_out: int = 3) -> bytes:
    """A serialized linear model Y = X @ W + B with a dynamic batch dim "N"."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((n_in, n_out)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal((n_out,)).astype(np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["XW"]), helper.make_node("Add", ["XW", "B"], ["Y"])],
        f"linear{seed}",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", n_out])],
        initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def big_onnx_bytes(seed: int = 0, n: int = 800) -> bytes:
    """A model of several MiB (an n x n weight), to be uploaded in many chunks."""
    return onnx_bytes(seed, n_in=n, n_out=n)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(path: pathlib.Path, data: bytes) -> pathlib.Path:
    path.write_bytes(data)
    return path
