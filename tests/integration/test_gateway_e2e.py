"""The gateway end to end over real processes on loopback.

One module-wide mesh: a bootstrap node (`python -m mesh.node --bootstrap-node`), a
model manager (`--topic model-manager`), three inference workers of "linear"
(`--topic linear`, max_concurrent 1, 2 and 4 so the weighted strategy has something
to weigh) and a gateway (`python -m gateway`, least-connections). Tests add their
own gateways and workers. Worker-side counts come from the workers' `stats` RPC,
called over the mesh from this process. Every wait has a deadline; every process
is killed in the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import pathlib
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from gateway.auth import KeyStore
from gateway.config import GatewayConfig
from gateway.mesh_client import MeshWorkerDirectory
from mesh.topics import topic_key
from tests.gateway.models import linear_model, reference, write_model_dir

import aiohttp  # noqa: E402  (after the gateway: aiohttp enters through it)

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[2]
NAMESPACE = "gateway-e2e"
START_S = 60.0      # deadline of a process start
WAIT_S = 20.0       # deadline of any other wait
X = np.asarray([[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 0.0, 2.0]], dtype=np.float32)
BODY = {"inputs": {"x": {"shape": [2, 4], "dtype": "float32", "data": X.ravel().tolist()}}}
UPLOADED = linear_model(seed=5)


class Proc:
    """A child process whose stdout lines are read by a thread into a queue (waits have deadlines)."""

    def __init__(self, name: str, args: list[str], log_dir: pathlib.Path):
        self.name = name
        self.stderr = open(log_dir / f"{name}.log", "wb")
        self.popen = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.stderr,
                                      env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.popen.stdout:
            self.lines.put(line.decode(errors="replace"))
        self.lines.put(None)

    def wait_line(self, match, timeout: float = START_S):
        """The first stdout line (a dict for JSON lines) for which `match` is true."""
        end = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(end - time.monotonic(), 0.001))
            except queue.Empty:
                raise TimeoutError(f"{self.name}: no matching line within {timeout}s") from None
            if line is None:
                raise RuntimeError(f"{self.name} exited ({self.popen.wait()}); see {self.stderr.name}")
            with contextlib.suppress(ValueError):
                line = json.loads(line)
            if match(line):
                return line

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()
        self.stderr.close()


class Mesh:
    """The processes of the module, and how to start more."""

    def __init__(self, tmp: pathlib.Path):
        self.tmp = tmp
        self.procs: list[Proc] = []
        self.count = 0

    def spawn(self, name: str, *args: str) -> Proc:
        self.count += 1
        p = Proc(f"{name}-{self.count}", [sys.executable, *args], self.tmp)
        self.procs.append(p)
        return p

    def node(self, name: str, *args: str) -> Proc:
        return self.spawn(name, "-m", "mesh.node", "--json", "--config", str(self.topics), *args)

    def worker(self, model: str, *args: str) -> Proc:
        n = self.count + 1
        return self.node(f"worker-{model}", "--topic", model, "--fetch-dir", str(self.tmp / f"fetch-{n}"), *args)

    @staticmethod
    def announced(proc: Proc, service: str) -> str:
        """Wait for `proc` to announce `service`; returns its public key (hex)."""
        ready = proc.wait_line(lambda e: isinstance(e, dict) and e.get("event") == "ready")
        topic = topic_key(NAMESPACE, service).hex()
        proc.wait_line(lambda e: isinstance(e, dict) and e.get("event") == "announced" and e.get("topic") == topic)
        return ready["public_key"]

    def gateway(self, *args: str) -> Proc:
        # --port 0: the gateway binds a free port itself and shows it (a port picked here
        # could be taken by another process before the gateway binds it)
        return self.spawn("gateway", "-m", "gateway", "--config", str(self.topics), "--port", "0",
                          "--keys-db", str(self.keys_db), "--model", "linear", "--worker-wait", "10",
                          "--ping-interval", "0.3", "--ping-timeout", "0.5", "--discovery-interval", "1", "--timeout", "10",
                          "--rate", "100000", "--burst", "100000", "--max-body", "65536", "--seed", "1", *args)

    @staticmethod
    def gateway_up(proc: Proc) -> str:
        """Wait for the gateway's start line; its base URL."""
        line = proc.wait_line(lambda line: isinstance(line, str) and "Running on" in line)
        return re.search(r"http://127\.0\.0\.1:\d+", line).group(0)


