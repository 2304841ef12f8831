"""Arbitrary infer request values never crash the worker or leak an INTERNAL error."""

from __future__ import annotations

import asyncio

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workers.errors import WorkerError
from workers.inference import InferenceConfig, InferenceWorker

DTYPES = ["float32", "float64", "float16", "int64", "int8", "bool"]

arrays = st.builds(
    lambda dtype, shape: np.zeros(shape, dtype),
    st.sampled_from(DTYPES),
    st.lists(st.sampled_from([0, 1, 2, 63, 64, 65]), min_size=0, max_size=3).map(tuple),
)
tensor_values = st.one_of(arrays, st.none(), st.integers(), st.text(max_size=5), st.lists(st.floats(), max_size=3))
inputs = st.one_of(
    st.dictionaries(st.sampled_from(["x", "y", ""]) | st.text(max_size=4), tensor_values, max_size=3),
    st.none(), st.integers(), st.text(max_size=5),
)
requests = st.one_of(
    st.fixed_dictionaries({}, optional={
        "model": st.sampled_from(["mlp-tiny", "digits", ""]) | st.text(max_size=6) | st.integers() | st.none(),
        "version": st.sampled_from(["1", "2"]) | st.integers(0, 3) | st.booleans() | st.none(),
        "inputs": inputs,
    }),
    st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2),
)


def test_random_requests_get_a_reply_or_a_coded_error(model_dir):
    loop = asyncio.new_event_loop()
    worker = InferenceWorker(InferenceConfig(model_dir=str(model_dir), ops_port=0, serve=("mlp-tiny",),
                                             lazy_load=True))
    loop.run_until_complete(worker.start())
    seen_codes: set[str] = set()

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(requests)
    def check(value):
        try:
            reply = loop.run_until_complete(asyncio.wait_for(worker.call("infer", value), 10))
        except WorkerError as e:
            assert e.code in {"INVALID_INPUT", "MODEL_NOT_FOUND"}, (e.code, str(e))
            seen_codes.add(e.code)
            return
        assert set(reply) == {"outputs", "model", "version", "batch_size"}

    try:
        check()
        assert worker.state == "serving"
        ok = loop.run_until_complete(worker.call("infer", {"model": "mlp-tiny",
                                                           "inputs": {"x": np.zeros((1, 64), np.float32)}}))
        assert ok["outputs"]["y"].shape == (1, 10)
        assert "INVALID_INPUT" in seen_codes
    finally:
        loop.run_until_complete(worker.stop())
        loop.close()
