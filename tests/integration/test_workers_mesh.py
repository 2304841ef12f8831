"""Worker roles as real processes on the mesh (`python -m mesh.node --topic ...`).

Every test starts a fresh bootstrap node and the role processes it needs on
127.0.0.1, reads their JSON events (stdout) and logs (stderr) with deadlines,
and calls them over RPC from an in-process MeshRuntime client. Models are built
with scripts/make_models.py into a temporary folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import pathlib
import re
import secrets
import signal
import subprocess
import sys

import numpy as np
import pytest

from mesh import crypto
from mesh.rpc import RpcError
from mesh.runtime import MeshRuntime, RuntimeConfig
from mesh.topics import topic_key
from workers.inference.runner import RunnerConfig, open_session

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[2]
PY = sys.executable
DEADLINE = 30.0
MODEL = "tiny-up"           # mlp-tiny uploaded under this id
DUNE = {"title": "Dune", "author": "Frank Herbert", "isbn": "978-0-441-17271-9", "year": 1965}


# ---------------------------------------------------------------- processes


class Proc:
    """A child process whose stdout JSON events and stderr text are collected as
    they come, so waits can look at everything seen so far."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process):
        self.name = name
        self.proc = proc
        self.events: list[dict] = []
        self.stdout_text: list[str] = []
        self.stderr = ""
        self._changed = asyncio.Event()
        self._readers = [asyncio.ensure_future(self._read_stdout()), asyncio.ensure_future(self._read_stderr())]

    async def _read_stdout(self) -> None:
        while line := await self.proc.stdout.readline():
            text = line.decode().strip()
            if text.startswith("{"):
                self.events.append(json.loads(text))
            else:
                self.stdout_text.append(text)
            self._changed.set()
        self._changed.set()

    async def _read_stderr(self) -> None:
        while chunk := await self.proc.stderr.read(4096):
            self.stderr += chunk.decode(errors="replace")
            self._changed.set()
        self._changed.set()

    async def _until(self, found, what: str, timeout: float):
        async def wait():
            while True:
                result = found()
                if result is not None:
                    return result
                if self.proc.returncode is not None or all(r.done() for r in self._readers):
                    raise AssertionError(f"{self.name} exited ({self.proc.returncode}) before {what}:\n"
                                         f"{self.stderr[-3000:]}")
                self._changed.clear()
                await self._changed.wait()
        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"{self.name}: no {what} in {timeout} s:\n{self.stderr[-3000:]}") from None

    async def event(self, name: str, timeout: float = DEADLINE, **fields) -> dict:
        def found():
            return next((e for e in self.events if e["event"] == name
                         and all(e.get(k) == v for k, v in fields.items())), None)
        return await self._until(found, f"event {name} {fields}", timeout)

    async def log(self, pattern: str, timeout: float = DEADLINE) -> re.Match:
        return await self._until(lambda: re.search(pattern, self.stderr), f"log {pattern!r}", timeout)

    async def exit(self, timeout: float = DEADLINE) -> int:
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.gather(*self._readers)
        return code

    @property
    def public_key(self) -> bytes:
        return bytes.fromhex(next(e for e in self.events if e["event"] == "ready")["public_key"])

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        for r in self._readers:
            r.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