def write_topics(tmp: pathlib.Path, bootstrap: str) -> pathlib.Path:
    models = write_model_dir(tmp / "models", {"linear": linear_model()})
    manifest = json.loads((models / "manifest.json").read_text())["models"][0]
    path = tmp / "topics.toml"
    path.write_text(f"""
namespace = "{NAMESPACE}"
bootstrap = ["{bootstrap}"]
[topics.model-manager]
role = "workers.models"
[workers]
ops_port = 0
drain_timeout_s = 2
[workers.inference]
model_dir = "{models}"
fetch_timeout_s = 10
[workers.models]
data_dir = "{tmp / 'manager'}"
replicate_interval_s = 0
[[models]]
id = "linear"
version = "1"
file = "{manifest['file']}"
sha256 = "{manifest['sha256']}"
role = "workers.inference"
[[models]]
id = "pair"
version = "1"
file = "{manifest['file']}"
sha256 = "{manifest['sha256']}"
role = "workers.inference"
[[models]]
id = "uploaded"             # no file: a worker fetches it from the model manager
version = "1"
role = "workers.inference"
""")
    return path


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gateway-e2e")
    m = Mesh(tmp)
    try:
        boot = Proc("bootstrap", [sys.executable, "-m", "mesh.node", "--json", "--bootstrap-node", "--port", "0",
                                  "--config", str(tmp / "none.toml")], tmp)
        m.procs.append(boot)
        ready = boot.wait_line(lambda e: isinstance(e, dict) and e.get("event") == "ready")
        m.bootstrap = f"{ready['host']}:{ready['port']}"
        m.topics = write_topics(tmp, m.bootstrap)
        m.keys_db = tmp / "keys.sqlite3"
        m.keystore = KeyStore(str(m.keys_db), cache_s=0.0)
        m.keys = {name: m.keystore.create(name, frozenset(scopes), rate=100000.0, burst=100000)[0]
                  for name, scopes in (("infer", {"infer"}), ("read", {"models:read"}),
                                       ("write", {"models:write"}), ("admin", {"admin"}))}
        manager = m.node("manager", "--topic", "model-manager")
        workers = [m.worker("linear", "--max-concurrent", str(c)) for c in (1, 2, 4)]
        gw = m.gateway()
        m.manager = Mesh.announced(manager, "model-manager")
        m.workers = [Mesh.announced(w, "linear") for w in workers]
        m.capacity = dict(zip(m.workers, (1, 2, 4)))
        m.base = Mesh.gateway_up(gw)
        yield m
    finally:
        for p in m.procs:
            p.kill()


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


async def until(check, timeout: float = WAIT_S, every: float = 0.05):
    """Re-check `check()` (an HTTP view of another process) until it returns a truthy value;
    the interval only paces the polling, the deadline bounds the wait."""
    async def poll():
        while not (result := await check()):
            await asyncio.sleep(every)
        return result
    return await asyncio.wait_for(poll(), timeout)


async def healthy_workers(http, base: str, key: str, model: str, n: int, reported: bool = False,
                          idle: bool = False) -> None:
    """Wait until the gateway at `base` sees `n` healthy workers of `model` (with reported
    capacity; reported idle)."""
    async def check():
        async with http.get(f"{base}/api/v1/status", headers=auth(key)) as r:
            status = await r.json()
        topic = next((t for t in status["topics"] if t["name"] == model), {"workers": []})
        ok = [w for w in topic["workers"] if w["health"] == "healthy" and (w["max_concurrent"] or not reported)
              and (w["load"] + w["queue"] == 0 or not idle)]
        return len(ok) >= n
    await until(check)


