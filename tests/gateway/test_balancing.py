"""Balancing strategies, failover, BUSY, quarantine with backoff: the Dispatcher and Balancer alone,
over counting handles (the capacity replies have the inference worker's shape); the strategies
over real workers are in tests/integration/test_gateway_e2e.py."""

from __future__ import annotations

import asyncio
import collections

import pytest

from gateway.balancer import Balancer
from gateway.config import GatewayConfig
from gateway.directory import LocalWorker, LocalWorkerDirectory
from gateway.dispatch import Dispatcher
from gateway.errors import DeadlineExceeded, NoWorkers, WorkerBusy, WorkerUnavailable
from gateway.health import HealthTracker


class CountingWorker(LocalWorker):
    """A handle that counts the calls it gets; `hold` keeps calls open to build load."""

    def __init__(self, worker_id: str, capacity: dict | None = None):
        super().__init__(worker_id, {"infer": self._infer, "capacity": self._capacity})
        self.count = 0
        self.hold: asyncio.Event | None = None
        self.busy = False
        self.cap = capacity or {"running": 0, "queued": 0, "max_concurrent": 4}

    async def _infer(self, value):
        if self.busy:
            err = RuntimeError("full")
            err.code = "BUSY"
            raise err
        self.count += 1
        if self.hold is not None:
            await self.hold.wait()
        return {"outputs": {}, "by": self.id}

    async def _capacity(self, value):
        return self.cap


def setup(strategy: str, n: int = 3, **config) -> tuple[Dispatcher, list[CountingWorker]]:
    directory = LocalWorkerDirectory()
    ws = [CountingWorker(f"w{i}") for i in range(n)]
    for w in ws:
        directory.add("m", w)
    return Dispatcher(directory, GatewayConfig(strategy=strategy, seed=1, **config)), ws


def deadline(seconds: float = 5.0) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_round_robin_is_exact():
    d, ws = setup("round-robin")
    for _ in range(30):
        await d.call("m", "infer", {}, deadline())
    assert [w.count for w in ws] == [10, 10, 10]


async def test_random_spreads_roughly_evenly():
    d, ws = setup("random")
    for _ in range(300):
        await d.call("m", "infer", {}, deadline())
    assert all(70 <= w.count <= 130 for w in ws), [w.count for w in ws]


async def test_least_connections_avoids_busy_worker():
    d, ws = setup("least-connections")
    ws[0].hold = asyncio.Event()
    held = [asyncio.create_task(d.call("m", "infer", {}, deadline())) for _ in range(1)]
    await asyncio.wait_for(_until(lambda: ws[0].count == 1), 2)
    # w0 has one in flight: the next 20 sequential calls avoid it
    for _ in range(20):
        await d.call("m", "infer", {}, deadline())
    assert ws[0].count == 1 and ws[1].count + ws[2].count == 20
    ws[0].hold.set()
    await asyncio.gather(*held)


async def test_least_connections_sends_a_sequential_client_to_the_warm_worker():
    """Among equally idle workers, the one that finished a request last (still polling, caches
    hot) gets the next; as soon as requests overlap, in-flight counts spread them."""
    d, ws = setup("least-connections")
    for _ in range(12):
        await d.call("m", "infer", {}, deadline())
    counts = sorted(w.count for w in ws)
    assert counts == [0, 0, 12], counts
    warm = next(w for w in ws if w.count == 12)
    gate = asyncio.Event()
    for w in ws:
        w.hold = gate
    tasks = [asyncio.create_task(d.call("m", "infer", {}, deadline())) for _ in range(6)]
    await asyncio.wait_for(_until(lambda: sum(w.count for w in ws) == 18), 2)
    assert sorted(w.count - (12 if w is warm else 0) for w in ws) == [2, 2, 2]
    gate.set()
    await asyncio.gather(*tasks)


