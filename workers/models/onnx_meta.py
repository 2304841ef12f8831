"""The one importer of the onnx package: is a file an ONNX model, and what are its
inputs and outputs.

Specs are plain data (name, numpy dtype name, shape with dynamic dims as a name or
None) so they travel in msgpack and JSON and are stored in the registry as JSON.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import onnx
from google.protobuf.message import DecodeError as _ProtoDecodeError

from .errors import InvalidModelError

Dim = int | str | None


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[Dim, ...] | None  # None: rank unknown

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype,
                "shape": None if self.shape is None else list(self.shape)}

    @classmethod
    def from_wire(cls, value: dict[str, Any]) -> "TensorSpec":
        """Parse a spec from the wire; ValueError/TypeError/KeyError if malformed."""
        name, dtype, shape = value["name"], value["dtype"], value.get("shape")
        if not isinstance(name, str) or not isinstance(dtype, str):
            raise TypeError("spec name and dtype must be strings")
        if shape is not None:
            if not isinstance(shape, (list, tuple)) or not all(
                    d is None or isinstance(d, str) or (isinstance(d, int) and not isinstance(d, bool))
                    for d in shape):
                raise ValueError(f"bad shape {shape!r}")
            shape = tuple(shape)
        return cls(name, dtype, shape)


@dataclasses.dataclass(frozen=True)
class ModelMeta:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    ir_version: int
    opsets: dict[str, int]


def inspect_model(path: str | pathlib.Path) -> ModelMeta:
    """Parse `path` as an ONNX ModelProto with a graph and return its I/O specs.

    Raises InvalidModelError when the file is not a (valid) ONNX model.
    """
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (_ProtoDecodeError, ValueError, RuntimeError, OSError) as e:
        raise InvalidModelError(f"not an ONNX model: {e}") from e
    # protobuf parses many byte strings (the empty one included) as a message with
    # no fields, so a successful parse alone proves nothing.
    if not model.HasField("graph") or model.ir_version <= 0:
        raise InvalidModelError("not an ONNX model: no graph or no IR version")
    if len(model.graph.output) == 0:
        raise InvalidModelError("not an ONNX model: graph has no outputs")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise InvalidModelError(f"invalid ONNX model: {_first_line(str(e))}") from e
    initializers = {init.name for init in model.graph.initializer}
    inputs = tuple(_spec(v) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(_spec(v) for v in model.graph.output)
    opsets = {op.domain or "ai.onnx": int(op.version) for op in model.opset_import}
    return ModelMeta(inputs, outputs, int(model.ir_version), opsets)


def _spec(value_info: onnx.ValueInfoProto) -> TensorSpec:
    tensor_type = value_info.type.tensor_type
    dtype = _dtype_name(tensor_type.elem_type)
    if not tensor_type.HasField("shape"):
        return TensorSpec(value_info.name, dtype, None)
    dims: list[Dim] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return TensorSpec(value_info.name, dtype, tuple(dims))


def _dtype_name(elem_type: int) -> str:
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name
    except (KeyError, TypeError, ValueError):
        # Types numpy has no name for (bfloat16, float8...) keep ONNX's own name.
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
