"""InferenceWorker with real onnxruntime, handlers called in-process."""

from __future__ import annotations

import asyncio
import shutil
import threading

import numpy as np
import onnxruntime as ort  # the independent reference for "what onnxruntime returns"
import pytest

from mesh.topics import topic_key
from workers.config import ModelConfig
from workers.errors import Busy, ChecksumMismatch, InferenceFailed, InvalidInput, ModelNotFound, ModelNotLoaded, ModelTooLarge, Unavailable, WorkerError
from workers.inference import InferenceConfig, InferenceWorker
from workers.inference.source import LocalDirectorySource, ModelFile
from workers.inference.batcher import RunExecutor
from workers.inference.runner import CPU

from .meshdoubles import Mesh


def config(model_dir, **kw) -> InferenceConfig:
    return InferenceConfig(model_dir=str(model_dir), ops_port=0, namespace="ns", **{"providers": (CPU,), **kw})


def reference(path, feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def digits_rows(n, seed=0):
    return np.random.default_rng(seed).integers(0, 17, size=(n, 64)).astype(np.float32)


@pytest.fixture
async def worker(model_dir):
    mesh = Mesh()
    w = InferenceWorker(config(model_dir, serve=("digits",)))
    await w.start(mesh)
    w.test_mesh = mesh
    yield w
    await w.stop()


async def test_infer_matches_onnxruntime_in_process(worker, model_dir):
    x = digits_rows(5)
    reply = await worker.call("infer", {"model": "digits", "inputs": {"x": x}})
    ref = reference(model_dir / "digits-1.onnx", {"x": x})
    assert reply["model"] == "digits" and reply["version"] == "1" and reply["batch_size"] == 5
    assert set(reply["outputs"]) == {"probabilities", "label"}
    np.testing.assert_array_equal(reply["outputs"]["probabilities"], ref["probabilities"])
    np.testing.assert_array_equal(reply["outputs"]["label"], ref["label"])
    assert reply["outputs"]["label"].dtype == np.int64


async def test_topic_announced_for_loaded_model(worker):
    assert worker.test_mesh.swarm.joined == {topic_key("ns", "digits")}
    assert worker.topics == ["digits"]


@pytest.mark.parametrize("inline_max_us", [0.0, 200.0], ids=["executor", "inline"])
async def test_concurrent_requests_are_batched_and_match_solo(model_dir, inline_max_us):
    worker = InferenceWorker(config(model_dir, serve=("digits",), inline_max_us=inline_max_us))
    await worker.start()
    rows = [digits_rows(1, seed=i) for i in range(32)]
    solo = [reference(model_dir / "digits-1.onnx", {"x": r}) for r in rows]
    replies = await asyncio.wait_for(asyncio.gather(
        *[worker.call("infer", {"model": "digits", "inputs": {"x": r}}) for r in rows]), 10)
    for reply, ref in zip(replies, solo):
        np.testing.assert_allclose(reply["outputs"]["probabilities"], ref["probabilities"], rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(reply["outputs"]["label"], ref["label"])
    assert max(r["batch_size"] for r in replies) > 1
    stats = await worker.call("stats")
    s = stats["models"]["digits@1"]
    assert s["requests"]["OK"] == 32 and s["rows"] == 32
    assert s["batches"] < 32
    assert any(float(bound) > 1 for bound in s["batch_rows"]["buckets"])
    await worker.stop()


async def test_unbatched_model_runs_one_request_per_run(model_dir):
    w = InferenceWorker(config(model_dir, serve=("mlp-tiny",), batching=False))
    await w.start()
    x = np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32)
    replies = await asyncio.wait_for(asyncio.gather(
        *[w.call("infer", {"model": "mlp-tiny", "inputs": {"x": x}}) for _ in range(8)]), 10)
    assert {r["batch_size"] for r in replies} == {1}
    ref = reference(model_dir / "mlp-tiny-1.onnx", {"x": x})["y"]
    for r in replies:
        np.testing.assert_array_equal(r["outputs"]["y"], ref)
    await w.stop()


async def test_past_capacity_callers_get_busy_quickly(model_dir):
    w = InferenceWorker(config(model_dir, serve=("digits",), max_concurrent=1, max_queue=2))
    await w.start()
    x = digits_rows(1)
    results = await asyncio.wait_for(asyncio.gather(
        *[w.call("infer", {"model": "digits", "inputs": {"x": x}}) for _ in range(20)],
        return_exceptions=True), 10)
    busy = [r for r in results if isinstance(r, Busy)]
    ok = [r for r in results if isinstance(r, dict)]
    assert len(ok) == 3 and len(busy) == 17
    assert all(b.code == "BUSY" and b.retry_after_ms >= 1 for b in busy)
    cap = await w.call("capacity")
    assert cap["max_concurrent"] == 1 and cap["max_queue"] == 2 and cap["available"]
    assert (await w.call("stats"))["models"]["digits@1"]["busy"] == 17
    await w.stop()


@pytest.mark.parametrize("request_value, code, message", [
    ({"model": "digits", "inputs": {"x": np.zeros((1, 64), np.int64)}}, "INVALID_INPUT",
     "input 'x': expected dtype float32, got int64"),
    ({"model": "digits", "inputs": {"x": np.zeros((1, 32), np.float32)}}, "INVALID_INPUT",
     "input 'x': expected dim 1 to be 64"),
    ({"model": "digits", "inputs": {"image": np.zeros((1, 64), np.float32)}}, "INVALID_INPUT",
     "unexpected input 'image'; expected inputs: x"),
    ({"model": "digits", "inputs": {}}, "INVALID_INPUT", "missing input 'x'"),
    ({"inputs": {}}, "INVALID_INPUT", "'model' must be a non-empty string"),
    ("digits", "INVALID_INPUT", "request must be a map"),
    ({"model": "nope", "inputs": {}}, "MODEL_NOT_FOUND", "model 'nope' is not in"),
    ({"model": "digits", "version": "7", "inputs": {}}, "MODEL_NOT_FOUND", "has no version '7'"),
])
async def test_bad_requests_name_the_expected_value(worker, request_value, code, message):
    with pytest.raises(Exception) as e:
        await worker.call("infer", request_value)
    assert e.value.code == code and message in str(e.value)


async def test_sha256_pin_mismatch_refuses_to_load(model_dir):
    pinned = ModelConfig(id="digits", version="1", file="digits-1.onnx", sha256="0" * 64)
    w = InferenceWorker(config(model_dir, models=(pinned,), serve=("mlp-tiny",)))
    await w.start()
    with pytest.raises(ChecksumMismatch, match="expected sha256 0000"):
        await w.call("load_model", {"model": "digits"})
    assert [m["model"] for m in (await w.call("models"))["models"]] == ["mlp-tiny"]
    await w.stop()
    # a configured model that does not verify stops the worker from starting
    w = InferenceWorker(config(model_dir, models=(pinned,)))
    with pytest.raises(ChecksumMismatch):
        await w.start()
    assert w.state == "stopped"


async def test_tampered_file_refused_by_local_source(model_dir, manifest, tmp_path):
    for f in ("manifest.json", "mlp-tiny-1.onnx"):
        shutil.copy(model_dir / f, tmp_path / f)
    data = bytearray((tmp_path / "mlp-tiny-1.onnx").read_bytes())
    data[-1] ^= 1
    (tmp_path / "mlp-tiny-1.onnx").write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch, match=manifest["mlp-tiny"]["sha256"]):
        await LocalDirectorySource(tmp_path).fetch("mlp-tiny", None)


