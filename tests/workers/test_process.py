"""A standalone inference worker process: JSON logs, ops HTTP, SIGTERM drain."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import aiohttp

from .test_base import free_port


async def read_until(stream, predicate, seen):
    while True:
        line = await stream.readline()
        if not line:
            raise AssertionError(f"process ended; log so far: {seen}")
        record = json.loads(line)
        seen.append(record)
        if predicate(record):
            return record


async def test_worker_process_serves_ops_port_and_drains_on_sigterm(model_dir, manifest, tmp_path):
    port = free_port()
    tiny = manifest["mlp-tiny"]
    (tmp_path / "topics.toml").write_text(f"""
namespace = "proc-test"
[workers.inference]
model_dir = "{model_dir}"
[[models]]
id = "mlp-tiny"
version = "1"
file = "{tiny['file']}"
sha256 = "{tiny['sha256']}"
role = "workers.inference"
""")
    env = {**os.environ, "MESH_OPS_PORT": str(port), "PYTHONPATH": os.getcwd()}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers.inference", "--topics", str(tmp_path / "topics.toml"), "--name", "proc1",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env)
    seen: list[dict] = []
    try:
        started = await asyncio.wait_for(read_until(proc.stderr, lambda r: r["msg"] == "worker started", seen), 60)
        assert started["ops_port"] == port and started["worker"] == "proc1"
        assert any(r["msg"] == "model loaded" and r["model"] == "mlp-tiny" for r in seen)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/health") as r:
                body = await r.json()
                assert r.status == 200 and body["models"] == ["mlp-tiny@1"] and body["topics"] == ["mlp-tiny"]
            async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                assert "mesh_worker_models_loaded 1.0" in await r.text()
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(read_until(proc.stderr, lambda r: r["msg"] == "worker stopped", seen), 30)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        msgs = [r["msg"] for r in seen]
        assert msgs.index("draining") < msgs.index("topic left") < msgs.index("worker stopped")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
