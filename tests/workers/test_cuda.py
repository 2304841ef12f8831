"""onnxruntime-gpu's CUDA provider under the inference worker.

These need onnxruntime-gpu; CI's machines have neither it nor a GPU, so they
skip there. Two situations are covered, each where it is real:

* a GPU and its libraries: sessions, an in-process worker and a worker process
  on the mesh run on CUDA and return what onnxruntime returns in-process;
* onnxruntime-gpu without a usable GPU or CUDA libraries: a provider asked for
  by name fails the load with the reason, "auto" serves on CPU, and nothing
  reaches stdout (a node's JSON event stream).
"""

from __future__ import annotations

import asyncio

import numpy as np
import onnxruntime as ort  # the independent reference for "what onnxruntime returns"
import pytest

from scripts.make_models import write_models
from workers.errors import InferenceFailed, ModelLoadFailed
from workers.inference import InferenceConfig, InferenceWorker
from workers.inference.runner import AUTO, CPU, CUDA, RunnerConfig, open_session, prepare_cuda, with_options

HAS_CUDA_PROVIDER = CUDA in ort.get_available_providers()


def cuda_starts() -> bool:
    if not HAS_CUDA_PROVIDER:
        return False
    prepare_cuda()
    probe = ort.InferenceSession(ort_model_bytes(), providers=[CUDA], enable_fallback=0)
    return probe.get_providers()[0] == CUDA


def ort_model_bytes() -> bytes:
    from onnx import TensorProto, helper
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return model.SerializeToString()


CUDA_STARTS = cuda_starts()
needs_gpu = pytest.mark.skipif(not CUDA_STARTS, reason="needs onnxruntime-gpu and a GPU it can use")
needs_gpu_missing = pytest.mark.skipif(not HAS_CUDA_PROVIDER or CUDA_STARTS,
                                       reason="needs onnxruntime-gpu on a machine where CUDA cannot start")


@pytest.fixture(scope="module")
def mid_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cuda-models")
    write_models(folder, ("mlp-mid",))
    return folder


def raw(path, providers):
    """onnxruntime in-process, with the CUDA options the worker uses (float32
    matmuls: with TF32, onnxruntime's default, results differ ~1e-3)."""
    sess = ort.InferenceSession(str(path), providers=with_options(providers, RunnerConfig()))
    assert sess.get_providers()[0] == providers[0]
    return lambda x: sess.run(["y"], {"x": x})[0]


def rows(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 512)).astype(np.float32)


def close_to_cpu(gpu, cpu):
    # cuBLAS sums in other orders than MLAS (the tolerance was set with TF32 on; it is off now).
    np.testing.assert_allclose(gpu, cpu, rtol=1e-2, atol=1e-2 * float(np.abs(cpu).max()))


@needs_gpu
def test_sessions_named_and_auto_run_on_cuda(mid_dir):
    path = str(mid_dir / "mlp-mid-1.onnx")
    x = rows(32)
    for providers in ((CUDA,), AUTO):
        session = open_session(path, RunnerConfig(providers=providers))
        assert session.providers[0] == CUDA, providers
        out = session.run({"x": x})["y"]
        np.testing.assert_array_equal(out, raw(path, [CUDA])(x))
        close_to_cpu(out, raw(path, [CPU])(x))


@needs_gpu
def test_a_session_holds_no_more_gpu_memory_than_its_limit(mid_dir):
    # mlp-mid's weights are 25 MB: they do not fit in 1 MiB (the load or the first
    # run fails with onnxruntime's reason), and do in 256 MiB.
    # (Added after the last device run: not yet run on a GPU.)
    path = str(mid_dir / "mlp-mid-1.onnx")
    with pytest.raises((ModelLoadFailed, InferenceFailed)):
        open_session(path, RunnerConfig(providers=(CUDA,), cuda_mem_limit_bytes=1 << 20)).run({"x": rows(1)})
    session = open_session(path, RunnerConfig(providers=(CUDA,), cuda_mem_limit_bytes=256 << 20))
    np.testing.assert_array_equal(session.run({"x": rows(8)})["y"], raw(path, [CUDA])(rows(8)))


@needs_gpu
async def test_worker_on_cuda_batches_and_answers_as_onnxruntime(mid_dir):
    worker = InferenceWorker(InferenceConfig(model_dir=str(mid_dir), ops_port=0, serve=("mlp-mid",),
                                             providers=(CUDA,)))
    await worker.start()
    try:
        (described,) = (await worker.call("models"))["models"]
        assert described["providers"][0] == CUDA
        from workers.ops_http import render_metrics
        assert ('mesh_worker_model_provider{model="mlp-mid@1",provider="CUDAExecutionProvider"} 1.0'
                in render_metrics(worker.registry).decode())
        gpu = raw(mid_dir / "mlp-mid-1.onnx", [CUDA])
        alone = rows(1, seed=99)
        reply = await worker.call("infer", {"model": "mlp-mid", "inputs": {"x": alone}})
        np.testing.assert_array_equal(reply["outputs"]["y"], gpu(alone))

        inputs = [rows(1, seed=i) for i in range(32)]
        replies = await asyncio.wait_for(asyncio.gather(
            *[worker.call("infer", {"model": "mlp-mid", "inputs": {"x": x}}) for x in inputs]), 30)
        assert max(r["batch_size"] for r in replies) > 1
        for reply, x in zip(replies, inputs):
            np.testing.assert_allclose(reply["outputs"]["y"], gpu(x), rtol=1e-4, atol=1e-5)
    finally:
        await worker.stop()


@needs_gpu
async def test_worker_process_on_the_mesh_serves_from_cuda(tmp_path):
    from tests.integration.test_workers_mesh import DEADLINE, Mesh, client, peer_on
    models = tmp_path / "models"
    write_models(models, ("mlp-tiny", "mlp-mid"))
    mesh = Mesh(tmp_path, models)
    try:
        await mesh.start_bootstrap()
        worker = await mesh.node("gpu worker", "mlp-mid", "--providers", CUDA)
        await mesh.announced(worker, "mlp-mid")
        x = rows(4, seed=5)
        async with client(mesh) as rt:
            peer = await peer_on(rt, mesh, "mlp-mid", worker.public_key)
            (described,) = (await peer.request("models", None, timeout=DEADLINE))["models"]
            assert described["providers"][0] == CUDA
            reply = await peer.request("infer", {"model": "mlp-mid", "inputs": {"x": x}}, timeout=DEADLINE)
        np.testing.assert_array_equal(reply["outputs"]["y"], raw(models / "mlp-mid-1.onnx", [CUDA])(x))
        await worker.log(r'"providers":\["CUDAExecutionProvider"')
    finally:
        await mesh.close()


@needs_gpu_missing
def test_without_a_usable_gpu_named_cuda_fails_and_auto_serves_on_cpu(mid_dir, capfd, caplog):
    path = str(mid_dir / "mlp-mid-1.onnx")
    with pytest.raises(ModelLoadFailed, match="could not start CUDAExecutionProvider for .*mlp-mid-1.onnx: "):
        open_session(path, RunnerConfig(providers=(CUDA, CPU)))
    session = open_session(path, RunnerConfig(providers=AUTO))
    assert session.providers == (CPU,)
    assert "serving on CPUExecutionProvider" in caplog.text
    x = rows(2)
    np.testing.assert_array_equal(session.run({"x": x})["y"], raw(path, [CPU])(x))
    assert capfd.readouterr().out == ""
