"""Value encodings: optionalBuffer framing, msgpack with numpy, json, raw."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.rpc import codec
from mesh.rpc.errors import ValueDecodeError, ValueEncodeError


def rt(name, value):
    enc = codec.get(name)
    return enc.decode(memoryview(enc.encode(value)))


def base_bytes(arr):
    b = arr
    while isinstance(b, np.ndarray):
        b = b.base
    return b


def test_optional_buffer_framing_matches_hyperswarm_rpc_default():
    assert codec.get("raw").encode(b"hello") == b"\x05hello"
    assert codec.get("raw").encode(b"") == b"\x00"
    assert rt("raw", b"") is None and rt("raw", None) is None
    assert codec.get("json").encode({"a": 1}) == b'\x07{"a":1}'
    assert codec.get("bare").encode(b"xy") == b"xy"
    # trailing bytes after the optionalBuffer are tolerated, like c.decode
    assert codec.get("raw").decode(memoryview(b"\x02hi!!")) == b"hi"


@pytest.mark.parametrize("value", [None, 0, -1, 2**63, 1.5, "text", b"\x00bytes", [1, [2, "x"]],
                                   {"a": {"b": [None, True]}}, {1: "int key"}])
def test_msgpack_round_trip(value):
    assert rt("msgpack", value) == value


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int8", "uint8", "int64", "bool",
                                   "complex64", ">f4", "<i2"])
def test_numpy_round_trip_dtypes(dtype):
    arr = (np.arange(24) % 7).astype(dtype).reshape(2, 3, 4)
    out = rt("msgpack", {"x": arr})["x"]
    assert out.dtype == arr.dtype and out.shape == arr.shape and np.array_equal(out, arr)


@pytest.mark.parametrize("arr", [np.array(3.5, dtype=np.float32), np.zeros((0, 5), np.float32),
                                 np.arange(20, dtype=np.int32).reshape(4, 5)[:, ::2]])
def test_numpy_scalar_empty_and_non_contiguous(arr):
    out = rt("msgpack", arr)
    assert out.shape == arr.shape and np.array_equal(out, arr)


def test_numpy_decodes_without_copy():
    arr = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    out = rt("msgpack", [arr])[0]
    assert np.array_equal(out, arr)
    assert not out.flags.owndata and not out.flags.writeable
    raw = base_bytes(out)
    assert isinstance(raw, bytes) and len(raw) >= arr.nbytes  # a view of msgpack's ext bytes


def test_numpy_scalars_become_python_numbers():
    assert rt("msgpack", [np.float32(1.5), np.int64(7)]) == [1.5, 7]


def test_object_arrays_are_refused():
    with pytest.raises(ValueEncodeError):
        codec.get("msgpack").encode(np.array([object()], dtype=object))


def ext(header, data=b""):
    return codec.frame(msgpack.packb(msgpack.ExtType(codec.EXT_NDARRAY, msgpack.packb(header) + data)))


@pytest.mark.parametrize("payload", [
    ext(["|O", [1]], b"\x00" * 8),                # object dtype
    ext(["<f4", [2]], b"\x00" * 4),               # shape/data mismatch
    ext(["<f4", [-1]], b""),                      # negative dim
    ext(["not a dtype", [1]], b"\x00"),
    ext("garbage"),
    ext([{"names": ["a"], "formats": ["<i4"]}, [1]], b"\0" * 4),
    codec.frame(msgpack.packb(msgpack.ExtType(codec.EXT_NDARRAY, b""))),
    b"\x05\xc1\xc1\xc1\xc1\xc1",                  # invalid msgpack
    b"\x09abc",                                   # optionalBuffer longer than the value
    b"\xfd",                                      # truncated length
])
def test_bad_msgpack_values_raise_value_decode_error(payload):
    with pytest.raises(ValueDecodeError):
        codec.get("msgpack").decode(memoryview(payload))


def test_unknown_ext_types_pass_through():
    payload = codec.frame(msgpack.packb(msgpack.ExtType(5, b"zz")))
    assert codec.get("msgpack").decode(memoryview(payload)) == msgpack.ExtType(5, b"zz")


def test_json_and_raw_encode_errors():
    with pytest.raises(ValueEncodeError):
        codec.get("json").encode({"x": float("nan")})
    with pytest.raises(ValueEncodeError):
        codec.get("json").encode(np.zeros(2))
    with pytest.raises(ValueEncodeError):
        codec.get("raw").encode("not bytes")
    with pytest.raises(ValueDecodeError):
        codec.get("json").decode(memoryview(codec.frame(b"{nope")))
    with pytest.raises(ValueDecodeError):
        codec.get("json").decode(memoryview(codec.frame(b"[" * 100000)))
    with pytest.raises(ValueError):
        codec.get("yaml")


def test_inband_error_helpers():
    assert codec.inband_error("boom") == "[HRPC_ERR]=boom"
    assert codec.inband_error_message("[HRPC_ERR]=boom") == "boom"
    assert codec.inband_error_message({"ok": 1}) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_value_decoders_raise_only_value_decode_error(data):
    for name in ("msgpack", "json", "raw", "bare"):
        try:
            codec.get(name).decode(memoryview(data))
        except ValueDecodeError:
            pass


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["<f4", ">f8", "<i2", "|u1", "|b1", "<c8", "<u8"]),
       st.lists(st.integers(0, 5), max_size=4), st.integers(0, 2**32 - 1))
def test_numpy_round_trip_property(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    ints = np.asarray(rng.integers(0, 100, size=shape))
    arr = np.asarray(ints % 2 if dtype == "|b1" else ints).astype(dtype)
    out = rt("msgpack", {"a": arr, "b": [arr]})
    for got in (out["a"], out["b"][0]):
        assert got.dtype == arr.dtype and got.shape == arr.shape and np.array_equal(got, arr)


_DTYPES = ["<f4", "<f8", "<i8", "|u1", "|b1", "<c8", ">i4", "<f2"]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(_DTYPES), st.lists(st.sampled_from([0, 1, 3, 127, 128, 255, 256, 70000]), max_size=4))
def test_ndarray_headers_of_every_width_decode(dtype, shape):
    """Dims written as fixints and as 1-, 2- and 4-byte uints, every allowed dtype."""
    if np.prod(shape, dtype=np.int64) > 1 << 20:
        shape = shape[:1]
    arr = np.zeros(shape, dtype=dtype)
    back = rt("msgpack", {"x": arr})["x"]
    assert back.dtype == arr.dtype and back.shape == arr.shape


def test_ndarray_header_in_other_msgpack_forms_still_decodes():
    """Another encoder's header (str8 dtype) decodes; a negative dim is refused."""
    data = np.arange(3, dtype="<i4").tobytes()
    ok = msgpack.packb(["<i4", [3]])
    str8 = b"\x92\xd9\x03<i4" + ok[5:]
    value = codec.get("msgpack").decode(memoryview(codec.frame(msgpack.packb(
        msgpack.ExtType(codec.EXT_NDARRAY, str8 + data)))))
    assert value.tolist() == [0, 1, 2]
    with pytest.raises(ValueDecodeError):
        codec.get("msgpack").decode(memoryview(codec.frame(msgpack.packb(
            msgpack.ExtType(codec.EXT_NDARRAY, msgpack.packb(["<i4", [-1]]) + data)))))


def test_encoder_is_reusable_after_a_failed_encode():
    with pytest.raises(ValueEncodeError):
        codec.get("msgpack").encode({"a": [1, object()]})
    assert rt("msgpack", {"b": 2}) == {"b": 2}


def test_recent_header_cache_never_mixes_up_tensors():
    """Headers that share leading bytes (rank, dims, dtype) decode to their own tensors."""
    arrays = [np.arange(n, dtype=dt).reshape(shape) for n, dt, shape in [
        (512, "<f4", (1, 512)), (51, "<f4", (1, 51)), (51, "<f4", (51,)), (5, "<f4", (1, 5)),
        (512, "<i4", (1, 512)), (0, "<f4", (0, 512)), (512, ">f4", (512, 1)), (3, "<f8", (3,))]]
    for _ in range(3):
        for arr in arrays:
            back = rt("msgpack", arr)
            assert back.dtype == arr.dtype and back.shape == arr.shape and np.array_equal(back, arr)