class Mesh:
    """The processes of one test, its config file and bootstrap address."""

    def __init__(self, tmp: pathlib.Path, models: pathlib.Path):
        self.tmp = tmp
        self.models = models
        self.namespace = f"workers-mesh-{secrets.token_hex(4)}"
        self.config = tmp / "topics.toml"
        manifest = json.loads((models / "manifest.json").read_text())
        mid = next(m for m in manifest["models"] if m["id"] == "mlp-mid")
        tiny = next(m for m in manifest["models"] if m["id"] == "mlp-tiny")
        self.config.write_text(f'''
namespace = "{self.namespace}"
bootstrap = []
[topics.model-manager]
role = "workers.models"
[topics.inference]
role = "workers.inference"
[topics.books]
role = "workers.book"
[workers]
drain_timeout_s = 5
log_level = "INFO"
[workers.inference]
ops_port = 0
model_dir = "{tmp / 'no-models'}"
fetch_timeout_s = 10
executor_threads = 1
[workers.models]
ops_port = 0
replicate_interval_s = 0.5
peer_timeout_s = 5
[workers.book]
ops_port = 0
[[models]]
id = "{MODEL}"
role = "workers.inference"
[[models]]
id = "mlp-mid"
file = "{models / mid['file']}"
sha256 = "{mid['sha256']}"
role = "workers.inference"
[[models]]
id = "mlp-tiny"
sha256 = "{tiny['sha256']}"
role = "workers.inference"
''')
        self.procs: list[Proc] = []
        self.bootstrap = ""
        self.env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def key(self, name: str) -> bytes:
        return topic_key(self.namespace, name)

    async def spawn(self, name: str, *args: str, env: dict | None = None) -> Proc:
        proc = await asyncio.create_subprocess_exec(
            PY, *args, cwd=self.tmp, env={**self.env, **(env or {})},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        p = Proc(name, proc)
        self.procs.append(p)
        return p

    async def start_bootstrap(self) -> None:
        boot = await self.spawn("bootstrap", "-m", "mesh.node", "--json", "--bootstrap-node", "--port", "0",
                                "--config", str(self.config))
        ready = await boot.event("ready")
        self.bootstrap = f"{ready['host']}:{ready['port']}"

    async def node(self, name: str, topic: str, *args: str, env: dict | None = None) -> Proc:
        """A role node: `python -m mesh.node --topic TOPIC ARGS...` (waits for "ready")."""
        p = await self.spawn(name, "-m", "mesh.node", "--json", "--config", str(self.config),
                             "--bootstrap", self.bootstrap, "--topic", topic, *args, env=env)
        await p.event("ready")
        return p

    async def announced(self, p: Proc, topic: str, timeout: float = DEADLINE) -> None:
        await p.event("announced", timeout, topic=self.key(topic).hex())

    async def upload(self, file: pathlib.Path, model_id: str, *args: str) -> Proc:
        return await self.spawn(f"upload {model_id}", "-m", "workers.models.upload", str(file), "--id", model_id,
                                "--version", "1", "--config", str(self.config), "--bootstrap", self.bootstrap,
                                *args)

    async def close(self) -> None:
        for p in self.procs:
            await p.close()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("models")
    subprocess.run([PY, str(ROOT / "scripts" / "make_models.py"), "--out", str(out), "--only", "mlp-tiny,mlp-mid"],
                   check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                   timeout=120)
    return out


@pytest.fixture
async def mesh(tmp_path, models):
    m = Mesh(tmp_path, models)
    try:
        await m.start_bootstrap()
        yield m
    finally:
        await m.close()


@contextlib.asynccontextmanager
async def client(m: Mesh):
    """An in-process mesh client (a MeshRuntime of its own)."""
    host, port = m.bootstrap.rsplit(":", 1)
    rt = MeshRuntime(RuntimeConfig(keypair=crypto.keypair(), bootstrap=((host, int(port)),)))
    try:
        await rt.start()
        yield rt
    finally:
        await rt.stop()


async def peer_on(rt: MeshRuntime, m: Mesh, topic: str, public_key: bytes):
    """An RPC peer to the process with `public_key`, found by looking up `topic`."""
    discovery = rt.swarm.join(m.key(topic), server=False, client=True)
    await asyncio.wait_for(discovery.flushed(), DEADLINE)
    return rt.peer(await rt.connection(public_key=public_key, timeout=DEADLINE))


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stored_files(data_dir: pathlib.Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "files").iterdir())


# ---------------------------------------------------------------- tests


