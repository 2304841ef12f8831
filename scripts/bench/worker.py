"""Inference worker throughput against raw in-process onnxruntime, same models.

    PYTHONPATH=. python scripts/bench/worker.py [--seconds 0.3 --rounds 5] [--models var/models]
        [--mode inproc,rpc,client | both | all] [--provider cpu|cuda]

For each model (mlp-tiny 64-256-10, mlp-mid 512-2048-2048-512, conv-small
1x3x64x64 conv net), one run measures:

* raw: onnxruntime `InferenceSession.run` in this process on one thread, with
  the worker's session options: 1 row per call, and 32 rows per call;
* worker: N concurrent callers (1, 8, 32), each sending 1-row (`--rows`) `infer` requests
  in a loop, with batching on and off, through the full path (request checks,
  input validation, admission/queue, batcher, executor, split):
  - mode "inproc": the worker's infer handler called in this process
    (`worker.call("infer", ...)`), no RPC hop;
  - mode "rpc": the workers are `python -m mesh.node --topic inference`
    processes (scripts/bench/worker_mesh.py) and the callers are asyncio tasks
    in this process sending `infer` over RPC on one real Swarm connection per
    worker (UDX over 127.0.0.1, Noise, secret-stream, msgpack tensors), one
    request per call (`peer.request`);
  - mode "client": the same workers and connections, the callers going through
    `workers.inference_client.InferenceClient`, which joins concurrent calls for
    a model the worker batches into one request (its rows sliced back per caller).

--provider cuda runs the raw baseline and the workers on onnxruntime-gpu's
CUDA provider (the workers are configured with providers =
["CUDAExecutionProvider"], so a CUDA provider that fails to start fails the run
instead of measuring CPU).

Each cell is the median of interleaved rounds (the machine is shared and
noisy). It prints rows/s with ratios: batched/unbatched, worker/raw-1-row,
worker-batched@32/raw-batch-32. Keep runs short: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort  # the raw baseline, outside the worker

from mesh import eventloop
from workers.errors import ModelLoadFailed
from workers.inference import InferenceConfig, InferenceWorker
from workers.inference.runner import RunnerConfig, check_started, prepare_cuda, session_options, with_options

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
MODELS = {"mlp-tiny": (64,), "mlp-mid": (512,), "conv-small": (3, 64, 64)}
CALLERS = (1, 8, 32)


class Raw:
    """The baseline: one onnxruntime session called from this thread."""

    def __init__(self, path: Path, shape: tuple, threads: int, provider: str):
        # the worker's session and CUDA options (threads, no spinning, float32
        # matmuls, heuristic conv algorithms), onnxruntime called directly
        config = RunnerConfig(providers=(provider,), intra_op_threads=threads)
        self.sess = ort.InferenceSession(str(path), session_options(config),
                                         providers=with_options([provider], config), enable_fallback=0)
        try:
            notes = prepare_cuda() if provider == PROVIDERS["cuda"] else ""
            check_started(config.providers, [provider], self.sess.get_providers(), notes, str(path))
        except ModelLoadFailed as e:
            raise SystemExit(str(e)) from None
        rng = np.random.default_rng(0)
        self.x = {rows: rng.standard_normal((rows, *shape)).astype(np.float32) for rows in (1, 32)}
        for x in self.x.values():
            self.sess.run(None, {"x": x})

    def rows_per_s(self, rows: int, seconds: float) -> float:
        x = {"x": self.x[rows]}
        n, t0 = 0, time.perf_counter()
        end = t0 + seconds
        while time.perf_counter() < end:
            self.sess.run(None, x)
            n += 1
        return n * rows / (time.perf_counter() - t0)


async def worker_rows_per_s(call, model: str, shape: tuple, callers: int,
                            seconds: float, rows: int = 1) -> tuple[float, float]:
    """(rows/s, mean rows per onnxruntime run) for `callers` closed-loop callers
    sending `rows` rows per request; `call(method, value)` reaches the worker
    (in-process or over RPC)."""
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((rows, *shape)).astype(np.float32) for _ in range(callers)]
    loop = asyncio.get_running_loop()

    async def caller(x, end):
        n = 0
        while loop.time() < end:
            await call("infer", {"model": model, "inputs": {"x": x}})
            n += 1
        return n

    await asyncio.gather(*[caller(x, loop.time() + 0.05) for x in inputs])  # warm-up
    before = (await call("stats", None))["models"][f"{model}@1"]
    t0 = loop.time()
    counts = await asyncio.gather(*[caller(x, t0 + seconds) for x in inputs])
    elapsed = loop.time() - t0
    after = (await call("stats", None))["models"][f"{model}@1"]
    runs = after["batches"] - before["batches"]
    return sum(counts) * rows / elapsed, (after["rows"] - before["rows"]) / max(1, runs)


def worker_settings(threads: int, executor_threads: int, max_batch_size: int = 32,
                    provider: str = PROVIDERS["cpu"]) -> dict:
    return {"intra_op_threads": threads, "executor_threads": executor_threads,
            "max_concurrent": executor_threads, "max_queue": 256, "max_batch_size": max_batch_size,
            "providers": (provider,)}


async def inproc_workers(model_dir: Path, model: str, settings: dict) -> dict:
    """{variant: InferenceWorker} started in this process for `model`."""
    workers = {}
    for batching in (False, True):
        config = InferenceConfig(model_dir=str(model_dir), ops_port=0, serve=(model,), batching=batching,
                                 **settings)
        workers["batched" if batching else "unbatched"] = w = InferenceWorker(config)
        await w.start()
    return workers


def rpc_calls(mesh) -> dict:
    """{variant: call(method, value)} over the mesh workers' RPC peers."""
    def call_on(peer):
        return lambda method, value: peer.request(method, value, timeout=60)
    return {variant: call_on(peer) for variant, peer in mesh.peers.items()}