async def test_worker_rechecks_what_a_source_hands_over(model_dir, manifest):
    class LyingSource:
        async def fetch(self, model_id, version):
            e = manifest["mlp-tiny"]
            return ModelFile(model_id, "1", model_dir / "digits-1.onnx", e["sha256"], e["size"])

    w = InferenceWorker(config(model_dir), source=LyingSource())
    await w.start()
    with pytest.raises(ChecksumMismatch):
        await w.load("mlp-tiny")
    await w.stop()


async def test_lru_eviction_by_count_leaves_topic(model_dir):
    mesh = Mesh()
    w = InferenceWorker(config(model_dir, cache_max_models=2))
    await w.start(mesh)
    for m in ("digits", "mlp-tiny", "conv-small"):
        await w.call("load_model", {"model": m})
    loaded = [m["model"] for m in (await w.call("models"))["models"]]
    assert loaded == ["mlp-tiny", "conv-small"]
    await asyncio.wait_for(asyncio.gather(*w._retiring), 5)  # eviction drains in the background
    assert mesh.swarm.joined == {topic_key("ns", "mlp-tiny"), topic_key("ns", "conv-small")}
    await w.stop()
    assert ("leave", topic_key("ns", "digits")) in mesh.swarm.events


async def test_lru_eviction_by_memory_and_too_large(model_dir, manifest):
    sizes = {m: manifest[m]["size"] for m in ("digits", "mlp-tiny", "conv-small")}
    bound = sizes["conv-small"] + sizes["mlp-tiny"]
    w = InferenceWorker(config(model_dir, cache_max_bytes=bound, lazy_load=True))
    await w.start()
    await w.load("digits")
    await w.load("mlp-tiny")
    await w.load("conv-small")  # digits + tiny + conv > bound: digits goes
    assert [m["model"] for m in (await w.call("models"))["models"]] == ["mlp-tiny", "conv-small"]
    stats = await w.call("stats")
    assert stats["cache"]["evictions"] == 1 and stats["cache"]["bytes"] <= bound
    # lazily reloaded on its next infer, evicting the least recently used
    await w.call("infer", {"model": "digits", "inputs": {"x": digits_rows(1)}})
    assert [m["model"] for m in (await w.call("models"))["models"]] == ["conv-small", "digits"]
    await w.stop()
    small = InferenceWorker(config(model_dir, cache_max_bytes=sizes["digits"]))
    await small.start()
    with pytest.raises(ModelTooLarge):
        await small.load("conv-small")
    await small.stop()


