"""Tensor decoders: round trips, and arbitrary input gives a result or InvalidTensor, nothing else."""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import kserve, tensors
from gateway.errors import InvalidTensor

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=4), max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_decode_multi_never_crashes(data):
    try:
        out = tensors.decode_multi(data)
    except InvalidTensor:
        return
    assert all(isinstance(a, np.ndarray) for a in out.values())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.text(max_size=8))
def test_decode_multi_with_json_header_never_crashes(tail, name):
    header = ('{"tensors": [{"name": "%s", "shape": [2], "dtype": "float32"}]}' % name.replace('"', "")).encode()
    try:
        tensors.decode_multi(struct.pack(">I", len(header)) + header + tail)
    except InvalidTensor:
        pass


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_json_inputs_never_crash(body):
    for decode in (tensors.inputs_from_json, kserve.decode_inputs):
        try:
            decode(body)
        except InvalidTensor:
            pass
    try:
        tensors.inputs_from_json({"inputs": {"x": body}})
        kserve.decode_inputs({"inputs": [body]})
    except InvalidTensor:
        pass


@given(st.sampled_from(tensors.DTYPES), st.lists(st.integers(0, 3), max_size=3))
def test_multi_round_trip(dtype, shape):
    arr = (np.arange(int(np.prod(shape))) % 2).astype(dtype).reshape(shape)
    out = tensors.decode_multi(tensors.encode_multi({"a": arr, "b": arr}))
    assert out["a"].dtype == arr.dtype and out["a"].shape == arr.shape and np.array_equal(out["a"], arr)
    back = tensors.from_json("a", tensors.to_json(arr))
    assert back.dtype == arr.dtype and np.array_equal(back, arr)


def test_raw_header_errors():
    for shape, dtype, fragment in (("a,b", "float32", "comma-separated"), ("1", None, "X-Tensor-Dtype"),
                                   ("-1", "float32", "non-negative"), ("2", "complex64", "dtype 'complex64'")):
        try:
            tensors.from_raw("x", shape, dtype, b"\x00" * 8)
        except InvalidTensor as e:
            assert fragment in str(e)
        else:
            raise AssertionError(shape)