def client_calls(clients: dict) -> dict:
    """{variant: call(method, value)} through InferenceClients on the same peers."""
    def call_on(client):
        return lambda method, value: client.request(method, value, timeout=60)
    return {variant: call_on(client) for variant, client in clients.items()}


async def bench(model_dir: Path, seconds: float, rounds: int, threads: int, executor_threads: int,
                modes: list[str], max_batch_size: int = 32, provider: str = PROVIDERS["cpu"],
                rows: int = 1, join_max_rows: int = -1) -> list[dict]:
    """Cells are measured in interleaved rounds (raw, unbatched, batched, ...) and the
    median of the rounds is kept, so a burst of load from other processes on the
    shared machine hits all variants alike instead of one cell."""
    settings = worker_settings(threads, executor_threads, max_batch_size, provider)
    mesh = None
    clients: dict = {}
    if "rpc" in modes or "client" in modes:
        from worker_mesh import MeshWorkers  # scripts/bench/worker_mesh.py (mesh processes)
        mesh = await MeshWorkers(model_dir, list(MODELS), settings).__aenter__()
    if "client" in modes:
        from workers.inference_client import InferenceClient
        clients = {variant: InferenceClient(peer, timeout=60, max_rows=join_max_rows)
                   for variant, peer in mesh.peers.items()}
        for client in clients.values():
            await client.refresh()
    results = []
    try:
        for model, shape in MODELS.items():
            raw = Raw(model_dir / f"{model}-1.onnx", shape, threads, provider)
            calls, workers = {}, {}
            if "inproc" in modes:
                workers = await inproc_workers(model_dir, model, settings)
                calls.update({f"inproc/{k}": w.call for k, w in workers.items()})
            if "rpc" in modes:
                calls.update({f"rpc/{k}": c for k, c in rpc_calls(mesh).items()})
            if clients:
                calls.update({f"client/{k}": c for k, c in client_calls(clients).items()})
            samples: dict[str, list[float]] = {}
            for r in range(rounds):
                samples.setdefault("raw_1", []).append(raw.rows_per_s(1, seconds))
                samples.setdefault("raw_32", []).append(raw.rows_per_s(32, seconds))
                for c in CALLERS:
                    for key, call in (list(calls.items()) if r % 2 == 0 else list(calls.items())[::-1]):
                        rate, mean_batch = await worker_rows_per_s(call, model, shape, c, seconds, rows)
                        samples.setdefault(f"{key}_{c}", []).append(rate)
                        samples.setdefault(f"{key}_{c}_mean_batch", []).append(mean_batch)
            for w in workers.values():
                await w.stop()
            row = {"model": model, **{k: statistics.median(v) for k, v in samples.items()}}
            results.append(row)
            for mode in modes:
                print_row(row, mode)
    finally:
        for client in clients.values():
            await client.close()
        if mesh is not None:
            await mesh.__aexit__(None, None, None)
    return results


