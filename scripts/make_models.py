"""Build small real ONNX models with no downloads (onnx.helper + numpy), seeded.

    PYTHONPATH=. python scripts/make_models.py [--out var/models] [--only digits,mlp-tiny]

Models (all float32 with a dynamic batch dimension "batch"):

    digits      a 64-32-10 MLP trained here in numpy on scikit-learn's bundled digits
                (8x8 images, pixel values 0..16); inputs x[batch,64] -> probabilities
                [batch,10] and label[batch] (int64); its test accuracy is printed and
                written to the manifest.
    mlp-tiny    64-256-10 MLP (random weights)       x[batch,64]  -> y[batch,10]
    mlp-mid     512-2048-2048-512 MLP (random)       x[batch,512] -> y[batch,512]
    conv-small  conv3x3(16)/relu/maxpool, conv3x3(32)/relu/maxpool, dense(10)
                                                     x[batch,3,64,64] -> y[batch,10]

Writes `<id>-<version>.onnx` files and `manifest.json` (id, version, file, sha256,
size, input/output specs). The same seed gives byte-identical files. Tests import
`build(model_id)` / `write_models(folder, ids)` to build them on the fly.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
VERSION = "1"
SEED = 20261128


def _model(name: str, nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="inference-mesh/make_models", producer_version="1")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def _io(name: str, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _dense_layers(prefix: str, x: str, weights: list[tuple[np.ndarray, np.ndarray]], out: str):
    """MatMul+Add(+Relu between layers) nodes and initializers for an MLP."""
    nodes, inits = [], []
    for i, (w, b) in enumerate(weights):
        wn, bn = f"{prefix}w{i}", f"{prefix}b{i}"
        inits += [numpy_helper.from_array(w.astype(np.float32), wn),
                  numpy_helper.from_array(b.astype(np.float32), bn)]
        last = i == len(weights) - 1
        mm, add = f"{prefix}mm{i}", (out if last else f"{prefix}add{i}")
        nodes += [helper.make_node("MatMul", [x, wn], [mm]), helper.make_node("Add", [mm, bn], [add])]
        if not last:
            x = f"{prefix}relu{i}"
            nodes.append(helper.make_node("Relu", [add], [x]))
    return nodes, inits


def _random_mlp(sizes: list[int], seed: int):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((a, b)).astype(np.float32) * np.float32(np.sqrt(2.0 / a)),
             rng.standard_normal(b).astype(np.float32) * np.float32(0.01))
            for a, b in zip(sizes[:-1], sizes[1:])]


def mlp(name: str, sizes: list[int], seed: int) -> onnx.ModelProto:
    nodes, inits = _dense_layers("", "x", _random_mlp(sizes, seed), "y")
    return _model(name, nodes, [_io("x", ["batch", sizes[0]])], [_io("y", ["batch", sizes[-1]])], inits)


def conv_small(seed: int = SEED + 3) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)

    def init(name, *shape):
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        a = rng.standard_normal(shape).astype(np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        return numpy_helper.from_array(a, name)

    inits = [init("c1w", 16, 3, 3, 3), numpy_helper.from_array(np.zeros(16, np.float32), "c1b"),
             init("c2w", 32, 16, 3, 3), numpy_helper.from_array(np.zeros(32, np.float32), "c2b"),
             numpy_helper.from_array(rng.standard_normal((32 * 16 * 16, 10)).astype(np.float32)
                                     * np.float32(np.sqrt(2.0 / 8192)), "dw"),
             numpy_helper.from_array(np.zeros(10, np.float32), "db")]
    pool = dict(kernel_shape=[2, 2], strides=[2, 2])
    nodes = [
        helper.make_node("Conv", ["x", "c1w", "c1b"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], **pool),
        helper.make_node("Conv", ["p1", "c2w", "c2b"], ["c2"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], **pool),
        helper.make_node("Flatten", ["p2"], ["f"], axis=1),
        helper.make_node("MatMul", ["f", "dw"], ["mm"]),
        helper.make_node("Add", ["mm", "db"], ["y"]),
    ]
    return _model("conv-small", nodes, [_io("x", ["batch", 3, 64, 64])], [_io("y", ["batch", 10])], inits)


def train_digits(seed: int = SEED + 4, hidden: int = 32, steps: int = 400):
    """A 64-hidden-10 MLP trained with full-batch Adam; returns (weights, test accuracy)."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    split = int(len(x) * 0.8)
    tr, te = order[:split], order[split:]
    params = [(rng.standard_normal((64, hidden)) * np.sqrt(2 / 64)).astype(np.float32),
              np.zeros(hidden, np.float32),
              (rng.standard_normal((hidden, 10)) * np.sqrt(2 / hidden)).astype(np.float32),
              np.zeros(10, np.float32)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    onehot = np.eye(10, dtype=np.float32)[y[tr]]
    for t in range(1, steps + 1):
        h = np.maximum(x[tr] @ params[0] + params[1], 0)
        logits = h @ params[2] + params[3]
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        d = (p - onehot) / len(tr)
        dh = (d @ params[2].T) * (h > 0)
        grads = [x[tr].T @ dh + 1e-4 * params[0], dh.sum(0), h.T @ d + 1e-4 * params[2], d.sum(0)]
        for i, g in enumerate(grads):
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.999 * v[i] + 0.001 * g * g
            params[i] -= 0.01 * (m[i] / (1 - 0.9 ** t)) / (np.sqrt(v[i] / (1 - 0.999 ** t)) + 1e-8)
    h = np.maximum(x[te] @ params[0] + params[1], 0)
    acc = float(((h @ params[2] + params[3]).argmax(1) == y[te]).mean())
    return params, acc


def digits(seed: int = SEED + 4, steps: int = 400) -> tuple[onnx.ModelProto, float]:
    """The trained digits classifier (raw 0..16 pixels in) and its test accuracy."""
    params, acc = train_digits(seed, steps=steps)
    scale = numpy_helper.from_array(np.array([1 / 16], np.float32), "scale")
    nodes, inits = _dense_layers("", "xs", [(params[0], params[1]), (params[2], params[3])], "logits")
    nodes = [helper.make_node("Mul", ["x", "scale"], ["xs"]), *nodes,
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
             helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0)]
    model = _model("digits", nodes, [_io("x", ["batch", 64])],
                   [_io("probabilities", ["batch", 10]), _io("label", ["batch"], TensorProto.INT64)],
                   [scale, *inits])
    return model, acc


