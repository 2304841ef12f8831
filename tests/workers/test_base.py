"""Worker base: method table, errors, topics, drain, signals, ops HTTP, logs."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket

import aiohttp
import pytest

from mesh.topics import topic_key
from workers.base import Worker, rpc_method
from workers.config import WorkerConfig
from workers.errors import Busy, InvalidInput, Unavailable, WorkerError
from workers.logging import configure_logging, get_logger

from .meshdoubles import Mesh


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Echo(Worker):
    role = "workers.echo"

    def __init__(self, config):
        super().__init__(config)
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.stopped_hook = False
        self.method("echo", self.echo)
        self.method("slow", self.slow)
        self.method("boom", self.boom)

    @rpc_method("ping", encoding="json")
    async def ping(self, value):
        return {"pong": value}

    async def echo(self, value):
        if value is None:
            raise InvalidInput("echo needs a value")
        return value

    async def slow(self, value):
        self.entered.set()
        await self.gate.wait()
        return value

    async def boom(self, value):
        raise KeyError("secret detail")

    async def on_start(self):
        await self.join("echo")

    async def on_stop(self):
        self.stopped_hook = True


async def test_method_table_and_rpc_registration():
    mesh = Mesh()
    w = Echo(WorkerConfig(name="e1"))
    await w.start(mesh)
    assert set(mesh.rpc.handlers) == {"echo", "slow", "boom", "ping"}
    assert mesh.rpc.handlers["ping"][1] == "json"
    assert await mesh.rpc.handlers["echo"][0]({"a": 1}) == {"a": 1}
    assert await w.call("ping", 3) == {"pong": 3}
    # connections from the swarm are attached to the RPC server
    mesh.swarm.callbacks[0]("conn-1", None)
    assert mesh.rpc.attached == ["conn-1"]
    await w.stop()


async def test_errors_carry_codes_and_internal_hides_details():
    w = Echo(WorkerConfig())
    await w.start()
    with pytest.raises(InvalidInput) as e:
        await w.call("echo", None)
    assert e.value.code == "INVALID_INPUT"
    with pytest.raises(WorkerError) as e:
        await w.call("boom", 1)
    assert e.value.code == "INTERNAL" and "secret" not in str(e.value)
    assert w._m_requests.get("boom", "INTERNAL") == 1
    assert w._m_requests.get("echo", "INVALID_INPUT") == 1
    await w.stop()


def test_busy_has_retry_hint():
    b = Busy("queue full", retry_after_ms=12.4)
    assert b.code == "BUSY" and b.retry_after_ms == 12 and "12 ms" in str(b)
    assert b.details["retry_after_ms"] == 12


async def test_not_serving_before_start_and_after_stop():
    w = Echo(WorkerConfig())
    with pytest.raises(Unavailable):
        await w.call("echo", 1)
    await w.start()
    await w.stop()
    with pytest.raises(Unavailable):
        await w.call("echo", 1)


async def test_topics_joined_at_start_and_left_at_stop():
    mesh = Mesh()
    w = Echo(WorkerConfig(namespace="ns"))
    await w.start(mesh)
    key = topic_key("ns", "echo")
    assert mesh.swarm.joined == {key}
    await w.join("extra")
    assert topic_key("ns", "extra") in mesh.swarm.joined
    await w.leave("extra")
    assert mesh.swarm.joined == {key}
    await w.stop()
    assert mesh.swarm.joined == set()
    assert w.stopped_hook


async def test_graceful_drain_finishes_in_flight_then_leaves_topics():
    mesh = Mesh()
    w = Echo(WorkerConfig(namespace="ns"))
    await w.start(mesh)
    running = asyncio.create_task(w.call("slow", "payload"))
    await asyncio.wait_for(w.entered.wait(), 5)
    stopping = asyncio.create_task(w.stop())
    await asyncio.sleep(0)  # let stop() switch to draining
    assert w.state == "draining"
    with pytest.raises(Unavailable):
        await w.call("echo", 1)
    assert ("leave", topic_key("ns", "echo")) not in mesh.swarm.events
    assert not stopping.done()
    w.gate.set()
    assert await asyncio.wait_for(running, 5) == "payload"
    await asyncio.wait_for(stopping, 5)
    assert mesh.swarm.events[-1] == ("leave", topic_key("ns", "echo"))
    assert w.state == "stopped"


async def test_drain_timeout_bounds_stop():
    w = Echo(WorkerConfig(drain_timeout_s=0.05))
    await w.start()
    running = asyncio.create_task(w.call("slow", 1))
    await asyncio.wait_for(w.entered.wait(), 5)
    await asyncio.wait_for(w.stop(), 5)
    assert w.state == "stopped"
    w.gate.set()
    assert await asyncio.wait_for(running, 5) == 1


async def test_sigterm_drains_and_stops():
    mesh = Mesh()
    w = Echo(WorkerConfig(namespace="ns"))
    runner = asyncio.create_task(w.run(mesh))
    await asyncio.wait_for(w.wait_serving(), 5)
    inflight = asyncio.create_task(w.call("slow", 7))
    await asyncio.wait_for(w.entered.wait(), 5)
    os.kill(os.getpid(), signal.SIGTERM)
    w.gate.set()
    await asyncio.wait_for(runner, 5)
    assert await inflight == 7
    assert w.state == "stopped" and mesh.swarm.joined == set()


async def test_run_sets_the_busy_polling_of_the_process_loop():
    loop = asyncio.get_running_loop()
    w = Echo(WorkerConfig(busy_poll_us=1500))
    runner = asyncio.create_task(w.run(Mesh()))
    try:
        await asyncio.wait_for(w.wait_serving(), 5)
        assert loop._busy_poll.window.max_s == pytest.approx(0.0015)
        counters = {m.name: m.values for m in w.registry if m.kind == "counter"}
        assert set(counters["mesh_worker_busy_polls"]) == {("hit",), ("miss",)}
        assert counters["mesh_worker_busy_poll_seconds"][()] >= 0.0
        w.request_stop()
        await asyncio.wait_for(runner, 5)
    finally:
        loop.set_busy_poll(0.0)


async def test_ops_http_health_and_metrics_over_socket():
    port = free_port()
    w = Echo(WorkerConfig(name="opsw", ops_port=port))
    await w.start()
    assert w.ops_port == port
    await w.call("echo", 1)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/health") as r:
            assert r.status == 200
            body = await r.json()
            assert body["status"] == "serving" and body["name"] == "opsw"
        async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain")
            text = await r.text()
    assert 'mesh_worker_requests_total{code="OK",method="echo"} 1.0' in text
    assert "\nmesh_worker_busy_poll_seconds_total " not in text  # not run(): no loop of its own to report
    assert 'mesh_worker_request_seconds_count{method="echo"} 1.0' in text
    assert "mesh_worker_in_flight 0.0" in text
    running = asyncio.create_task(w.call("slow", 1))
    await asyncio.wait_for(w.entered.wait(), 5)
    stopping = asyncio.create_task(w.stop())
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/health") as r:
            assert r.status == 503 and (await r.json())["status"] == "draining"
    w.gate.set()
    await asyncio.wait_for(asyncio.gather(running, stopping), 5)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as http:
            await http.get(f"http://127.0.0.1:{port}/health")


async def test_ops_port_zero_disables():
    w = Echo(WorkerConfig(ops_port=0))
    await w.start()
    assert w.ops_port is None
    await w.stop()


def test_json_logs_one_object_per_line():
    stream = io.StringIO()
    configure_logging("DEBUG", stream, root="test.jsonlog")
    log = get_logger("test.jsonlog.x", worker="w1")
    log.info("hello", extra={"model": "m", "n": 2})
    try:
        raise ValueError("bad")
    except ValueError:
        log.exception("failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = map(json.loads, lines)
    assert first["msg"] == "hello" and first["worker"] == "w1" and first["model"] == "m" and first["n"] == 2
    assert first["level"] == "info" and first["ts"].endswith("Z")
    assert second["level"] == "error" and "ValueError" in second["exc"]


def test_handler_must_be_async_and_unique():
    w = Echo(WorkerConfig())
    with pytest.raises(TypeError):
        w.method("sync", lambda v: v)
    with pytest.raises(ValueError):
        w.method("echo", w.echo)