def print_row(r: dict, mode: str) -> None:
    print(f"\n{r['model']} ({mode}): raw onnxruntime 1 row/call {r['raw_1']:,.0f} rows/s, "
          f"32 rows/call {r['raw_32']:,.0f} rows/s")
    print(f"  {'callers':>7} {'unbatched':>11} {'batched':>11} {'mean batch':>10} {'batched/unb':>11} "
          f"{'unb/raw1':>8} {'bat/raw32':>9}")
    for c in CALLERS:
        u, b = r[f"{mode}/unbatched_{c}"], r[f"{mode}/batched_{c}"]
        print(f"  {c:>7} {u:>11,.0f} {b:>11,.0f} {r[f'{mode}/batched_{c}_mean_batch']:>10.1f} {b / u:>11.2f}x "
              f"{u / r['raw_1']:>7.2f}x {b / r['raw_32']:>8.2f}x")


def markdown(results: list[dict], modes: list[str]) -> str:
    lines = ["| path | model | callers | unbatched rows/s | batched rows/s | mean rows/run | batched / unbatched "
             "| unbatched / raw 1-row | batched / raw batch-32 |", "|---|---|---|---|---|---|---|---|---|"]
    for mode in modes:
        for r in results:
            for c in CALLERS:
                u, b = r[f"{mode}/unbatched_{c}"], r[f"{mode}/batched_{c}"]
                lines.append(f"| {mode} | {r['model']} | {c} | {u:,.0f} | {b:,.0f} | "
                             f"{r[f'{mode}/batched_{c}_mean_batch']:.1f} | "
                             f"{b / u:.2f}x | {u / r['raw_1']:.2f}x | {b / r['raw_32']:.2f}x |")
    lines += ["", "| model | raw 1 row/call rows/s | raw 32 rows/call rows/s |", "|---|---|---|"]
    lines += [f"| {r['model']} | {r['raw_1']:,.0f} | {r['raw_32']:,.0f} |" for r in results]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.3, help="measuring time per cell and round")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    ap.add_argument("--models", default="", help="folder from scripts/make_models.py (default: build to a temp dir)")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (raw and worker)")
    ap.add_argument("--executor-threads", type=int, default=2, help="worker executor threads = max_concurrent")
    ap.add_argument("--max-batch-size", type=int, default=32,
                    help="the batched worker's rows per run (16 lets two runs overlap with 32 callers)")
    ap.add_argument("--only", default="", help="comma-separated subset of " + ",".join(MODELS))
    ap.add_argument("--json", default="", help="also write the numbers to this file")
    ap.add_argument("--rows", type=int, default=1,
                    help="rows per infer request (1: the issue's cells; more: what a client batching "
                         "its own rows gets)")
    ap.add_argument("--provider", choices=tuple(PROVIDERS), default="cpu",
                    help="onnxruntime execution provider of the raw baseline and the workers")
    ap.add_argument("--mode", default="inproc",
                    help="comma-separated: inproc (the worker called in-process), rpc (mesh.node worker "
                         "processes, one request per call), client (the same through InferenceClient, "
                         "concurrent calls joined); both = inproc,rpc; all = the three")
    ap.add_argument("--join-max-rows", type=int, default=-1,
                    help="client mode: InferenceClient's max_rows (-1: half the worker's batch size)")
    args = ap.parse_args(argv)
    if args.rows < 1:
        ap.error("--rows must be 1 or more")
    modes = {"both": ["inproc", "rpc"], "all": ["inproc", "rpc", "client"]}.get(args.mode, args.mode.split(","))
    if not modes or set(modes) - {"inproc", "rpc", "client"}:
        ap.error(f"--mode: inproc, rpc, client (comma-separated), both or all; got {args.mode!r}")
    if args.models:
        model_dir = Path(args.models)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        from scripts.make_models import write_models
        model_dir = Path(tempfile.mkdtemp(prefix="bench-models-"))
        write_models(model_dir, list(MODELS))
    provider = PROVIDERS[args.provider]
    if args.provider == "cuda":
        prepare_cuda()
    print(f"worker benchmark ({'; '.join(modes)}, {provider}, {args.rows} row(s) per request): "
          f"infer through validate/queue/batch, "
          f"{args.rounds} interleaved rounds of {args.seconds}s per cell, medians; onnxruntime {ort.__version__}, intra-op threads {args.threads}, "
          f"worker executor threads {args.executor_threads}; {platform.processor() or platform.machine()}")
    for name in [m for m in args.only.split(",") if m] and set(MODELS) - set(args.only.split(",")):
        del MODELS[name]
    results = eventloop.run(bench(model_dir, args.seconds, args.rounds, args.threads, args.executor_threads, modes,
                                args.max_batch_size, provider, args.rows, args.join_max_rows))
    print("\n" + markdown(results, modes))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
