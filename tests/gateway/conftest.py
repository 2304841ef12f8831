"""Fixtures for the gateway tests: a gateway on a real socket over real workers in this process.

Three real `InferenceWorker`s serve the model "linear" from a model folder, and a real
`ModelManager` stores uploads; the gateway reaches them through their method tables
(`LocalWorker` handles), the same handlers the RPC server calls. The mesh itself is
exercised in tests/integration/test_gateway_e2e.py.
"""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import GATEWAY, create_app
from gateway.auth import KeyStore
from gateway.config import GatewayConfig
from gateway.directory import LocalWorker, LocalWorkerDirectory
from workers.inference import InferenceConfig, InferenceWorker
from workers.models.manager import ManagerConfig, ModelManager

from .models import linear_model, write_model_dir

SCOPE_SETS = {"infer": {"infer"}, "read": {"models:read"}, "write": {"models:write"}, "admin": {"admin"},
              "none_useful": {"models:read"}}
MAX_CONCURRENT = 8


class FakeClock:
    """A clock the rate-limit tests step by hand."""

    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def handle(worker, worker_id: str) -> LocalWorker:
    """A directory handle calling `worker`'s RPC method table in-process."""
    return LocalWorker(worker_id, {name: m.handler for name, m in worker.methods.items()})


@pytest.fixture(scope="session")
def model_bytes() -> bytes:
    return linear_model()


@pytest.fixture
def keystore(tmp_path):
    store = KeyStore(str(tmp_path / "keys.sqlite3"), cache_s=0.0)
    yield store
    store.close()


@pytest.fixture
def keys(keystore) -> dict[str, str]:
    out = {name: keystore.create(name, frozenset(scopes), rate=1000.0, burst=1000)[0]
           for name, scopes in SCOPE_SETS.items() if name != "none_useful"}
    revoked, record = keystore.create("revoked", frozenset({"admin"}))
    keystore.revoke(record.id)
    out["revoked"] = revoked
    return out


@pytest.fixture
def config() -> GatewayConfig:
    return GatewayConfig(port=0, ping_interval_s=3600.0, worker_wait_s=0.05, seed=7, request_timeout_s=5.0,
                         max_body_bytes=64 * 1024, max_model_bytes=256 * 1024, upload_chunk_bytes=64)


@pytest.fixture
def directory() -> LocalWorkerDirectory:
    return LocalWorkerDirectory()


@pytest.fixture
def model_dir(tmp_path, model_bytes):
    return write_model_dir(tmp_path / "models", {"linear": model_bytes})


@pytest.fixture
async def workers(directory, model_dir) -> list[InferenceWorker]:
    ws = [InferenceWorker(InferenceConfig(name=f"worker-{i}", model_dir=str(model_dir), serve=("linear",),
                                          ops_port=0, max_concurrent=MAX_CONCURRENT, executor_threads=1))
          for i in range(3)]
    try:
        for i, w in enumerate(ws):
            await w.start()
            directory.add("linear", handle(w, f"worker-{i}"))
        yield ws
    finally:
        for w in ws:
            await w.stop(drain_timeout=1.0)


@pytest.fixture
async def manager(directory, tmp_path) -> ModelManager:
    m = ModelManager(ManagerConfig(data_dir=str(tmp_path / "manager"), replicate_interval_s=0, ops_port=0))
    await m.start()
    directory.add("model-manager", handle(m, "manager-0"))
    try:
        yield m
    finally:
        await m.stop(drain_timeout=1.0)


async def store_model(manager: ModelManager, model_id: str, version: str, data: bytes) -> dict:
    """Store `data` in the manager directly (begin, one chunk, commit); returns its entry."""
    begun = await manager.call("upload_begin", {"id": model_id, "version": version, "size": len(data),
                                                "sha256": hashlib.sha256(data).hexdigest()})
    if "model" in begun:
        return begun["model"]
    await manager.call("upload_chunk", {"upload": begun["upload"], "offset": 0, "data": data})
    return await manager.call("upload_commit", {"upload": begun["upload"]})


async def start_gateway(config, directory, keystore):
    app = create_app(config, directory, keystore)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def client(config, directory, keystore, workers, manager):
    c = await start_gateway(config, directory, keystore)
    yield c
    await c.close()


@pytest.fixture
def gw(client):
    return client.server.app[GATEWAY]


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def replace(config, **kw):
    return dataclasses.replace(config, **kw)