async def test_upload_fetch_infer_and_replicate(mesh, models, tmp_path):
    file = models / "mlp-tiny-1.onnx"
    digest = sha256(file)
    manager = await mesh.node("manager A", "model-manager", "--data-dir", str(tmp_path / "mA"))
    await mesh.announced(manager, "model-manager")

    up = await mesh.upload(file, MODEL, "--timeout", "20")
    assert await up.exit() == 0, up.stderr
    assert "100.0%" in up.stderr and f"stored {MODEL} version 1 sha256 {digest}" in up.stdout_text[-1]

    # A worker started for the model's topic fetches it from the manager; a pool
    # worker loads it on request; a second manager replicates the first.
    by_topic, pool, manager_b = await asyncio.gather(
        mesh.node("worker 1", MODEL, "--fetch-dir", str(tmp_path / "w1")),
        mesh.node("worker 2", "inference", "--fetch-dir", str(tmp_path / "w2")),
        mesh.node("manager B", "model-manager", "--data-dir", str(tmp_path / "mB")))
    await mesh.announced(by_topic, MODEL)
    assert (tmp_path / "w1" / digest).is_file() and sha256(tmp_path / "w1" / digest) == digest

    x = np.random.default_rng(7).standard_normal((3, 64)).astype(np.float32)
    expected = open_session(file.read_bytes(), RunnerConfig(providers=("CPUExecutionProvider",))).run({"x": x})
    async with client(mesh) as rt:
        await mesh.announced(pool, "inference")
        control = await peer_on(rt, mesh, "inference", pool.public_key)
        described = await control.request("load_model", {"model": MODEL}, timeout=DEADLINE)
        assert described["sha256"] == digest and described["version"] == "1"
        await mesh.announced(pool, MODEL)

        for worker in (by_topic, pool):
            peer = await peer_on(rt, mesh, MODEL, worker.public_key)
            reply = await peer.request("infer", {"model": MODEL, "inputs": {"x": x}}, timeout=DEADLINE)
            assert reply["outputs"].keys() == expected.keys()
            for name, value in expected.items():
                assert np.array_equal(reply["outputs"][name], value), (worker.name, name)

        await manager_b.log(rf"replicated model {MODEL} version 1 sha256 {digest}")
        peer_b = await peer_on(rt, mesh, "model-manager", manager_b.public_key)
        entry = await peer_b.request("get", {"id": MODEL}, timeout=DEADLINE)
        assert entry["sha256"] == digest and entry["size"] == file.stat().st_size
        chunk = await peer_b.request("read_chunk", {"sha256": digest, "offset": 0, "length": entry["size"]},
                                     timeout=DEADLINE)
        assert hashlib.sha256(chunk["data"]).hexdigest() == digest
    assert stored_files(tmp_path / "mB") == [digest]

    # SIGTERM drains and leaves the topics; the node reports its stop.
    by_topic.proc.send_signal(signal.SIGTERM)
    assert await by_topic.exit() == 0
    assert by_topic.events[-1]["event"] == "stopped"
    assert any(e["event"] == "left" and e["topic"] == mesh.key(MODEL).hex() for e in by_topic.events)


async def test_a_worker_fetches_a_model_from_another_worker(mesh, models, tmp_path):
    # No manager on this mesh: the only holder of mlp-tiny is a worker serving it.
    digest = sha256(models / "mlp-tiny-1.onnx")
    holder, pool = await asyncio.gather(
        mesh.node("holder", "mlp-tiny", "--model-dir", str(models)),   # its manifest.json has the file
        mesh.node("pool", "inference", "--fetch-dir", str(tmp_path / "pool"), "--fetch-timeout-s", "5"))
    await asyncio.gather(mesh.announced(holder, "mlp-tiny"), mesh.announced(pool, "inference"))
    async with client(mesh) as rt:
        control = await peer_on(rt, mesh, "inference", pool.public_key)
        described = await control.request("load_model", {"model": "mlp-tiny"}, timeout=DEADLINE)
        assert described["sha256"] == digest
        await mesh.announced(pool, "mlp-tiny")
        assert sha256(tmp_path / "pool" / digest) == digest
        with pytest.raises(RpcError) as err:  # known to nobody: refused, and its topic is left again
            await control.request("load_model", {"model": "nowhere"}, timeout=DEADLINE)
        assert err.value.code in ("MODEL_NOT_FOUND", "FETCH_FAILED")
        await pool.event("left", topic=mesh.key("nowhere").hex())


