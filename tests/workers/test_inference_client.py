"""InferenceClient (workers/inference_client.py): a real InferenceWorker behind the real
RPC layer; concurrent calls joined into one request, each caller getting what onnxruntime
gives for its own rows, bad calls failing alone, errors as a direct call raises them."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import numpy as np
import onnxruntime as ort  # the independent reference for "what onnxruntime returns"
import pytest

from mesh import crypto
from mesh.dht.testnet import testnet as dht_testnet
from mesh.rpc import ChannelClosedError, RpcPeer, RpcRemoteError, RpcServer, RpcTimeoutError
from mesh.rpc.pipe import pipe
from workers.base import Mesh
from workers.inference import InferenceConfig, InferenceWorker
from workers.inference.runner import CPU
from workers.inference_client import InferenceClient


def reference(path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def rows(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, 64)).astype(np.float32) for _ in range(n)]


async def start_worker(model_dir, **kw) -> tuple[InferenceWorker, RpcServer]:
    server = RpcServer()
    worker = InferenceWorker(InferenceConfig(model_dir=str(model_dir), ops_port=0, namespace="ns",
                                             providers=(CPU,), serve=("mlp-tiny",), **kw))
    await worker.start(Mesh(rpc=server))
    return worker, server


@asynccontextmanager
async def serving(model_dir, **kw):
    """(client, worker) over the RPC layer's in-memory connection pair."""
    worker, server = await start_worker(model_dir, **kw)
    client_conn, server_conn = pipe()
    server.attach(server_conn)
    client = InferenceClient(RpcPeer(client_conn), timeout=10)
    try:
        yield client, worker
    finally:
        await client.close()
        client_conn.destroy()
        await worker.stop()


@pytest.fixture
async def served(model_dir):
    async with serving(model_dir) as pair:
        yield pair


async def test_concurrent_calls_travel_joined_and_each_gets_its_own_rows(served, model_dir):
    client, worker = served
    await client.refresh()
    xs = rows(12)
    outs = await asyncio.wait_for(asyncio.gather(*(client.infer("mlp-tiny", {"x": x}) for x in xs)), 10)
    for x, out in zip(xs, outs):
        np.testing.assert_allclose(out["y"], reference(model_dir / "mlp-tiny-1.onnx", x), rtol=1e-5, atol=1e-6)
        assert out["y"].shape == (1, 10)
    # the first call went alone at once; the other 11 (half of the worker's batch of 32 at most) as one
    assert client.joined_requests == 1 and client.joined_calls == 11
    stats = (await client.request("stats"))["models"]["mlp-tiny@1"]
    assert stats["requests"]["OK"] == 2 and stats["rows"] == 12


async def test_joined_requests_stay_within_half_the_workers_batch(model_dir):
    async with serving(model_dir, max_batch_size=8) as (client, _):
        await client.refresh()
        await asyncio.wait_for(asyncio.gather(*(client.infer("mlp-tiny", {"x": x}) for x in rows(9))), 10)
        # one alone, then 8 more in joined requests of at most 4 rows
        assert client.joined_requests == 2 and client.joined_calls == 8


async def test_calls_go_one_by_one_until_the_worker_said_it_batches(model_dir):
    async with serving(model_dir, batching=False) as (client, _):
        xs = rows(6)
        outs = await asyncio.wait_for(asyncio.gather(*(client.infer("mlp-tiny", {"x": x}) for x in xs)), 10)
        await client.refresh()
        outs += await asyncio.wait_for(asyncio.gather(*(client.infer("mlp-tiny", {"x": x}) for x in xs)), 10)
        assert client.joined_requests == 0   # a worker that does not batch the model never gets joined rows
        for x, out in zip(xs + xs, outs):
            np.testing.assert_allclose(out["y"], reference(model_dir / "mlp-tiny-1.onnx", x), rtol=1e-5, atol=1e-6)


async def test_bad_calls_fail_alone_with_the_workers_error_and_good_ones_are_answered(served, model_dir):
    client, _ = served
    await client.refresh()
    good = rows(6)
    bad = [np.zeros((1, 63), np.float32) for _ in range(4)]   # joinable with each other, not with good
    results = await asyncio.wait_for(asyncio.gather(
        *(client.infer("mlp-tiny", {"x": x}) for x in good + bad), return_exceptions=True), 10)
    for x, out in zip(good, results[:6]):
        np.testing.assert_allclose(out["y"], reference(model_dir / "mlp-tiny-1.onnx", x), rtol=1e-5, atol=1e-6)
    for error in results[6:]:
        assert isinstance(error, RpcRemoteError) and error.code == "INVALID_INPUT"
        assert "expected dim 1 to be 64" in error.message
    assert client._coalescer.resent == 4   # the joined bad request failed, then each call alone
    np.testing.assert_allclose((await client.infer("mlp-tiny", {"x": good[0]}))["y"],
                               reference(model_dir / "mlp-tiny-1.onnx", good[0]), rtol=1e-5, atol=1e-6)