async def test_least_connections_spreads_concurrent_load():
    d, ws = setup("least-connections")
    gate = asyncio.Event()
    for w in ws:
        w.hold = gate
    tasks = [asyncio.create_task(d.call("m", "infer", {}, deadline())) for _ in range(9)]
    await asyncio.wait_for(_until(lambda: sum(w.count for w in ws) == 9), 2)
    assert [w.count for w in ws] == [3, 3, 3]
    assert [d.balancer.stats(w.id).inflight for w in ws] == [3, 3, 3]
    gate.set()
    await asyncio.gather(*tasks)


async def test_weighted_follows_reported_capacity():
    d, ws = setup("weighted")
    for w, cap in zip(ws, (1, 2, 3)):
        w.cap = {"running": 0, "queued": 0, "max_concurrent": cap}
    await d.ping_all()
    for _ in range(60):
        await d.call("m", "infer", {}, deadline())
    assert [w.count for w in ws] == [10, 20, 30]


async def test_weighted_uses_live_load():
    d, ws = setup("weighted")
    for w, load in zip(ws, (0, 7, 7)):
        w.cap = {"running": load, "queued": 0, "max_concurrent": 8}   # free: 8, 1, 1
    await d.ping_all()
    for _ in range(50):
        await d.call("m", "infer", {}, deadline())
    assert [w.count for w in ws] == [40, 5, 5]


async def test_power_of_two_prefers_less_loaded():
    d, ws = setup("power-of-two")
    ws[0].cap = {"running": 50, "queued": 10, "max_concurrent": 64}
    await d.ping_all()
    for _ in range(200):
        await d.call("m", "infer", {}, deadline())
    # w0 is only chosen when both samples... never: any pair with w0 includes a lighter worker
    assert ws[0].count == 0 and ws[1].count > 60 and ws[2].count > 60


async def test_failover_retries_once_on_another_worker():
    d, ws = setup("round-robin")
    ws[0].disconnect()
    results = collections.Counter()
    for _ in range(6):
        reply, wid = await d.call("m", "infer", {}, deadline())
        results[wid] += 1
    assert "w0" not in results and sum(results.values()) == 6
    assert d.retries >= 1


async def test_busy_moves_request_without_counting_failure():
    d, ws = setup("round-robin")
    ws[0].busy = True
    for _ in range(6):
        _, wid = await d.call("m", "infer", {}, deadline())
        assert wid != "w0"
    assert d.health.get("w0").failures == 0


async def test_only_one_retry():
    d, ws = setup("round-robin")
    for w in ws:
        w.disconnect()
    with pytest.raises(WorkerUnavailable):
        await d.call("m", "infer", {}, deadline())
    assert d.retries == 1
    for w in ws:
        w.busy, w.connected = True, True
    with pytest.raises(WorkerBusy):
        await d.call("m", "infer", {}, deadline())


async def test_timeout_is_not_retried():
    d, ws = setup("round-robin")
    gate = asyncio.Event()
    for w in ws:
        w.hold = gate
    with pytest.raises(DeadlineExceeded):
        await d.call("m", "infer", {}, deadline(0.05))
    assert sum(w.count for w in ws) == 1


async def test_quarantine_after_failures_and_backoff():
    d, ws = setup("round-robin", failure_threshold=2, quarantine_base_s=10.0)
    ws[0].disconnect()
    for _ in range(6):
        await d.call("m", "infer", {}, deadline())
    h = d.health.get("w0")
    assert h.state(d.now()) == "quarantined" and h.quarantines == 1
    before = ws[1].count + ws[2].count
    for _ in range(10):
        _, wid = await d.call("m", "infer", {}, deadline())
        assert wid != "w0"
    assert ws[1].count + ws[2].count == before + 10 and d.retries <= 2