async def test_manager_killed_during_network_upload(mesh, models, tmp_path):
    file = models / "mlp-mid-1.onnx"
    digest = sha256(file)
    data_dir = tmp_path / "mC"
    manager = await mesh.node("manager", "model-manager", "--data-dir", str(data_dir))
    await mesh.announced(manager, "model-manager")

    up = await mesh.upload(file, "big", "--timeout", "3")
    await up.log(r"\]\s+([1-9]\d?\.\d)% ")          # some, not all, bytes are in
    manager.proc.send_signal(signal.SIGKILL)
    assert await manager.exit() == -signal.SIGKILL
    assert await up.exit() == 1 and "error:" in up.stderr

    restarted = await mesh.node("manager again", "model-manager", "--data-dir", str(data_dir))
    await mesh.announced(restarted, "model-manager")
    assert stored_files(data_dir) == []               # the partial file is gone, no row names it
    async with client(mesh) as rt:
        peer = await peer_on(rt, mesh, "model-manager", restarted.public_key)
        assert (await peer.request("list", {}, timeout=DEADLINE))["models"] == []
        with pytest.raises(RpcError) as err:
            await peer.request("get", {"id": "big"}, timeout=DEADLINE)
        assert err.value.code == "MODEL_NOT_FOUND"

        again = await mesh.upload(file, "big", "--timeout", "20")
        assert await again.exit() == 0, again.stderr
        listed = (await peer.request("list", {}, timeout=DEADLINE))["models"]
        assert [(e["id"], e["sha256"]) for e in listed] == [("big", digest)]
    assert stored_files(data_dir) == [digest] and sha256(data_dir / "files" / digest) == digest


async def test_books_worker_over_the_mesh(mesh, tmp_path):
    books = await mesh.node("books", "books", "--db-path", str(tmp_path / "books.db"))
    await mesh.announced(books, "books")
    assert any(e["event"] == "role" and e["role"] == "workers.book" for e in books.events)
    async with client(mesh) as rt:
        peer = await peer_on(rt, mesh, "books", books.public_key)
        made = await peer.request("create", DUNE, timeout=DEADLINE)
        assert made["isbn"] == "9780441172719" and made["version"] == 1
        page = await peer.request("list", {"where": {"author": "Frank Herbert"}}, timeout=DEADLINE)
        assert [item["id"] for item in page["items"]] == [made["id"]]
        with pytest.raises(RpcError) as err:
            await peer.request("create", {**DUNE, "isbn": "123"}, timeout=DEADLINE)
        assert err.value.code == "INVALID_INPUT"


async def test_worker_answers_busy_past_its_limits(mesh):
    # max_concurrent from the command line, max_queue from the environment.
    worker = await mesh.node("worker", "mlp-mid", "--max-concurrent", "1", "--batching", "false",
                             env={"MESH_MAX_QUEUE": "1"})
    await mesh.announced(worker, "mlp-mid")
    x = np.random.default_rng(1).standard_normal((256, 512)).astype(np.float32)
    async with client(mesh) as rt:
        peer = await peer_on(rt, mesh, "mlp-mid", worker.public_key)
        capacity = await peer.request("capacity", None, timeout=DEADLINE)
        assert (capacity["max_concurrent"], capacity["max_queue"]) == (1, 1)
        results = await asyncio.gather(*[peer.request("infer", {"model": "mlp-mid", "inputs": {"x": x}},
                                                      timeout=DEADLINE) for _ in range(12)],
                                       return_exceptions=True)
    busy = [r for r in results if isinstance(r, RpcError)]
    ok = [r for r in results if isinstance(r, dict)]
    assert ok and busy and len(ok) + len(busy) == len(results), results
    assert all(e.code == "BUSY" and "retry after" in str(e) for e in busy)


async def test_a_bad_role_option_exits_1_with_its_code(mesh):
    bad = await mesh.spawn("bad", "-m", "mesh.node", "--json", "--config", str(mesh.config), "--bootstrap",
                           mesh.bootstrap, "--topic", "inference", "--max-queue", "lots")
    assert await bad.exit() == 1
    error = await bad.event("error")
    assert error["code"] == "CONFIG_INVALID" and "max_queue" in error["message"]
