"""Input validation messages and the session LRU (no onnxruntime needed)."""

from __future__ import annotations

import numpy as np
import pytest

from workers.errors import InvalidInput, ModelTooLarge
from workers.inference.cache import SessionCache
from workers.inference.runner import TensorSpec
from workers.inference.validate import validate_inputs

SPECS = (TensorSpec("x", "float32", ("batch", 64)), TensorSpec("mask", "int64", ("batch", None)))


def ok(rows=2):
    return {"x": np.zeros((rows, 64), np.float32), "mask": np.zeros((rows, 3), np.int64)}


def test_valid_inputs_give_rows():
    feeds, rows = validate_inputs(SPECS, ok(3))
    assert rows == 3 and set(feeds) == {"x", "mask"}


@pytest.mark.parametrize("inputs, message", [
    ({**ok(), "x": np.zeros((2, 64), np.int64)}, "input 'x': expected dtype float32, got int64"),
    ({**ok(), "x": np.zeros((2, 63), np.float32)}, "input 'x': expected dim 1 to be 64 (shape [batch, 64]), got 63"),
    ({**ok(), "x": np.zeros((64,), np.float32)}, "input 'x': expected shape [batch, 64] (rank 2), got [64] (rank 1)"),
    ({"x": ok()["x"]}, "missing input 'mask'; expected inputs: x, mask"),
    ({**ok(), "y": ok()["x"]}, "unexpected input 'y'; expected inputs: x, mask"),
    ({**ok(), "x": [[0.0] * 64]}, "input 'x': expected a tensor of dtype float32 and shape [batch, 64], got list"),
    ({**ok(), "mask": np.zeros((3, 3), np.int64)}, "input 'mask': dim 0 ('batch') is 3 but input 'x' has 'batch' = 2"),
    ({"x": np.zeros((0, 64), np.float32), "mask": np.zeros((0, 1), np.int64)}, "batch dimension must be at least 1"),
    ({**ok(), "x": np.zeros((2, 64), ">f4")}, "input 'x': expected dtype <f4, got >f4"),
    ([1, 2], "'inputs' must be a map"),
])
def test_errors_name_the_expected_value(inputs, message):
    with pytest.raises(InvalidInput) as e:
        validate_inputs(SPECS, inputs)
    assert message in str(e.value)
    assert e.value.code == "INVALID_INPUT"


def test_max_rows():
    with pytest.raises(InvalidInput, match="limit of 2"):
        validate_inputs(SPECS, ok(3), max_rows=2)


def test_lru_by_count():
    c = SessionCache(max_models=2, max_bytes=100)
    assert c.put("a", 1, 10) == []
    assert c.put("b", 2, 10) == []
    assert c.get("a") == 1          # a is now most recent
    assert c.put("c", 3, 10) == [("b", 2)]
    assert c.keys() == ["a", "c"] and c.evictions == 1


def test_lru_by_memory():
    c = SessionCache(max_models=10, max_bytes=100)
    c.put("a", 1, 40)
    c.put("b", 2, 40)
    c.put("c", 3, 10)
    assert c.put("d", 4, 50) == [("a", 1)]
    assert c.total_bytes == 100
    assert c.put("e", 5, 50) == [("b", 2), ("c", 3)]
    assert c.keys() == ["d", "e"] and c.total_bytes == 100


def test_too_large_is_refused_without_evicting():
    c = SessionCache(max_models=10, max_bytes=100)
    c.put("a", 1, 50)
    with pytest.raises(ModelTooLarge):
        c.put("big", 2, 101)
    assert c.keys() == ["a"]


def test_replace_same_key():
    c = SessionCache(max_models=2, max_bytes=100)
    c.put("a", 1, 10)
    assert c.put("a", 2, 20) == [("a", 1)]
    assert c.total_bytes == 20 and len(c) == 1