BUILDERS = {
    "digits": lambda: digits(),
    "mlp-tiny": lambda: (mlp("mlp-tiny", [64, 256, 10], SEED + 1), None),
    "mlp-mid": lambda: (mlp("mlp-mid", [512, 2048, 2048, 512], SEED + 2), None),
    "conv-small": lambda: (conv_small(), None),
}


def build(model_id: str) -> tuple[onnx.ModelProto, float | None]:
    """(model, test accuracy or None) for one of BUILDERS."""
    return BUILDERS[model_id]()


def _specs(values) -> list[dict]:
    out = []
    for v in values:
        t = v.type.tensor_type
        out.append({"name": v.name, "dtype": np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).name,
                    "shape": [d.dim_param or d.dim_value for d in t.shape.dim]})
    return out


def write_models(folder: str | Path, ids=None, *, digits_steps: int = 400) -> list[dict]:
    """Build `ids` (default all) into `folder`, write manifest.json, return its entries.

    `digits_steps` trades the digits model's accuracy for build time (tests use fewer).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for model_id in ids or BUILDERS:
        model, acc = digits(steps=digits_steps) if model_id == "digits" else build(model_id)
        data = model.SerializeToString(deterministic=True)
        name = f"{model_id}-{VERSION}.onnx"
        (folder / name).write_bytes(data)
        entry = {"id": model_id, "version": VERSION, "file": name,
                 "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                 "inputs": _specs(model.graph.input), "outputs": _specs(model.graph.output)}
        if acc is not None:
            entry["test_accuracy"] = round(acc, 4)
        entries.append(entry)
    (folder / "manifest.json").write_text(json.dumps({"models": entries}, indent=2) + "\n")
    return entries


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="var/models", help="output folder (default var/models)")
    ap.add_argument("--only", default="", help="comma-separated model ids (default all)")
    args = ap.parse_args(argv)
    ids = [i for i in args.only.split(",") if i] or None
    unknown = set(ids or ()) - set(BUILDERS)
    if unknown:
        ap.error(f"unknown model ids {sorted(unknown)}; known: {sorted(BUILDERS)}")
    for e in write_models(args.out, ids):
        acc = f"  test accuracy {e['test_accuracy']:.4f}" if "test_accuracy" in e else ""
        print(f"{e['id']:<11} v{e['version']}  {e['size']:>10} bytes  sha256 {e['sha256'][:16]}...{acc}")
    print(f"manifest: {Path(args.out) / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
