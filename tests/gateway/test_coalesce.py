"""Joined requests (workers/coalesce.py, as the gateway uses it): concurrent infer calls to one worker joined into one request,
each caller getting what it would have got alone; over fake handles, then through the Dispatcher
and the HTTP gateway over real workers."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from gateway.config import GatewayConfig
from gateway.directory import LocalWorker, LocalWorkerDirectory
from gateway.dispatch import Dispatcher, _shared_error
from gateway.errors import InvalidTensor, WorkerBusy
from workers.coalesce import Coalescer, batch_limits, layout_of

from .conftest import auth
from .test_routes import expected


def rowwise(x: np.ndarray) -> np.ndarray:
    """What the fake model computes: a function of each row alone."""
    return x * 2 + x.sum(axis=1, keepdims=True)


class RowWorker(LocalWorker):
    """A handle whose infer is row-wise; it records the rows of every request it gets."""

    def __init__(self, worker_id: str = "w0", capacity: dict | None = None):
        super().__init__(worker_id, {"infer": self._infer, "capacity": self._capacity})
        self.requests: list[int] = []
        self.fail_joined: Exception | None = None   # raised for requests of more than one caller
        self.aggregate = False                      # outputs that do not split by rows
        self.gate: asyncio.Event | None = None
        self.cap = capacity or {"running": 0, "queued": 0, "max_concurrent": 4, "models": [
            {"model": "m", "version": "1", "batching": True, "max_batch_size": 32}]}

    async def _infer(self, value):
        x = value["inputs"]["x"]
        self.requests.append(x.shape[0])
        await asyncio.sleep(0)   # a reply comes back later, as over the network
        if self.gate is not None:
            await self.gate.wait()
        if np.isnan(x).any():
            raise InvalidTensor("x has a NaN")
        if self.fail_joined is not None and len(self.requests) > 1 and x.shape[0] > 1:
            raise self.fail_joined
        y = x.sum(keepdims=True) if self.aggregate else rowwise(x)
        return {"outputs": {"y": y}, "model": value["model"], "version": "1", "batch_size": x.shape[0]}

    async def _capacity(self, value):
        return self.cap


async def until(predicate):
    while not predicate():
        await asyncio.sleep(0)


def infer_value(x: np.ndarray, model: str = "m") -> dict:
    return {"model": model, "version": None, "inputs": {"x": x}}


def inputs(n: int, rows: int = 1, cols: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.standard_normal((rows, cols)).astype(np.float32) for _ in range(n)]


def coalescer(limit: int = 32, max_rows: int = 64) -> Coalescer:
    return Coalescer(max_rows, lambda worker_id, model, version: limit, _shared_error)


async def test_concurrent_calls_join_and_each_gets_its_own_rows():
    c, w = coalescer(), RowWorker()
    xs = inputs(6) + inputs(2, rows=3)
    replies = await asyncio.gather(*(c.call(w, infer_value(x), 5.0) for x in xs))
    for x, r in zip(xs, replies):
        np.testing.assert_array_equal(r["outputs"]["y"], rowwise(x))
        assert r["model"] == "m"
    # the first call found nothing in flight and went at once; the other seven went as one
    assert w.requests == [1, 5 + 2 * 3]
    assert (c.joined_calls, c.joined_requests, c.resent) == (1, 7, 0)


async def test_a_lone_call_is_sent_at_once():
    c, w = coalescer(), RowWorker()
    for x in inputs(3):
        r = await c.call(w, infer_value(x), 5.0)
        np.testing.assert_array_equal(r["outputs"]["y"], rowwise(x))
    assert w.requests == [1, 1, 1] and c.joined_calls == 0


async def test_open_worker_names_the_worker_of_a_request_still_open_with_room():
    c, w0, w1 = coalescer(limit=4), RowWorker("w0"), RowWorker("w1")
    x = inputs(1)[0]
    plan = c.plan(infer_value(x))
    assert c.open_worker(plan, [w0, w1]) is None          # nothing open yet
    calls = [asyncio.ensure_future(c.call(w0, infer_value(x), 5.0, plan)) for _ in range(3)]
    await asyncio.sleep(0)   # the calls start: one went alone, two wait in the open request
    assert c.open_worker(plan, [w0, w1]) is w0
    assert c.open_worker(plan, [w1]) is None               # a retry's pool without that worker
    assert c.open_worker(c.plan(infer_value(inputs(1, cols=5)[0])), [w0, w1]) is None   # other shape
    assert c.open_worker(c.plan(infer_value(inputs(1, rows=3)[0])), [w0, w1]) is None   # 2 + 3 > 4 rows
    assert c.open_worker(None, [w0, w1]) is None           # a call that cannot join
    await asyncio.gather(*calls)
    assert c.open_worker(plan, [w0, w1]) is None           # sent: nothing open any more
    assert w0.requests == [1, 2] and w1.requests == []


async def test_joined_requests_stay_within_the_workers_batch_limit():
    c, w = coalescer(limit=4), RowWorker()
    xs = inputs(13)
    replies = await asyncio.gather(*(c.call(w, infer_value(x), 5.0) for x in xs))
    for x, r in zip(xs, replies):
        np.testing.assert_array_equal(r["outputs"]["y"], rowwise(x))
    assert w.requests == [1, 4, 4, 4] and c.joined_requests == 12


async def test_models_the_worker_does_not_batch_are_not_joined():
    c, w = coalescer(limit=0), RowWorker()
    await asyncio.gather(*(c.call(w, infer_value(x), 5.0) for x in inputs(5)))
    assert w.requests == [1] * 5


@pytest.mark.parametrize("max_rows", [0, 1])
async def test_joining_can_be_turned_off(max_rows):
    c, w = coalescer(max_rows=max_rows), RowWorker()
    await asyncio.gather(*(c.call(w, infer_value(x), 5.0) for x in inputs(5)))
    assert w.requests == [1] * 5


async def test_calls_that_differ_in_model_dtype_or_shape_do_not_join():
    c, w = coalescer(), RowWorker()
    values = [infer_value(np.zeros((1, 4), np.float32)),   # goes alone: nothing in flight
              infer_value(np.zeros((1, 4), np.float32)), infer_value(np.zeros((1, 4), np.float32), model="n"),
              infer_value(np.zeros((1, 4), np.float64)), infer_value(np.zeros((1, 5), np.float32))]
    await asyncio.gather(*(c.call(w, v, 5.0) for v in values))
    assert sorted(w.requests) == [1] * 5


@pytest.mark.parametrize("value", [
    {"model": "m", "inputs": {"x": np.zeros((2, 4), np.float32), "z": np.zeros((3, 4), np.float32)}},
    {"model": "m", "inputs": {"x": np.float32(1.0)}},
    {"model": "m", "inputs": {"x": np.zeros((0, 4), np.float32)}},
    {"model": "m", "inputs": {"x": [[1.0, 2.0]]}},
    {"model": "m", "inputs": {"x": np.zeros((1, 4), np.float32)}, "outputs": ["y"]},
    {"model": 3, "inputs": {"x": np.zeros((1, 4), np.float32)}},
    {"model": "m", "inputs": {}},
    "not a map",
])
def test_values_that_cannot_join(value):
    assert layout_of(value) is None


async def test_one_bad_request_fails_alone_and_the_others_are_answered():
    c, w = coalescer(), RowWorker()
    xs = inputs(6)
    xs[3] = np.full((1, 4), np.nan, np.float32)
    results = await asyncio.gather(*(c.call(w, infer_value(x), 5.0) for x in xs), return_exceptions=True)
    assert isinstance(results[3], InvalidTensor) and "NaN" in results[3].message
    for i, (x, r) in enumerate(zip(xs, results)):
        if i != 3:
            np.testing.assert_array_equal(r["outputs"]["y"], rowwise(x))
    assert c.resent == 5 and c.joined_calls == 0


async def test_busy_reaches_every_joined_caller():
    c, w = coalescer(), RowWorker()
    w.fail_joined = WorkerBusy("full")
    results = await asyncio.gather(*(c.call(w, infer_value(x), 5.0) for x in inputs(5)), return_exceptions=True)
    assert not isinstance(results[0], Exception)   # the lone first call
    assert all(isinstance(r, WorkerBusy) for r in results[1:])
    assert w.requests == [1, 4] and c.resent == 0   # BUSY is not "someone's bad input": no resend


async def test_outputs_that_do_not_split_by_rows_are_fetched_alone():
    c, w = coalescer(), RowWorker()
    w.aggregate = True
    xs = inputs(4)
    replies = await asyncio.gather(*(c.call(w, infer_value(x), 5.0) for x in xs))
    for x, r in zip(xs, replies):
        np.testing.assert_array_equal(r["outputs"]["y"], x.sum(keepdims=True))
    assert w.requests == [1, 3, 1, 1, 1] and c.resent == 3


async def test_a_caller_that_gives_up_leaves_the_others_answered():
    c, w = coalescer(), RowWorker()
    w.gate = asyncio.Event()
    xs = inputs(5)
    tasks = [asyncio.create_task(c.call(w, infer_value(x), 5.0)) for x in xs]
    await asyncio.wait_for(until(lambda: len(w.requests) == 2), 2)   # the lone call and the joined one
    tasks[2].cancel()
    w.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError)
    for i in (0, 1, 3, 4):
        np.testing.assert_array_equal(results[i]["outputs"]["y"], rowwise(xs[i]))
    assert not c._tasks and not c._inflight   # nothing left behind


async def test_close_cancels_joined_requests_in_flight():
    c, w = coalescer(), RowWorker()
    w.gate = asyncio.Event()
    tasks = [asyncio.create_task(c.call(w, infer_value(x), 5.0)) for x in inputs(4)]
    await asyncio.wait_for(until(lambda: len(w.requests) == 2), 2)
    await c.close()
    w.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert not isinstance(results[0], BaseException)    # the lone call was not part of a joined request
    assert all(isinstance(r, asyncio.CancelledError) for r in results[1:])
    assert not c._tasks


async def test_a_bug_in_the_send_reaches_the_callers_instead_of_leaving_them_waiting(monkeypatch, caplog):
    c, w = coalescer(), RowWorker()

    def broken(*args, **kwargs):
        raise RuntimeError("bug")
    monkeypatch.setattr("workers.coalesce._split", broken)
    results = await asyncio.gather(*(c.call(w, infer_value(x), 5.0) for x in inputs(4)), return_exceptions=True)
    assert not isinstance(results[0], BaseException)
    assert all(isinstance(r, RuntimeError) for r in results[1:])
    assert "joined infer request to worker w0 failed" in caplog.text


async def test_callers_gone_before_the_send_are_dropped_from_it():
    c, w = coalescer(), RowWorker()
    xs = inputs(4)
    tasks = [asyncio.create_task(c.call(w, infer_value(x), 5.0)) for x in xs]
    await asyncio.sleep(0)          # every call is in: the first sent, three waiting to be joined
    tasks[1].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[1], asyncio.CancelledError)
    assert w.requests == [1, 2]


def test_batch_rows_from_capacity_reports():
    models = [{"model": "a", "version": "1", "batching": True, "max_batch_size": 32},
              {"model": "a", "version": "2", "batching": True, "max_batch_size": 8},
              {"model": "b", "version": "1", "batching": True, "max_batch_size": 16},
              {"model": "b", "version": "2", "batching": False, "max_batch_size": 16},
              {"model": "c", "version": "1", "batching": True, "max_batch_size": 1},
              {"model": "d", "version": "1", "batching": "yes", "max_batch_size": 4},
              "junk", {"model": 5}]
    assert batch_limits({"models": models}) == {("a", "1"): 32, ("a", "2"): 8, ("a", None): 8, ("b", "1"): 16}
    assert batch_limits({"models": None}) == {} and batch_limits({"models": "x"}) == {} and batch_limits(None) == {}
    # the worker takes at most 10 rows per request: no joined request may be larger
    assert batch_limits({"models": models[:2], "max_request_rows": 10}) == {
        ("a", "1"): 10, ("a", "2"): 8, ("a", None): 8}


async def test_dispatcher_joins_only_after_the_worker_reported_batching():
    directory = LocalWorkerDirectory()
    w = RowWorker()
    directory.add("m", w)
    d = Dispatcher(directory, GatewayConfig(seed=1))
    deadline = asyncio.get_running_loop().time() + 5

    async def burst():
        xs = inputs(5)
        replies = await asyncio.gather(*(d.call("m", "infer", infer_value(x), deadline) for x in xs))
        for x, (r, worker_id) in zip(xs, replies):
            np.testing.assert_array_equal(r["outputs"]["y"], rowwise(x))
            assert worker_id == "w0"

    await burst()
    assert w.requests == [1] * 5          # no capacity report yet: nothing joined
    await d.ping_all()
    w.requests.clear()
    await burst()
    assert w.requests == [1, 4]
    assert d.balancer.stats("w0").inflight == 0


@pytest.mark.parametrize("strategy", ["least-connections", "round-robin", "random", "power-of-two", "weighted"])
async def test_calls_that_arrive_together_go_to_one_worker_and_bursts_spread(strategy):
    """Spreading a burst over two workers would split its joined request in two, each half
    paying the per-message work: a call that fits a request still open goes with it."""
    directory = LocalWorkerDirectory()
    workers = [RowWorker("w0"), RowWorker("w1")]
    for w in workers:
        directory.add("m", w)
        w.gate = asyncio.Event()   # the first burst is still in flight when the second comes
    d = Dispatcher(directory, GatewayConfig(seed=1))
    await d.ping_all()
    deadline = asyncio.get_running_loop().time() + 5

    def burst(n):
        xs = inputs(n)
        return xs, asyncio.gather(*(d.call("m", "infer", infer_value(x), deadline, strategy) for x in xs))

    first_xs, first = burst(9)
    await until(lambda: sum(sum(w.requests) for w in workers) == 9)
    # the first call goes alone at once; the others follow it to its worker, as one request
    assert sorted(w.requests for w in workers) == [[], [1, 8]]
    if strategy in ("least-connections", "power-of-two"):
        # the next burst goes where fewer calls are in flight: the other worker
        idle = next(w for w in workers if not w.requests)
        second_xs, second = burst(9)
        await until(lambda: sum(sum(w.requests) for w in workers) == 18)
        assert idle.requests == [1, 8]
    else:
        second_xs, second = burst(0)
    for w in workers:
        w.gate.set()
    for xs, replies in ((first_xs, await first), (second_xs, await second)):
        for x, (r, _) in zip(xs, replies):
            np.testing.assert_array_equal(r["outputs"]["y"], rowwise(x))
    assert all(d.balancer.stats(w.id).inflight == 0 for w in workers)


async def test_gateway_answers_concurrent_requests_as_alone(client, gw, keys, model_bytes):
    """Real workers behind the HTTP gateway: concurrent requests come back with their own rows."""
    await gw.dispatcher.ping_all()        # the workers' capacity: "linear" is batched
    assert all(gw.dispatcher.balancer.stats(w.id).batch_rows for w in gw.directory.workers("linear"))
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((1 + i % 3, 4)).astype(np.float32) for i in range(24)]

    async def one(x):
        body = {"inputs": {"x": {"shape": list(x.shape), "dtype": "float32", "data": x.ravel().tolist()}}}
        r = await client.post("/api/v1/inference/linear", json=body, headers=auth(keys["infer"]))
        assert r.status == 200, await r.text()
        y = (await r.json())["outputs"]["y"]
        return np.asarray(y["data"], np.float32).reshape(y["shape"])

    ys = await asyncio.gather(*(one(x) for x in xs))
    for x, y in zip(xs, ys):
        np.testing.assert_allclose(y, expected(model_bytes, x.tolist()), rtol=1e-6)
    metrics = (await (await client.get("/metrics", headers=auth(keys["admin"]))).text())
    assert "gateway_joined_requests_total" in metrics


def test_coalesce_max_rows_option():
    from gateway.config import from_args
    assert from_args(["--coalesce-max-rows", "16"], env={}).coalesce_max_rows == 16
    assert from_args([], env={"MESH_COALESCE_MAX_ROWS": "0"}).coalesce_max_rows == 0
    with pytest.raises(SystemExit):
        from_args(["--coalesce-max-rows", "-1"], env={})

