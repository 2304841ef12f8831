"""Gateway benchmark: end-to-end HTTP throughput and p50/p99 at 1 and 32 concurrent clients.

Servers (each in its own processes; the load comes from separate client processes):
  bare     a bare aiohttp server running onnxruntime in-process (the peer)
  gateway  the gateway (auth, rate limit, validation, balancing, metrics) over a real
           InferenceWorker in the same process (its RPC method table, no mesh)
  mesh-1   `python -m gateway` + one `python -m mesh.node --topic mlp` worker process,
           found on the DHT (a bootstrap node process) and called over RPC
  mesh-2   the same with two worker processes
  ray      Ray Serve serving the same model over its HTTP proxy (one replica), when an
           interpreter with ray[serve] is given (--ray-python) or this one has it;
           else it prints "not installed" (ray is an optional extra: `pip install .[ray]`)
The model is the same tiny MLP (64-256-10, seeded), built with onnx.helper; every
request sends one 1x64 float32 row as JSON and gets 1x10 back.

  PYTHONPATH=. python scripts/bench/gateway.py [--seconds 2] [--rounds 3] [--concurrency 1 32]
                                               [--modes bare gateway mesh-1 mesh-2 ray]
                                               [--ray-python /path/to/python-with-ray]

All servers but Ray run at once and the runs alternate, so the machine's noise hits
them alike; Ray Serve runs after them, on its own (its daemons take CPU even while
idle, which would slow the others). The table shows medians over the rounds, and the
CPU time per request of all of a variant's server processes (gateway and workers;
read from /proc), which noise disturbs far less than throughput, and the workers'
share of it for the mesh variants.
"by round" is the range of each round's ratio to bare's run in the same round (for
Ray Serve, the round of the same number): what a single round may show.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

# this file is named gateway.py: keep its folder off the path so `gateway` is the package
_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(_HERE))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

MODEL_ID = "mlp"


def build_mlp(seed: int = 0) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    init = [numpy_helper.from_array((rng.standard_normal(s) * 0.1).astype(np.float32), n)
            for n, s in (("W1", (64, 256)), ("b1", (256,)), ("W2", (256, 10)), ("b2", (10,)))]
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h1"]), helper.make_node("Add", ["h1", "b1"], ["h2"]),
             helper.make_node("Relu", ["h2"], ["h3"]), helper.make_node("MatMul", ["h3", "W2"], ["h4"]),
             helper.make_node("Add", ["h4", "b2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def session():
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(build_mlp(), opts, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------- servers

async def serve_bare(port: int) -> None:
    """The peer: aiohttp and onnxruntime with nothing between them, and the same
    JSON library as the gateway (orjson), so that the ratio measures what the
    gateway and the mesh add, not a JSON parser."""
    import orjson
    from aiohttp import web
    sess = session()

    async def infer(request):
        body = orjson.loads(await request.read())
        spec = body["inputs"]["x"]
        x = np.asarray(spec["data"], dtype=np.float32).reshape(spec["shape"])
        (y,) = sess.run(None, {"x": x})
        return web.Response(body=orjson.dumps({"outputs": {"y": {"shape": list(y.shape), "dtype": "float32",
                                                                "data": y.ravel().tolist()}}}),
                            content_type="application/json")

    app = web.Application()
    app.router.add_post(f"/api/v1/inference/{MODEL_ID}", infer)
    await _run(app, port)


async def serve_gateway(port: int, key_path: str) -> None:
    """The gateway over a real InferenceWorker in this process (its RPC method table, no mesh)."""
    from gateway.app import create_app
    from gateway.config import GatewayConfig
    from gateway.directory import LocalWorker, LocalWorkerDirectory
    from workers.inference import InferenceConfig, InferenceWorker

    tmp = tempfile.mkdtemp()
    worker = InferenceWorker(InferenceConfig(model_dir=write_model_dir(tmp), serve=(MODEL_ID,), ops_port=0))
    await worker.start()
    keys = make_keys(os.path.join(tmp, "keys.sqlite3"), key_path)
    directory = LocalWorkerDirectory()
    directory.add(MODEL_ID, LocalWorker("local-0", {n: m.handler for n, m in worker.methods.items()}))
    await _run(create_app(GatewayConfig(port=port, ping_interval_s=1.0), directory, keys), port)


def serve_ray(port: int) -> None:
    """Ray Serve: one replica of the same MLP behind Ray's HTTP proxy on `port`."""
    import ray
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})

    @serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 1})
    class MLP:
        def __init__(self):
            self.sess = session()

        async def __call__(self, request):
            body = await request.json()
            spec = body["inputs"]["x"]
            x = np.asarray(spec["data"], dtype=np.float32).reshape(spec["shape"])
            (y,) = self.sess.run(None, {"x": x})
            return {"outputs": {"y": {"shape": list(y.shape), "dtype": "float32", "data": y.ravel().tolist()}}}

    serve.run(MLP.bind(), route_prefix=f"/api/v1/inference/{MODEL_ID}")
    print("READY", flush=True)
    while True:
        time.sleep(3600)