@contextlib.asynccontextmanager
async def stats_client(mesh: Mesh, model: str, n: int):
    """An RPC view of the workers of `model` from this process: yields a function returning
    {worker public key: requests of BODY served} from each worker's `stats` method, counted
    by rows: concurrent requests may reach a worker joined into one infer call."""
    directory = MeshWorkerDirectory(GatewayConfig(namespace=NAMESPACE, bootstrap=(_addr(mesh.bootstrap),)))
    await directory.start()
    try:
        await directory.watch(model)
        assert len(await directory.wait_for_workers(model, WAIT_S, at_least=n)) >= n

        async def counts() -> dict[str, int]:
            out = {}
            for w in directory.workers(model):
                stats = await w.call("stats", {}, 5.0)
                entry = stats["models"].get(f"{model}@1", {})
                out[w.id] = entry.get("rows", 0) // len(X)   # rows -> requests of BODY
            return out
        yield counts
    finally:
        await directory.close()


async def _until_true(check) -> None:
    while not await check():
        pass   # each check waits on the directory's own events (wait_for_workers)


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def delta(before: dict, after: dict) -> dict:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after}


# ---------------------------------------------------------------- endpoints, keys, formats

ENDPOINTS = [  # (method, path, scope, request kwargs)
    ("GET", "/api/v1/status", "admin", {}),
    ("POST", "/api/v1/inference/linear", "infer", {"json": BODY}),
    ("GET", "/api/v1/models", "read", {}),
    ("GET", "/api/v1/models/linear-e2e", "read", {}),
    ("GET", "/metrics", "admin", {}),
    ("GET", "/api/v1/openapi.json", None, {}),
    ("GET", "/v2", None, {}),
    ("GET", "/v2/models/linear", "read", {}),
    ("GET", "/v2/models/linear/ready", "read", {}),
    ("POST", "/v2/models/linear/infer", "infer",
     {"json": {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": X.ravel().tolist()}]}}),
]


async def test_every_endpoint_with_good_and_bad_keys(mesh):
    async with aiohttp.ClientSession() as http:
        await healthy_workers(http, mesh.base, mesh.keys["admin"], "linear", 3)
        data = linear_model()
        upload = {"Content-Type": "application/octet-stream", "X-Checksum-Sha256": hashlib.sha256(data).hexdigest()}
        for name in ("infer", "read"):
            r = await http.post(f"{mesh.base}/api/v1/models?id=linear-e2e&version=1", data=data,
                                headers={**upload, **auth(mesh.keys[name])})
            assert r.status == 403, name
        r = await http.post(f"{mesh.base}/api/v1/models?id=linear-e2e&version=1", data=data, headers=upload)
        assert r.status == 401
        r = await http.post(f"{mesh.base}/api/v1/models?id=linear-e2e&version=1", data=data,
                            headers={**upload, **auth(mesh.keys["write"])})
        assert r.status in (200, 201), await r.text()
        for path in ("/health", "/v2/health/live", "/v2/health/ready", "/"):
            assert (await http.get(mesh.base + path)).status == 200, path
        for method, path, scope, kwargs in ENDPOINTS:
            url = mesh.base + path
            r = await http.request(method, url, **kwargs)
            assert r.status == 401 and "missing API key" in await r.text(), path
            r = await http.request(method, url, headers=auth("mk_0000_wrong"), **kwargs)
            assert r.status == 401, path
            for name, key in mesh.keys.items():
                r = await http.request(method, url, headers=auth(key), **kwargs)
                if scope is None or name in (scope, "admin"):
                    assert r.status == 200, (path, name, r.status, await r.text())
                else:
                    assert r.status == 403 and "lacks scope" in await r.text(), (path, name, r.status)
        for name in ("infer", "read"):
            r = await http.delete(f"{mesh.base}/api/v1/models/linear-e2e", headers=auth(mesh.keys[name]))
            assert r.status == 403
        r = await http.delete(f"{mesh.base}/api/v1/models/linear-e2e", headers=auth(mesh.keys["write"]))
        assert r.status == 200 and [e["id"] for e in (await r.json())["deleted"]] == ["linear-e2e"]


async def test_inference_equals_onnxruntime_in_every_format(mesh):
    want = reference(linear_model(), {"x": X})[0]
    headers = auth(mesh.keys["infer"])
    async with aiohttp.ClientSession() as http:
        r = await http.post(f"{mesh.base}/api/v1/inference/linear", json=BODY, headers=headers)
        body = await r.json()
        assert r.status == 200 and body["worker"] in mesh.workers, body
        np.testing.assert_allclose(np.asarray(body["outputs"]["y"]["data"]).reshape(2, 3), want, rtol=1e-6)

        r = await http.post(f"{mesh.base}/api/v1/inference/linear", data=X.tobytes(), headers={
            **headers, "Content-Type": "application/octet-stream", "X-Tensor-Shape": "2,4",
            "X-Tensor-Dtype": "float32", "Accept": "application/octet-stream"})
        assert r.status == 200 and r.headers["X-Tensor-Shape"] == "2,3"
        np.testing.assert_array_equal(np.frombuffer(await r.read(), np.float32).reshape(2, 3), want)

        v2 = {"id": "r1", "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": X.ravel().tolist()}]}
        r = await http.post(f"{mesh.base}/v2/models/linear/infer", json=v2, headers=headers)
        body = await r.json()
        assert r.status == 200 and set(body) == {"model_name", "model_version", "outputs", "id"}, body
        assert (body["model_name"], body["model_version"], body["id"]) == ("linear", "1", "r1")
        (out,) = body["outputs"]
        assert (out["name"], out["datatype"], out["shape"]) == ("y", "FP32", [2, 3])
        np.testing.assert_allclose(np.asarray(out["data"]).reshape(2, 3), want, rtol=1e-6)
        r = await http.get(f"{mesh.base}/v2/models/linear", headers=auth(mesh.keys["read"]))
        assert await r.json() == {"name": "linear", "versions": ["1"], "platform": "onnxruntime_onnx",
                                  "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
                                  "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]}
        r = await http.post(f"{mesh.base}/v2/models/linear/infer", json={"inputs": [{"name": "x"}]}, headers=headers)
        assert r.status == 400 and isinstance((await r.json())["error"], str)   # v2 error shape


def metric(text: str, sample: str) -> float:
    """The value of one sample line (`name{labels}` as Prometheus prints it) in /metrics."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{sample} not in /metrics")


async def test_the_gateway_process_busy_polls_by_default(mesh):
    """`python -m gateway` runs on a MeshEventLoop that polls before sleeping (its
    default --busy-poll-us): while one client calls in sequence, the loop goes idle
    between the RPC call and the worker's reply, its window opens, and it polls."""
    async with aiohttp.ClientSession() as http:
        await healthy_workers(http, mesh.base, mesh.keys["admin"], "linear", 3)
        await _sequential(http, mesh.base, mesh.keys["infer"], 30)
        r = await http.get(f"{mesh.base}/metrics", headers=auth(mesh.keys["admin"]))
        text = await r.text()
    polls = sum(metric(text, f'gateway_busy_polls_total{{result="{r}"}}') for r in ("hit", "miss"))
    assert polls >= 1 and metric(text, "gateway_busy_poll_seconds_total") > 0


async def test_rate_limit_429_then_recovers(mesh):
    key, _ = mesh.keystore.create("slow", frozenset({"models:read"}), rate=5.0, burst=2)
    async with aiohttp.ClientSession() as http:
        statuses = [(await http.get(f"{mesh.base}/v2", headers=auth(key))).status for _ in range(3)]
        assert statuses == [200, 200, 429]
        r = await http.get(f"{mesh.base}/v2", headers=auth(key))
        assert r.status == 429 and 0 < float(r.headers["Retry-After"]) <= 1
        other = await http.get(f"{mesh.base}/v2", headers=auth(mesh.keys["read"]))
        assert other.status == 200   # per key: the others are unaffected

        async def recovered():   # a 429 takes no token, so asking again is the wait
            return (await http.get(f"{mesh.base}/v2", headers=auth(key))).status == 200
        await asyncio.wait_for(_until_true(recovered), 2.0)


async def test_bad_input_is_4xx_and_the_gateway_keeps_serving(mesh):
    headers = auth(mesh.keys["infer"])
    url = f"{mesh.base}/api/v1/inference/linear"
    spec = BODY["inputs"]["x"]
    cases = [
        (dict(data=b"{not json", headers={**headers, "Content-Type": "application/json"}), 400, "not valid JSON"),
        (dict(data=b"x=1", headers={**headers, "Content-Type": "text/plain"}), 415, "content type must be"),
        (dict(data=b"\0" * 70000, headers={**headers, "Content-Type": "application/octet-stream",
                                           "X-Tensor-Shape": "70000", "X-Tensor-Dtype": "uint8"}), 413, "limit"),
        (dict(json={"inputs": {"x": {**spec, "shape": [4, 2]}}}, headers=headers), 400, "must have shape [-1, 4]"),
        (dict(json={"inputs": {"x": {**spec, "dtype": "float64"}}}, headers=headers), 400, "must be float32"),
        (dict(json={"inputs": {"z": spec}}, headers=headers), 400, "unknown ['z']"),
        (dict(json={"inputs": {"x": {**spec, "dtype": "complex"}}}, headers=headers), 400, "dtype 'complex'"),
    ]
    async with aiohttp.ClientSession() as http:
        for kwargs, status, fragment in cases:
            r = await http.post(url, **kwargs)
            body = await r.json()
            assert r.status == status and fragment in body["error"]["message"], (status, body)
        r = await http.post(f"{mesh.base}/api/v1/inference/ghost", json=BODY,
                            headers={**headers, "X-Request-Timeout": "0.5"})
        assert r.status == 404 and (await r.json())["error"]["kind"] == "model_not_found"
        r = await http.post(url, json=BODY, headers=headers)
        assert r.status == 200


# ---------------------------------------------------------------- models

async def test_upload_reaches_the_manager_then_a_worker_loads_it(mesh):
    sha = hashlib.sha256(UPLOADED).hexdigest()
    write = {**auth(mesh.keys["write"]), "Content-Type": "application/octet-stream", "X-Checksum-Sha256": sha}
    async with aiohttp.ClientSession() as http:
        r = await http.post(f"{mesh.base}/api/v1/models?id=uploaded&version=1", data=b"x" * len(UPLOADED),
                            headers=write)
        assert r.status == 400 and (await r.json())["error"]["kind"] == "checksum_mismatch"
        r = await http.post(f"{mesh.base}/api/v1/models?id=uploaded&version=1", data=UPLOADED, headers=write)
        assert r.status == 201, await r.text()
        entry = await r.json()
        assert (entry["id"], entry["version"], entry["sha256"], entry["size"]) == ("uploaded", "1", sha, len(UPLOADED))
        r = await http.get(f"{mesh.base}/api/v1/models/uploaded", headers=auth(mesh.keys["read"]))
        assert (await r.json())["sha256"] == sha

        worker = mesh.worker("uploaded")        # no file in its model_dir: it fetches from the manager
        key = await asyncio.to_thread(Mesh.announced, worker, "uploaded")
        r = await http.post(f"{mesh.base}/api/v1/inference/uploaded", json=BODY, headers=auth(mesh.keys["infer"]))
        body = await r.json()
        assert r.status == 200 and body["worker"] == key, body
        want = reference(UPLOADED, {"x": X})[0]
        np.testing.assert_allclose(np.asarray(body["outputs"]["y"]["data"]).reshape(2, 3), want, rtol=1e-6)


# ---------------------------------------------------------------- balancing

async def _sequential(http, base: str, key: str, n: int) -> None:
    for _ in range(n):
        async with http.post(f"{base}/api/v1/inference/linear", json=BODY, headers=auth(key)) as r:
            assert r.status == 200, await r.text()


async def _concurrent(http, base: str, key: str, n: int, clients: int) -> None:
    await asyncio.gather(*(_sequential(http, base, key, n // clients) for _ in range(clients)))


async def test_each_strategy_spreads_load_as_it_should(mesh):
    strategies = ("round-robin", "random", "weighted", "power-of-two")
    started = {s: mesh.gateway("--strategy", s) for s in strategies}
    bases = {"least-connections": mesh.base}
    for strategy, proc in started.items():
        bases[strategy] = await asyncio.to_thread(Mesh.gateway_up, proc)
    key = mesh.keys["infer"]
    async with aiohttp.ClientSession() as http, stats_client(mesh, "linear", 3) as counts:
        for base in bases.values():
            await healthy_workers(http, base, mesh.keys["admin"], "linear", 3, reported=True)
        spread = {}
        for strategy, base in bases.items():
            before = await counts()
            # start from fresh reports of idle workers (a ping taken during the previous run
            # may show a request running or queued there)
            await healthy_workers(http, base, mesh.keys["admin"], "linear", 3, reported=True, idle=True)
            if strategy in ("least-connections", "power-of-two"):   # they weigh in-flight requests
                await _concurrent(http, base, key, 60, 6)
            else:
                await _sequential(http, base, key, 42 if strategy == "weighted" else 30)
            spread[strategy] = delta(before, await counts())
        print("spread by strategy:", {s: sorted(v.values()) for s, v in spread.items()})
        rr = spread["round-robin"]
        assert sorted(rr.values()) == [10, 10, 10], rr                 # exact turns
        for strategy in ("random", "power-of-two", "least-connections"):
            n = sum(spread[strategy].values())
            assert all(c >= n * 0.1 for c in spread[strategy].values()), (strategy, spread[strategy])
        w = spread["weighted"]                                          # free capacity 1 : 2 : 4
        by_capacity = [w[k] for k in sorted(w, key=mesh.capacity.get)]
        assert by_capacity[0] <= by_capacity[1] < by_capacity[2], (by_capacity, spread)
        assert by_capacity[2] >= 2.5 * by_capacity[0], by_capacity


async def test_two_gateways_serve_the_same_workers_at_once(mesh):
    second = mesh.gateway()
    base2 = await asyncio.to_thread(Mesh.gateway_up, second)
    key = mesh.keys["infer"]
    async with aiohttp.ClientSession() as http, stats_client(mesh, "linear", 3) as counts:
        await healthy_workers(http, base2, mesh.keys["admin"], "linear", 3)
        before = await counts()
        await asyncio.gather(_concurrent(http, mesh.base, key, 24, 4), _concurrent(http, base2, key, 24, 4))
        moved = delta(before, await counts())
        assert sum(moved.values()) == 48 and all(c > 0 for c in moved.values()), moved


# ---------------------------------------------------------------- faults

async def test_killed_worker_traffic_moves_and_a_new_worker_gets_traffic(mesh):
    pair = [mesh.worker("pair") for _ in range(2)]
    keys = [await asyncio.to_thread(Mesh.announced, p, "pair") for p in pair]
    url = f"{mesh.base}/api/v1/inference/pair"
    headers = auth(mesh.keys["infer"])
    results: list[tuple[float, float, int, str | None]] = []   # (sent, answered, status, worker)
    stop = asyncio.Event()
    progress = asyncio.Condition()

    async with aiohttp.ClientSession() as http:
        async def client():
            while not stop.is_set():
                sent = time.monotonic()
                async with http.post(url, json=BODY, headers=headers) as r:
                    body = await r.json()
                results.append((sent, time.monotonic(), r.status, body.get("worker")))
                async with progress:
                    progress.notify_all()

        async def wait_for(predicate, timeout=WAIT_S):
            async with progress:
                await asyncio.wait_for(progress.wait_for(predicate), timeout)

        load = [asyncio.create_task(client()) for _ in range(4)]
        try:
            await wait_for(lambda: {w for *_, w in results} >= set(keys))       # both under load
            killed_at = time.monotonic()
            pair[0].popen.send_signal(signal.SIGKILL)
            # the survivor takes every request once the gateway saw the connection drop
            await wait_for(lambda: sum(1 for s, _, st, w in results if s > killed_at and w == keys[1]) >= 40)
            new = mesh.worker("pair")
            new_key = await asyncio.to_thread(Mesh.announced, new, "pair")
            await wait_for(lambda: any(w == new_key for *_, w in results), 10.0)   # found within seconds
            # keep the load on past the first second after the kill (the checks below look
            # there); on a quiet machine the new worker can be found sooner than that
            await wait_for(lambda: any(s > killed_at + 1.0 for s, *_ in results))
        finally:
            stop.set()
            await asyncio.gather(*load, return_exceptions=True)

    failed = [r for r in results if r[2] != 200]
    print(f"kill test: {len(results)} requests, {len(failed)} failed, "
          f"{sum(1 for s, *_ in results if s > killed_at)} sent after the kill, slowest "
          f"{max(a - s for s, a, *_ in results):.2f}s")
    # only requests already running on the killed worker may fail; here even those are
    # retried (connection lost before a reply: inference is safe to run again)
    assert all(sent <= killed_at for sent, *_ in failed), (killed_at, failed)
    assert len(failed) <= 4, failed
    late = [w for sent, _, st, w in results if sent > killed_at + 1.0]
    assert late and keys[0] not in late
