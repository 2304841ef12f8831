"""Check request tensors against a model's input specs before anything runs.

Every error is an `InvalidInput` that names the input and the expected value,
e.g. "input 'x': expected dtype float32, got int64", so a caller can fix the
request without reading the model.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InvalidInput
from .runner import TensorSpec


_np_dtype = functools.cache(np.dtype)  # np.dtype(name) once per name: it runs for every request


def shape_text(shape: Sequence[Any]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def validate_inputs(specs: Sequence[TensorSpec], inputs: Any, *,
                    max_rows: int | None = None) -> tuple[dict[str, np.ndarray], int]:
    """(feeds, rows): the inputs checked against `specs`.

    `rows` is the size of the leading dimension shared by all inputs (1 for
    models whose inputs have no leading dimension). Raises InvalidInput for a
    value that is not a mapping of names to numpy arrays, a missing or
    unexpected name, a wrong dtype, rank or fixed dimension, symbolic dimensions
    that disagree between inputs, an empty batch, or more than `max_rows` rows.
    """
    if not isinstance(inputs, Mapping):
        raise InvalidInput(f"'inputs' must be a map of input name to tensor, got {type(inputs).__name__}")
    expected = [s.name for s in specs]
    for name in inputs:
        if name not in expected:
            raise InvalidInput(f"unexpected input {name!r}; expected inputs: {', '.join(expected)}",
                               details={"input": str(name), "expected": expected})
    feeds: dict[str, np.ndarray] = {}
    symbols: dict[str, tuple[int, str]] = {}
    for spec in specs:
        if spec.name not in inputs:
            raise InvalidInput(f"missing input {spec.name!r}; expected inputs: {', '.join(expected)}",
                               details={"input": spec.name, "expected": expected})
        feeds[spec.name] = _check_one(spec, inputs[spec.name], symbols)
    rows = _rows(specs, feeds)
    if max_rows is not None and rows > max_rows:
        raise InvalidInput(f"batch of {rows} rows is over this model's limit of {max_rows}",
                           details={"expected": max_rows})
    return feeds, rows


def _check_one(spec: TensorSpec, value: Any, symbols: dict[str, tuple[int, str]]) -> np.ndarray:
    where = f"input {spec.name!r}"
    if not isinstance(value, np.ndarray):
        raise InvalidInput(f"{where}: expected a tensor of dtype {spec.dtype} and shape {shape_text(spec.shape)}, "
                           f"got {type(value).__name__}", details={"input": spec.name, "expected": spec.dtype})
    want = _np_dtype(spec.dtype)
    if value.dtype != want:
        got = value.dtype.name if value.dtype.name != want.name else value.dtype.str
        wanted = want.name if value.dtype.name != want.name else want.str
        raise InvalidInput(f"{where}: expected dtype {wanted}, got {got}",
                           details={"input": spec.name, "expected": wanted, "got": got})
    if value.ndim != len(spec.shape):
        raise InvalidInput(f"{where}: expected shape {shape_text(spec.shape)} (rank {len(spec.shape)}), "
                           f"got {shape_text(value.shape)} (rank {value.ndim})",
                           details={"input": spec.name, "expected": list(spec.shape), "got": list(value.shape)})
    for axis, (want_dim, got_dim) in enumerate(zip(spec.shape, value.shape)):
        if isinstance(want_dim, int) and want_dim != got_dim:
            raise InvalidInput(f"{where}: expected dim {axis} to be {want_dim} (shape {shape_text(spec.shape)}), "
                               f"got {got_dim} (shape {shape_text(value.shape)})",
                               details={"input": spec.name, "expected": list(spec.shape), "got": list(value.shape)})
        if isinstance(want_dim, str):
            seen = symbols.setdefault(want_dim, (got_dim, spec.name))
            if seen[0] != got_dim:
                raise InvalidInput(f"{where}: dim {axis} ({want_dim!r}) is {got_dim} but input {seen[1]!r} "
                                   f"has {want_dim!r} = {seen[0]}", details={"input": spec.name, "expected": seen[0]})
    return value


def _rows(specs: Sequence[TensorSpec], feeds: Mapping[str, np.ndarray]) -> int:
    leading = {feeds[s.name].shape[0] for s in specs if s.shape and not isinstance(s.shape[0], int)}
    if not leading:
        return 1
    if len(leading) > 1:
        raise InvalidInput(f"inputs disagree on the batch dimension: {sorted(leading)}")
    rows = leading.pop()
    if rows < 1:
        raise InvalidInput("batch dimension must be at least 1, got 0", details={"expected": ">= 1"})
    return rows