def write_model_dir(folder: str) -> str:
    """`folder`/models with the MLP and a manifest.json (workers.inference's LocalDirectorySource)."""
    import hashlib
    models = os.path.join(folder, "models")
    os.makedirs(models, exist_ok=True)
    data = build_mlp()
    with open(os.path.join(models, f"{MODEL_ID}-1.onnx"), "wb") as f:
        f.write(data)
    with open(os.path.join(models, "manifest.json"), "w") as f:
        json.dump({"models": [{"id": MODEL_ID, "version": "1", "file": f"{MODEL_ID}-1.onnx",
                               "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}]}, f)
    return models


def make_keys(db: str, key_path: str):
    from gateway.auth import KeyStore
    keys = KeyStore(db)
    key, _ = keys.create("bench", frozenset({"infer", "admin"}), rate=1e9, burst=10**9)
    with open(key_path, "w") as f:
        f.write(key)
    return keys


async def _run(app, port: int) -> None:
    from aiohttp import web
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("READY", flush=True)
    await asyncio.Event().wait()


# ---------------------------------------------------------------- client

async def load(url: str, key: str | None, concurrency: int, seconds: float) -> dict:
    import aiohttp
    rng = np.random.default_rng(1)
    body = json.dumps({"inputs": {"x": {"shape": [1, 64], "dtype": "float32",
                                        "data": rng.standard_normal(64).astype(np.float32).tolist()}}})
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    latencies: list[float] = []
    errors = total = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        async def one() -> float:
            t = time.perf_counter()
            async with http.post(url, data=body, headers=headers) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"status {r.status}: {await r.text()}")
            return time.perf_counter() - t

        warm_end = time.perf_counter() + min(1.0, seconds / 3)
        async def worker(record_until: float) -> None:
            nonlocal errors, total
            while time.perf_counter() < record_until:
                total += 1
                try:
                    dt = await one()
                except RuntimeError:
                    errors += 1
                    continue
                if time.perf_counter() > warm_end:
                    latencies.append(dt)
        await asyncio.gather(*(worker(warm_end + seconds) for _ in range(concurrency)))
        elapsed = time.perf_counter() - warm_end
    return {"errors": errors, "rps": len(latencies) / elapsed, "latencies": latencies, "total": total}


def summarize(parts: list[dict]) -> dict:
    """One measurement from the parts of its client processes."""
    latencies = sorted(x for p in parts for x in p["latencies"])
    return {"rps": sum(p["rps"] for p in parts), "errors": sum(p["errors"] for p in parts),
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]}


# ---------------------------------------------------------------- driver

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (Ray runs its replica and proxy in child processes)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (noise-resistant cost per request)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """One variant: its processes (all of them count for CPU), its port and API key."""

    def __init__(self, mode: str, mesh: "MeshBench | None" = None):
        self.mode = mode
        self.port = free_port()
        key_path = tempfile.mktemp()
        self.procs: list[subprocess.Popen] = []
        if mode in ("bare", "gateway"):
            self.procs.append(spawn([__file__, "serve", mode, str(self.port), key_path], "READY"))
            self.key = open(key_path).read() if os.path.exists(key_path) else ""
        elif mode == "ray":
            self.procs.append(spawn([__file__, "serve", "ray", str(self.port), key_path], "READY",
                                    python=RAY_PYTHON))
            self.key = ""
        else:
            self.key = mesh.key
            workers = int(mode.split("-")[1])
            topics = mesh.topics(f"bench-{workers}")
            for _ in range(workers):
                self.procs.append(spawn(["-m", "mesh.node", "--json", "--config", topics, "--topic", MODEL_ID,
                                         "--ops-port", "0"], '"announced"'))
            self.procs.insert(0, spawn(["-m", "gateway", "--config", topics, "--port", str(self.port),
                                        "--keys-db", mesh.keys_db, "--model", MODEL_ID, "--worker-wait", "10",
                                        "--rate", "1e9", "--burst", "1000000000"], "Running on"))
            self.wait_for_workers(workers)

    def wait_for_workers(self, n: int, timeout: float = 30.0) -> None:
        import urllib.request
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            req = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/v1/status",
                                         headers={"Authorization": f"Bearer {self.key}"})
            status = json.load(urllib.request.urlopen(req, timeout=5))
            topic = next((t for t in status["topics"] if t["name"] == MODEL_ID), {"workers": []})
            if sum(w["health"] == "healthy" for w in topic["workers"]) >= n:
                return
            time.sleep(0.1)   # a benchmark's set-up, not a test
        raise RuntimeError(f"{self.mode}: gateway did not see {n} workers in {timeout}s")

    def load(self, concurrency: int, seconds: float, procs: int) -> dict:
        """Load from `procs` client processes sharing `concurrency` (one client must not be the bottleneck)."""
        url = f"http://127.0.0.1:{self.port}/api/v1/inference/{MODEL_ID}"
        procs = max(1, min(procs, concurrency))
        shares = [concurrency // procs + (i < concurrency % procs) for i in range(procs)]
        cpu0 = [self.cpu_seconds(p) for p in self.procs]
        clients = [subprocess.Popen([sys.executable, __file__, "client", url, self.key, str(n), str(seconds)],
                                    stdout=subprocess.PIPE, text=True) for n in shares]
        parts = []
        for c in clients:
            out, _ = c.communicate()
            if c.returncode != 0:
                raise RuntimeError("client failed")
            parts.append(json.loads(out))
        result = summarize(parts)
        total = sum(p["total"] for p in parts)
        used = [1e6 * (self.cpu_seconds(p) - before) / max(total, 1) for p, before in zip(self.procs, cpu0)]
        result["cpu_us"] = sum(used)
        result["workers_cpu_us"] = sum(used[1:]) if self.mode.startswith("mesh") else float("nan")
        return result

    @staticmethod
    def cpu_seconds(proc: subprocess.Popen) -> float:
        """CPU seconds of `proc` and its children (the gateway first in `procs`, then its workers)."""
        total = 0.0
        for pid in process_tree(proc.pid):
            try:
                total += cpu_seconds(pid)
            except OSError:
                pass  # exited between listing and reading
        return total

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait()


def spawn(args: list[str], ready: str, python: str | None = None) -> subprocess.Popen:
    """A process of this benchmark, once a stdout line containing `ready` appeared."""
    proc = subprocess.Popen([python or sys.executable, *args], stdout=subprocess.PIPE, text=True, cwd=_ROOT,
                            env={**os.environ, "PYTHONPATH": _ROOT})
    for line in proc.stdout:
        if ready in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()   # keep the pipe drained
            return proc
    raise RuntimeError(f"{args} exited before printing {ready!r}")


class MeshBench:
    """A bootstrap node, a model folder and a key store shared by the mesh variants."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp()
        self.models = write_model_dir(self.tmp)
        self.keys_db = os.path.join(self.tmp, "keys.sqlite3")
        key_path = os.path.join(self.tmp, "key")
        make_keys(self.keys_db, key_path).close()
        self.key = open(key_path).read()
        empty = os.path.join(self.tmp, "empty.toml")
        open(empty, "w").close()
        self.boot = subprocess.Popen([sys.executable, "-m", "mesh.node", "--json", "--bootstrap-node", "--port", "0",
                                      "--config", empty], stdout=subprocess.PIPE, text=True, cwd=_ROOT,
                                     env={**os.environ, "PYTHONPATH": _ROOT})
        ready = json.loads(self.boot.stdout.readline())
        threading.Thread(target=self.boot.stdout.read, daemon=True).start()
        self.bootstrap = f"{ready['host']}:{ready['port']}"

    def topics(self, namespace: str) -> str:
        """A topics.toml of its own namespace, so each variant's gateway sees only its workers."""
        manifest = json.load(open(os.path.join(self.models, "manifest.json")))["models"][0]
        path = os.path.join(self.tmp, f"{namespace}.toml")
        with open(path, "w") as f:
            f.write(f'''namespace = "{namespace}"
bootstrap = ["{self.bootstrap}"]
[workers]
ops_port = 0
[workers.inference]
model_dir = "{self.models}"
fetch_dir = "{os.path.join(self.tmp, namespace + '-fetch')}"
[[models]]
id = "{MODEL_ID}"
version = "1"
file = "{manifest['file']}"
sha256 = "{manifest['sha256']}"
role = "workers.inference"
''')
        return path

    def stop(self) -> None:
        self.boot.terminate()
        self.boot.wait()


def median_of(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms", "errors", "cpu_us",
                                                               "workers_cpu_us")}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        mode, port = sys.argv[2], int(sys.argv[3])
        if mode == "bare":
            asyncio.run(serve_bare(port))  # the peer: aiohttp on its default loop
        elif mode == "ray":
            serve_ray(port)
        else:
            from gateway.config import GatewayConfig
            from mesh import eventloop
            # as `python -m gateway` runs: on a MeshEventLoop, busy polling at its default
            eventloop.run(serve_gateway(port, sys.argv[4]), busy_poll_s=GatewayConfig().busy_poll_us / 1e6)
        return
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        url, key, c, seconds = sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
        print(json.dumps(asyncio.run(load(url, key or None, c, seconds))))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=2.0, help="measured seconds per point (after 1 s warm-up)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    p.add_argument("--client-procs", type=int, default=2, help="client processes sharing the concurrency")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES), help="variants to run")
    p.add_argument("--ray-python", default=sys.executable,
                   help="a Python with ray[serve], onnxruntime and onnx installed, for the ray variant")
    args = p.parse_args()
    global RAY_PYTHON
    RAY_PYTHON = args.ray_python
    ray_ok = subprocess.run([RAY_PYTHON, "-c", "import ray.serve, onnxruntime, onnx"], capture_output=True).returncode == 0
    modes = ["bare"] + [m for m in args.modes if m != "bare" and (m != "ray" or ray_ok)]
    mesh = MeshBench() if any(m.startswith("mesh") for m in modes) else None
    servers: dict = {}
    runs: dict = {m: {c: [] for c in args.concurrency} for m in modes}
    try:
        # Ray Serve runs last, on its own: its daemons (raylet, GCS, dashboard) take CPU
        # while idle, which would slow every other variant on a small machine
        for phase in ([m for m in modes if m != "ray"], [m for m in modes if m == "ray"]):
            for m in phase:   # all up at once; runs alternate so noise hits them alike
                servers[m] = Server(m, mesh)
            for _ in range(args.rounds):
                for c in args.concurrency:
                    for m in phase:
                        runs[m][c].append(servers[m].load(c, args.seconds, args.client_procs))
    finally:
        for s in servers.values():
            s.stop()
        if mesh is not None:
            mesh.stop()
    results = {m: {c: median_of(runs[m][c]) for c in args.concurrency} for m in modes}
    if "ray" in args.modes and not ray_ok:
        print(f"ray serve: not installed for {RAY_PYTHON} (pip install .[ray], or pass --ray-python)")
    print(f"{'server':<36}{'clients':>8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'req/s vs bare':>15}"
          f"{'by round':>12}{'server CPU us/req':>19}{'CPU vs bare':>13}{'of which workers':>18}")
    for mode in modes:
        for c in args.concurrency:
            r, base = results[mode][c], results["bare"][c]
            # each round's ratio to bare's run of the same round: how far one run may stray
            ratios = [x["rps"] / b["rps"] for x, b in zip(runs[mode][c], runs["bare"][c])]
            spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
            print(f"{MODES[mode]:<36}{c:>8}{r['rps']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['errors']:>8.0f}"
                  f"{r['rps'] / base['rps']:>15.2f}{spread:>12}{r['cpu_us']:>19.0f}{r['cpu_us'] / base['cpu_us']:>13.2f}"
                  f"{'-' if math.isnan(r['workers_cpu_us']) else format(r['workers_cpu_us'], '.0f'):>18}")
    if "ray" in results:
        for c in args.concurrency:
            ray_rps = results["ray"][c]["rps"]
            print(f"{c} clients, req/s against Ray Serve: " + ", ".join(
                f"{MODES[m]} {results[m][c]['rps'] / ray_rps:.1f}x" for m in modes if m != "ray"))


MODES = {"bare": "bare aiohttp+onnxruntime", "gateway": "gateway + in-process worker",
         "mesh-1": "gateway + 1 worker (mesh)", "mesh-2": "gateway + 2 workers (mesh)",
         "ray": "Ray Serve (1 replica)"}
RAY_PYTHON = sys.executable


if __name__ == "__main__":
    main()
