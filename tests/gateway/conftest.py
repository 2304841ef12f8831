"""Fixtures for the gateway tests: a gateway on a real socket over in-process workers."""

from __future__ import annotations

import dataclasses

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import GATEWAY, create_app
from gateway.auth import KeyStore
from gateway.config import GatewayConfig
from gateway.directory import LocalWorkerDirectory

from .handlers import ModelStore, OnnxWorker, linear_model

SCOPE_SETS = {"infer": {"infer"}, "read": {"models:read"}, "write": {"models:write"}, "admin": {"admin"},
              "none_useful": {"models:read"}}


class FakeClock:
    """A clock the rate-limit tests step by hand."""

    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


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
                         max_body_bytes=64 * 1024, max_model_bytes=256 * 1024, upload_chunk_bytes=1024)


@pytest.fixture
def directory() -> LocalWorkerDirectory:
    return LocalWorkerDirectory()


@pytest.fixture
def workers(directory, model_bytes) -> list[OnnxWorker]:
    ws = [OnnxWorker("linear", model_bytes) for _ in range(3)]
    for i, w in enumerate(ws):
        directory.add("linear", w.handle(f"worker-{i}"))
    return ws


@pytest.fixture
def store(directory, tmp_path) -> ModelStore:
    root = tmp_path / "models"
    root.mkdir()
    s = ModelStore(root)
    directory.add("model-manager", s.handle("manager-0"))
    return s


async def start_gateway(config, directory, keystore):
    app = create_app(config, directory, keystore)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def client(config, directory, keystore, workers, store):
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