async def test_an_unknown_model_reaches_every_joined_caller_once(served):
    client, worker = served
    await client.refresh()
    client._limits[("nope", None)] = 8   # as if the worker had reported it: the calls do join
    results = await asyncio.wait_for(asyncio.gather(
        *(client.infer("nope", {"x": x}) for x in rows(5)), return_exceptions=True), 10)
    assert all(isinstance(e, RpcRemoteError) and e.code == "MODEL_NOT_FOUND" for e in results)
    assert client._coalescer.resent == 0   # shared: not sent again call by call


class SlowPeer:
    """A peer whose infer never answers in time; capacity says mlp-tiny batches."""

    def __init__(self):
        self.requests: list[tuple[str, float]] = []

    async def request(self, method, value, *, timeout):
        self.requests.append((method, timeout))
        if method == "capacity":
            return {"models": [{"model": "m", "version": "1", "batching": True, "max_batch_size": 32}]}
        await asyncio.sleep(timeout + 1)
        raise RpcTimeoutError("no reply")


async def test_a_joined_caller_times_out_at_its_own_deadline():
    peer = SlowPeer()
    client = InferenceClient(peer, timeout=10)
    await client.refresh()
    x = rows(1)[0]
    first = asyncio.create_task(client.request("infer", {"model": "m", "inputs": {"x": x}}, timeout=5))
    await asyncio.sleep(0)
    with pytest.raises(RpcTimeoutError, match="within 0.05s"):
        await client.request("infer", {"model": "m", "inputs": {"x": x}}, timeout=0.05)
    first.cancel()
    await client.close()


async def test_a_worker_without_capacity_is_called_one_by_one(model_dir):
    server = RpcServer()
    server.respond("infer", lambda value: {"outputs": {"y": value["inputs"]["x"] * 2}})
    client_conn, server_conn = pipe()
    server.attach(server_conn)
    client = InferenceClient(RpcPeer(client_conn), timeout=10)
    try:
        xs = rows(4)
        outs = await asyncio.wait_for(asyncio.gather(*(client.infer("m", {"x": x}) for x in xs)), 10)
        await asyncio.wait_for(until(lambda: client._refreshing is None), 5)
        outs += await asyncio.wait_for(asyncio.gather(*(client.infer("m", {"x": x}) for x in xs)), 10)
        assert client.joined_requests == 0 and client._limits == {}
        for x, out in zip(xs + xs, outs):
            np.testing.assert_array_equal(out["y"], x * 2)
    finally:
        await client.close()
        client_conn.destroy()


async def until(predicate):
    while not predicate():
        await asyncio.sleep(0)


async def test_over_udx_on_loopback(model_dir):
    """The same over a real Noise/UDX connection on 127.0.0.1."""
    worker, server = await start_worker(model_dir)
    async with dht_testnet(3) as net:
        a, b = await net.create_node(), await net.create_node()
        kp = crypto.keypair()
        listener = b.create_server()
        listener.on_connection(server.attach)
        await listener.listen(kp)
        conn = await a.connect(kp.public_key, crypto.keypair())
        client = InferenceClient(RpcPeer(conn), timeout=10)
        try:
            await client.refresh()
            xs = rows(20, seed=4)
            outs = await asyncio.wait_for(asyncio.gather(*(client.infer("mlp-tiny", {"x": x}) for x in xs)), 10)
            for x, out in zip(xs, outs):
                np.testing.assert_allclose(out["y"], reference(model_dir / "mlp-tiny-1.onnx", x),
                                           rtol=1e-5, atol=1e-6)
            assert client.joined_calls == 19
        finally:
            await client.close()
            conn.destroy()
            await listener.close()
    await worker.stop()


async def test_callers_of_a_joined_request_hear_of_a_lost_connection():
    """The connection drops while a joined request waits for its reply: every caller
    gets the RPC layer's closed-channel error at once, none is left waiting."""
    server, entered, never = RpcServer(), asyncio.Event(), asyncio.Event()

    async def capacity(_):
        return {"models": [{"model": "m", "version": "1", "batching": True, "max_batch_size": 32}]}

    async def infer(_):
        entered.set()
        await never.wait()

    server.respond("capacity", capacity).respond("infer", infer)
    client_conn, server_conn = pipe()
    server.attach(server_conn)
    client = InferenceClient(RpcPeer(client_conn), timeout=30)
    await client.refresh()
    calls = asyncio.gather(*(client.infer("m", {"x": x}) for x in rows(6)), return_exceptions=True)
    await asyncio.wait_for(entered.wait(), 5)
    client_conn.destroy()
    results = await asyncio.wait_for(calls, 5)
    assert all(isinstance(r, ChannelClosedError) for r in results), results
    assert client._coalescer.resent == 0
    await client.close()


def test_settings_are_checked():
    for kw in ({"timeout": 0}, {"capacity_ttl_s": -1}, {"max_rows": -2}):
        with pytest.raises(ValueError):
            InferenceClient(SlowPeer(), **kw)
    InferenceClient(SlowPeer(), max_rows=0)   # 0: no joining