def test_backoff_doubles_and_caps_and_resets():
    h = HealthTracker(threshold=2, base_s=1.0, max_s=5.0)
    assert not h.failure("a", 0.0)
    assert h.failure("a", 0.0)                 # 2nd failure: quarantine 1 s
    assert not h.available("a", 0.5) and h.available("a", 1.0)
    assert h.get("a").state(1.0) == "probation"
    assert h.failure("a", 1.0)                 # one failure on probation: 2 s
    assert h.get("a").until == 3.0
    h.failure("a", 3.0)
    assert h.get("a").until == 7.0             # 4 s
    h.failure("a", 7.0)
    assert h.get("a").until == 12.0            # capped at 5 s
    h.success("a")
    assert h.available("a", 12.0) and h.get("a").state(12.0) == "healthy"
    assert not h.failure("a", 13.0)            # threshold again after a success


async def test_active_pings_quarantine_and_recover():
    d, ws = setup("round-robin", failure_threshold=1, quarantine_base_s=0.0)
    ws[2].disconnect()
    await d.ping_all()
    assert d.health.get("w2").quarantines == 1
    ws[2].reconnect()
    await d.ping_all()
    assert d.health.get("w2").state(d.now()) == "healthy"


async def test_quarantine_by_pings_abandons_the_connection():
    d, ws = setup("round-robin", failure_threshold=2, quarantine_base_s=60.0)
    abandoned = []
    ws[1].abandon = abandoned.append          # MeshWorker.abandon drops the connection
    ws[1].disconnect()
    await d.ping_all()
    assert abandoned == []                    # one failure: suspect, still connected
    await d.ping_all()
    assert len(abandoned) == 1 and "quarantined" in abandoned[0]


async def test_all_quarantined_is_no_workers():
    d, ws = setup("round-robin", failure_threshold=1, quarantine_base_s=60.0)
    for w in ws:
        w.disconnect()
    await d.ping_all()
    with pytest.raises(NoWorkers):
        await d.call("m", "infer", {}, deadline())


async def test_workers_appearing_and_disappearing():
    d, ws = setup("round-robin")
    d.directory.remove("m", ws[0])
    late = CountingWorker("w9")
    d.directory.add("m", late)
    for _ in range(9):
        await d.call("m", "infer", {}, deadline())
    assert ws[0].count == 0 and late.count == 3


async def test_first_request_waits_for_a_worker_to_appear():
    directory = LocalWorkerDirectory()
    d = Dispatcher(directory, GatewayConfig(worker_wait_s=5.0))
    w = CountingWorker("late")
    task = asyncio.create_task(d.call("m", "infer", {}, deadline()))
    await asyncio.sleep(0)  # let the call start waiting (yield, not a timed wait)
    directory.add("m", w)
    _, wid = await asyncio.wait_for(task, 2)
    assert wid == "late"


def test_unknown_strategy():
    with pytest.raises(ValueError):
        Balancer().pick("m", "nope", [CountingWorker("a"), CountingWorker("b")])


async def _until(predicate):
    while not predicate():
        await asyncio.sleep(0)


async def test_worker_failure_counts_against_health_and_is_not_retried():
    d, ws = setup("round-robin", failure_threshold=1)

    async def broken(value):
        raise RuntimeError("onnxruntime fell over")
    ws[0].methods["infer"] = broken
    from gateway.errors import WorkerFailed
    with pytest.raises(WorkerFailed, match="fell over"):
        await d.call("m", "infer", {}, deadline())
    assert d.health.get("w0").state(d.now()) == "quarantined" and d.retries == 0


async def test_departed_workers_are_forgotten():
    d, ws = setup("round-robin")
    for _ in range(3):
        await d.call("m", "infer", {}, deadline())
    d.directory.remove("m", ws[0])
    await d.ping_all()
    assert d.balancer.ids() == {"w1", "w2"}


async def test_ping_to_worker_without_capacity_method_counts_as_alive():
    d, ws = setup("round-robin", failure_threshold=1)
    del ws[0].methods["capacity"]
    for _ in range(3):
        await d.ping_all()
    assert d.health.get("w0").state(d.now()) == "healthy"


async def test_single_busy_worker_is_503_without_a_retry():
    d, ws = setup("round-robin", n=1)
    ws[0].busy = True
    with pytest.raises(WorkerBusy):
        await d.call("m", "infer", {}, deadline())
    assert d.retries == 0