async def test_load_unload_and_not_loaded(model_dir):
    mesh = Mesh()
    w = InferenceWorker(config(model_dir, lazy_load=False))
    await w.start(mesh)
    with pytest.raises(ModelNotLoaded):
        await w.call("infer", {"model": "mlp-tiny", "inputs": {"x": np.zeros((1, 64), np.float32)}})
    desc = await w.call("load_model", {"model": "mlp-tiny"})
    assert desc["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 64]}]
    assert desc["batching"] is True and desc["providers"] == ["CPUExecutionProvider"]
    assert topic_key("ns", "mlp-tiny") in mesh.swarm.joined
    assert await w.call("unload_model", {"model": "mlp-tiny"}) == {"model": "mlp-tiny", "versions": ["1"]}
    assert mesh.swarm.joined == set()
    with pytest.raises(ModelNotLoaded):
        await w.call("unload_model", {"model": "mlp-tiny"})
    await w.stop()


async def test_graceful_drain_finishes_in_flight_inference(model_dir):
    mesh = Mesh()
    w = InferenceWorker(config(model_dir, serve=("conv-small",), max_queue=64))
    await w.start(mesh)
    x = np.random.default_rng(2).standard_normal((1, 3, 64, 64)).astype(np.float32)
    calls = [asyncio.ensure_future(w.call("infer", {"model": "conv-small", "inputs": {"x": x}})) for _ in range(16)]
    await asyncio.sleep(0)  # let the calls be admitted
    await asyncio.wait_for(w.stop(), 10)
    replies = await asyncio.wait_for(asyncio.gather(*calls), 10)
    ref = reference(model_dir / "conv-small-1.onnx", {"x": x})["y"]
    for r in replies:
        np.testing.assert_allclose(r["outputs"]["y"], ref, rtol=1e-5, atol=1e-6)
    assert mesh.swarm.joined == set()
    with pytest.raises(Unavailable):
        await w.call("infer", {"model": "conv-small", "inputs": {"x": x}})


async def test_cancelled_caller_does_not_disturb_others(worker):
    x = digits_rows(1)
    calls = [asyncio.ensure_future(worker.call("infer", {"model": "digits", "inputs": {"x": x}})) for _ in range(6)]
    await asyncio.sleep(0)
    calls[2].cancel()
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
    assert isinstance(results[2], asyncio.CancelledError)
    assert all(isinstance(r, dict) for i, r in enumerate(results) if i != 2)


async def test_per_model_settings_override_defaults(model_dir, manifest):
    m = ModelConfig(id="conv-small", version="1", file="conv-small-1.onnx",
                    sha256=manifest["conv-small"]["sha256"], batching=False, max_queue=5)
    w = InferenceWorker(config(model_dir, models=(m,)))
    await w.start()
    desc = (await w.call("models"))["models"][0]
    assert desc["model"] == "conv-small" and desc["batching"] is False and desc["max_queue"] == 5
    await w.stop()


async def test_metrics_render_inference_histograms(worker):
    from workers.ops_http import render_metrics
    await asyncio.gather(*[worker.call("infer", {"model": "digits", "inputs": {"x": digits_rows(1)}})
                           for _ in range(4)])
    text = render_metrics(worker.registry).decode()
    assert 'mesh_worker_inference_requests_total{code="OK",model="digits@1"} 4.0' in text
    assert 'mesh_worker_inference_batch_rows_bucket{le="+Inf",model="digits@1"}' in text
    assert 'mesh_worker_inference_queued{model="digits@1"} 0.0' in text
    assert 'mesh_worker_requests_total{code="OK",method="infer"} 4.0' in text
    assert 'mesh_worker_model_provider{model="digits@1",provider="CPUExecutionProvider"} 1.0' in text


async def test_read_only_and_strided_inputs_as_rpc_delivers_them(worker, model_dir):
    # the RPC codec hands over np.frombuffer views (read-only, no copy)
    x = np.frombuffer(digits_rows(3).tobytes(), np.float32).reshape(3, 64)
    strided = np.repeat(digits_rows(2, seed=5), 2, axis=1)[:, ::2]
    replies = await asyncio.gather(*[worker.call("infer", {"model": "digits", "inputs": {"x": a}})
                                     for a in (x, strided)])
    for a, r in zip((x, strided), replies):
        ref = reference(model_dir / "digits-1.onnx", {"x": np.ascontiguousarray(a)})
        np.testing.assert_allclose(r["outputs"]["probabilities"], ref["probabilities"], rtol=1e-5, atol=1e-7)


async def test_peers_can_fetch_a_loaded_model_file(worker, model_dir, manifest):
    entry = await worker.call("get", {"id": "digits"})
    assert entry["sha256"] == manifest["digits"]["sha256"] and entry["size"] == manifest["digits"]["size"]
    assert entry["type"] == "onnx" and entry["inputs"][0] == {"name": "x", "dtype": "float32", "shape": ["batch", 64]}
    data, offset = b"", 0
    while offset < entry["size"]:
        chunk = await worker.call("read_chunk", {"sha256": entry["sha256"], "offset": offset, "length": 4096})
        assert chunk["size"] == entry["size"]
        data += chunk["data"]
        offset += len(chunk["data"])
    assert data == (model_dir / "digits-1.onnx").read_bytes()
    with pytest.raises(ModelNotFound):
        await worker.call("read_chunk", {"sha256": "0" * 64, "offset": 0, "length": 1})
    with pytest.raises(ModelNotFound):
        await worker.call("get", {"id": "conv-small"})
    for bad in ({"sha256": "xyz", "offset": 0, "length": 1}, {"sha256": entry["sha256"], "offset": -1, "length": 1},
                {"sha256": entry["sha256"], "offset": 0, "length": 2 << 20},
                {"sha256": entry["sha256"], "offset": entry["size"] + 1, "length": 1}, None):
        with pytest.raises(InvalidInput):
            await worker.call("read_chunk", bad)


def gather_model(path):
    """idx[batch] int64 -> Gather(table[10, 4]) -> rows[batch, 4]; an index out of
    range makes onnxruntime fail at run time."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    table = numpy_helper.from_array(np.arange(40, dtype=np.float32).reshape(10, 4), "table")
    graph = helper.make_graph([helper.make_node("Gather", ["table", "idx"], ["rows"], axis=0)], "gather",
                              [helper.make_tensor_value_info("idx", TensorProto.INT64, ["batch"])],
                              [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["batch", 4])], [table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data = model.SerializeToString()
    path.write_bytes(data)
    import hashlib
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("inline_max_us", [0.0, 1e6], ids=["executor", "inline"])
async def test_one_failing_request_does_not_fail_its_batch(tmp_path, inline_max_us):
    digest = gather_model(tmp_path / "gather.onnx")
    m = ModelConfig(id="gather", file="gather.onnx", sha256=digest)
    w = InferenceWorker(config(tmp_path, models=(m,), inline_max_us=inline_max_us))
    await w.start()
    await w.call("infer", {"model": "gather", "inputs": {"idx": np.array([1], np.int64)}})  # sets run-time estimate
    idx = [np.array([i], np.int64) for i in (1, 2, 99, 3)]
    results = await asyncio.wait_for(asyncio.gather(
        *[w.call("infer", {"model": "gather", "inputs": {"idx": i}}) for i in idx], return_exceptions=True), 10)
    assert [r.code if isinstance(r, Exception) else "OK" for r in results] == ["OK", "OK", "INFERENCE_FAILED", "OK"]
    assert "onnxruntime" in str(results[2])
    np.testing.assert_array_equal(results[3]["outputs"]["rows"], [[12, 13, 14, 15]])
    assert w.state == "serving"
    await w.stop()


def test_providers_auto_and_missing():
    from workers.errors import ModelLoadFailed
    from workers.inference.runner import available_providers, resolve_providers
    expected = ["CUDAExecutionProvider", "CPUExecutionProvider"] if "CUDAExecutionProvider" in available_providers() \
        else ["CPUExecutionProvider"]
    assert resolve_providers(("auto",)) == expected
    assert resolve_providers(("CPUExecutionProvider",)) == ["CPUExecutionProvider"]
    with pytest.raises(ModelLoadFailed, match="not available; available:"):
        resolve_providers(("NoSuchExecutionProvider",))


def test_a_provider_that_did_not_start_fails_by_name_and_warns_under_auto():
    from workers.errors import ModelLoadFailed
    from workers.inference.runner import CPU, CUDA, check_started
    assert check_started(("auto",), [CUDA, CPU], [CUDA, CPU], "", "m.onnx") == ""
    warning = check_started(("auto",), [CUDA, CPU], [CPU], "Failed to load libcublasLt.so.13", "m.onnx")
    assert warning == ("onnxruntime could not start CUDAExecutionProvider for m.onnx: Failed to load "
                       "libcublasLt.so.13; serving on CPUExecutionProvider")
    with pytest.raises(ModelLoadFailed, match="could not start CUDAExecutionProvider for m.onnx: its reason is in"):
        check_started((CUDA, CPU), [CUDA, CPU], [CPU], "", "m.onnx")
    assert check_started((CPU,), [CPU], [CPU], "", "m.onnx") == ""


async def test_file_that_is_not_onnx_fails_to_load(tmp_path, model_dir, manifest):
    import hashlib
    data = b"not an onnx model"
    (tmp_path / "junk.onnx").write_bytes(data)
    junk = ModelConfig(id="junk", file="junk.onnx", sha256=hashlib.sha256(data).hexdigest())
    w = InferenceWorker(config(tmp_path, models=(junk,), serve=("none-at-start",), lazy_load=True),
                        source=LocalDirectorySource(tmp_path, (junk,)))
    with pytest.raises(ModelNotFound):  # serve names a model no source has: start fails cleanly
        await w.start()
    w = InferenceWorker(config(tmp_path, models=(), serve=()), source=LocalDirectorySource(tmp_path, (junk,)))
    await w.start()
    with pytest.raises(Exception) as e:
        await w.call("infer", {"model": "junk", "inputs": {}})
    assert e.value.code == "MODEL_LOAD_FAILED" and "onnxruntime cannot load" in str(e.value)
    assert w.state == "serving"
    await w.stop()


@pytest.mark.parametrize("split", [True, False])
async def test_burst_after_callers_were_away_runs_as_two_halves(model_dir, split):
    """Callers that spend a while away between bursts (a network round trip) get
    their burst split in two back-to-back runs, so half of them are on the wire
    while the other half computes; with split_bursts off it runs whole."""
    worker = InferenceWorker(config(model_dir, serve=("conv-small",), inline_max_us=0.0, split_bursts=split))
    await worker.start()
    rng = np.random.default_rng(0)
    rows = [rng.standard_normal((1, 3, 64, 64)).astype(np.float32) for _ in range(32)]

    async def burst():
        return await asyncio.wait_for(asyncio.gather(
            *[worker.call("infer", {"model": "conv-small", "inputs": {"x": r}}) for r in rows]), 20)

    first = await burst()          # warm-up: the model's run time becomes known
    await asyncio.sleep(0.3)       # the callers' time away (far above half a run)
    second = await burst()
    assert sorted(r["batch_size"] for r in second) == ([16] * 32 if split else [32] * 32)
    for a, b in zip(first, second):  # the same rows give the same answers however they were batched
        np.testing.assert_allclose(a["outputs"]["y"], b["outputs"]["y"], rtol=1e-5, atol=1e-6)
    await worker.stop()



class HookedSession:
    """A dispatcher's session that calls `before_run(feeds)` in the executor thread
    before each real run."""

    def __init__(self, real, before_run):
        self._real, self._before_run = real, before_run

    def __getattr__(self, name):
        return getattr(self._real, name)

    def run(self, feeds):
        self._before_run(feeds)
        return self._real.run(feeds)


async def split_ready_worker(model_dir, before_run, **settings):
    """(worker, dispatcher, burst, first results): a worker serving conv-small whose
    32 callers have been away after a first burst, so their next burst is split."""
    worker = InferenceWorker(config(model_dir, **{"serve": ("conv-small",), "inline_max_us": 0.0, **settings}))
    await worker.start()
    dispatcher = worker.loaded("conv-small").dispatcher
    dispatcher.session = HookedSession(dispatcher.session, before_run)
    rows = [np.random.default_rng(i).standard_normal((1, 3, 64, 64)).astype(np.float32) for i in range(32)]

    def burst():
        return asyncio.gather(*[worker.call("infer", {"model": "conv-small", "inputs": {"x": r}}) for r in rows])

    first = await asyncio.wait_for(burst(), 20)  # the model's run time becomes known
    await asyncio.sleep(0.3)                     # the callers' time away (far above half a run)
    return worker, dispatcher, burst, first


async def dispatched(dispatcher):
    """Until the gathering turn has dispatched a burst (a run is in flight)."""
    async with asyncio.timeout(10):
        while dispatcher.load()["running"] == 0:
            await asyncio.sleep(0)


async def test_second_half_of_a_split_burst_starts_without_the_event_loop(model_dir):
    """The half that waits for a split run is handed to that run's executor thread,
    which starts it the moment the first half ends: here the event loop is blocked
    while that happens, so a loop turn between the halves would never come."""
    watching, second_run = [], threading.Event()

    def watch(feeds):
        if watching:
            watching.append(len(feeds["x"]))
            if len(watching) == 3:  # [True, first half, second half]
                second_run.set()

    worker, dispatcher, burst, _ = await split_ready_worker(model_dir, watch)
    watching.append(True)
    second = asyncio.ensure_future(burst())
    await dispatched(dispatcher)
    assert second_run.wait(10), "the second half did not start while the loop was blocked"
    results = await asyncio.wait_for(second, 20)
    assert watching[1:] == [16, 16]
    assert sorted(r["batch_size"] for r in results) == [16] * 32
    await worker.stop()



@pytest.mark.parametrize("follow", [True, False], ids=["follow_runs", "beside"])
async def test_rows_arriving_mid_run_follow_it_in_its_thread_or_start_beside_it(model_dir, follow):
    """While a run is in flight, rows that do not fill a batch run right after it in
    the same executor thread (follow_runs); with follow_runs off they start beside it
    on the other thread after max_delay_ms."""
    gate, threads = threading.Event(), []

    def hold_first(feeds):
        threads.append((threading.get_ident(), len(feeds["x"])))
        if len(threads) == 1:
            assert gate.wait(10)

    worker = InferenceWorker(config(model_dir, serve=("mlp-tiny",), inline_max_us=0.0, follow_runs=follow,
                                    max_delay_ms=1.0))
    await worker.start()
    dispatcher = worker.loaded("mlp-tiny").dispatcher
    dispatcher.session = HookedSession(dispatcher.session, hold_first)
    xs = [np.random.default_rng(i).standard_normal((1, 64)).astype(np.float32) for i in range(3)]

    def infer(x):
        return asyncio.ensure_future(worker.call("infer", {"model": "mlp-tiny", "inputs": {"x": x}}))

    first = infer(xs[0])
    await dispatched(dispatcher)
    later = asyncio.gather(infer(xs[1]), infer(xs[2]))
    try:
        async with asyncio.timeout(10):
            if follow:   # handed to the held run's thread; nothing starts beside it
                while dispatcher.load()["queued"] != 2 or dispatcher._handoff == []:
                    await asyncio.sleep(0)
                assert dispatcher.load()["running"] == 1 and not later.done()
            else:        # they run and are answered while the first run is still held
                await later
                assert not first.done()
    finally:
        gate.set()
    replies = await asyncio.wait_for(asyncio.gather(first, later), 10)
    assert [r["batch_size"] for r in [replies[0], *replies[1]]] == [1, 2, 2]
    assert [rows for _, rows in threads] == [1, 2]
    assert (threads[0][0] == threads[1][0]) is follow   # the same thread: the run's lane
    for x, r in zip(xs, [replies[0], *replies[1]]):
        np.testing.assert_allclose(r["outputs"]["y"], reference(model_dir / "mlp-tiny-1.onnx", {"x": x})["y"],
                                   rtol=1e-5, atol=1e-6)
    await worker.stop()


async def test_rows_arriving_while_a_failed_batch_is_rerun_one_by_one_do_not_wait_for_it(model_dir):
    """A failed batch's requests are re-run one at a time; that is no lane to follow,
    so a request that comes meanwhile starts on the other thread instead of waiting
    behind all of them."""
    failed, gate = [], threading.Event()

    def fail_batches_then_hold(feeds):
        if len(feeds["x"]) > 1 and not failed:
            failed.append(True)
            raise InferenceFailed("injected failure")
        if failed and len(failed) == 1 and len(feeds["x"]) == 1 and feeds["x"][0, 0] == 7.0:
            failed.append(True)
            assert gate.wait(10)   # the first re-run holds its thread

    worker = InferenceWorker(config(model_dir, serve=("mlp-tiny",), inline_max_us=0.0))
    await worker.start()
    dispatcher = worker.loaded("mlp-tiny").dispatcher
    dispatcher.session = HookedSession(dispatcher.session, fail_batches_then_hold)
    xs = [np.full((1, 64), v, np.float32) for v in (1.0, 7.0, 3.0)]

    def infer(x):
        return asyncio.ensure_future(worker.call("infer", {"model": "mlp-tiny", "inputs": {"x": x}}))

    try:
        first = infer(xs[0])                    # alone, at once
        batch = [infer(xs[1]), infer(xs[2])]    # one 2-row run, which fails
        await asyncio.wait_for(until(lambda: len(failed) == 2), 10)   # its first re-run is held
        late = await asyncio.wait_for(infer(np.full((1, 64), 5.0, np.float32)), 10)
        assert late["batch_size"] == 1 and not batch[0].done()
    finally:
        gate.set()
    replies = await asyncio.wait_for(asyncio.gather(first, *batch), 10)
    assert [r["batch_size"] for r in replies] == [1, 1, 1]
    await worker.stop()

async def test_rows_handed_to_a_failing_split_run_are_still_served(model_dir):
    """A split run that fails hands its waiting half back: that half runs next, and
    the failed half is re-run one request at a time (one bad request fails alone)."""
    fail_next, release = [], threading.Event()

    def fail_once(feeds):
        if fail_next:
            fail_next.clear()
            assert release.wait(10)  # until the second half waits in the hand-off
            raise InferenceFailed("injected failure")

    worker, dispatcher, burst, first = await split_ready_worker(model_dir, fail_once)
    fail_next.append(True)
    second = asyncio.ensure_future(burst())
    await dispatched(dispatcher)
    assert dispatcher.load()["queued"] == 16
    release.set()
    results = await asyncio.wait_for(second, 20)
    assert sorted(r["batch_size"] for r in results) == [1] * 16 + [16] * 16
    for a, b in zip(first, results):
        np.testing.assert_allclose(a["outputs"]["y"], b["outputs"]["y"], rtol=1e-5, atol=1e-6)
    assert dispatcher.load() == {**dispatcher.load(), "running": 0, "queued": 0}
    await worker.stop()


async def test_a_failure_while_handing_back_a_run_frees_its_slot(model_dir):
    """If handing a run's results back fails (a bug), its callers hear an error,
    the run's slot is freed and the model keeps serving."""
    worker = InferenceWorker(config(model_dir, serve=("conv-small",), inline_max_us=0.0, max_concurrent=1))
    await worker.start()
    dispatcher = worker.loaded("conv-small").dispatcher
    real, broken = worker.stats.queue_s.observe, [True]

    def observe(*args):
        if broken:
            broken.clear()
            raise RuntimeError("metrics broke")
        return real(*args)

    worker.stats.queue_s.observe = observe
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with pytest.raises(WorkerError) as e:
        await asyncio.wait_for(worker.call("infer", {"model": "conv-small", "inputs": {"x": x}}), 10)
    assert e.value.code == "INTERNAL"
    assert dispatcher.load()["running"] == 0
    reply = await asyncio.wait_for(worker.call("infer", {"model": "conv-small", "inputs": {"x": x}}), 10)
    assert reply["outputs"]["y"].shape[0] == 1
    await worker.stop()


async def test_a_lane_gives_its_thread_up_to_another_models_run(model_dir):
    """With one executor thread, a split run of one model does not keep the thread
    for its second half while another model's run waits for it: that run goes
    first, so a busy model cannot starve the others."""
    order, armed, release = [], [], threading.Event()

    def conv_run(feeds):
        if armed:
            armed.clear()
            assert release.wait(10)  # until the other model's run waits for the thread
        if release.is_set():
            order.append(("conv-small", len(feeds["x"])))

    worker, dispatcher, burst, _ = await split_ready_worker(
        model_dir, conv_run, serve=("conv-small", "mlp-tiny"), executor_threads=1)
    tiny = worker.loaded("mlp-tiny").dispatcher
    tiny.session = HookedSession(tiny.session, lambda feeds: order.append(("mlp-tiny", len(feeds["x"]))))
    armed.append(True)
    second = asyncio.ensure_future(burst())
    await dispatched(dispatcher)
    x = np.zeros((1, 64), np.float32)
    other = asyncio.ensure_future(worker.call("infer", {"model": "mlp-tiny", "inputs": {"x": x}}))
    await dispatched(tiny)
    release.set()
    await asyncio.wait_for(asyncio.gather(second, other), 20)
    assert order == [("conv-small", 16), ("mlp-tiny", 1), ("conv-small", 16)]
    await worker.stop()


def test_run_executor_is_busy_until_its_calls_finish():
    executor = RunExecutor(1)
    try:
        gate = threading.Event()
        assert not executor.busy()
        first = executor.submit(gate.wait, 10)
        second = executor.submit(lambda: "done")
        assert executor.busy()
        gate.set()
        assert first.result(10) is True and second.result(10) == "done"
        assert not executor.busy() and executor.waiting == 0
    finally:
        executor.shutdown(wait=True)



async def until(predicate):
    while not predicate():
        await asyncio.sleep(0)
