"""Inference worker throughput against raw in-process onnxruntime, same models.

    PYTHONPATH=. python scripts/bench/worker.py [--seconds 1.0] [--models var/models]

For each model (mlp-tiny 64-256-10, mlp-mid 512-2048-2048-512, conv-small
1x3x64x64 conv net), one run measures:

* raw: onnxruntime `InferenceSession.run` in this process on one thread, with
  the worker's session options: 1 row per call, and 32 rows per call;
* worker: N concurrent callers (1, 8, 32), each sending 1-row `infer` requests
  in a loop, with batching on and off. The worker's infer handler is called
  IN-PROCESS (`worker.call("infer", ...)`) through the full path (request
  checks, input validation, admission/queue, batcher, executor, split); there
  is no RPC hop yet.

and prints rows/s with ratios: batched/unbatched, worker/raw-1-row,
worker-batched@32/raw-batch-32. Keep runs short: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort  # the raw baseline, outside the worker

from workers.inference import InferenceConfig, InferenceWorker

MODELS = {"mlp-tiny": (64,), "mlp-mid": (512,), "conv-small": (3, 64, 64)}
CALLERS = (1, 8, 32)


def raw_rows_per_s(path: Path, shape: tuple, rows: int, seconds: float, threads: int) -> float:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((rows, *shape)).astype(np.float32)
    for _ in range(3):
        sess.run(None, {"x": x})
    n, t0 = 0, time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end:
        sess.run(None, {"x": x})
        n += 1
    return n * rows / (time.perf_counter() - t0)


async def worker_rows_per_s(config: InferenceConfig, model: str, shape: tuple, callers: int,
                            seconds: float) -> tuple[float, float]:
    """(rows/s, mean rows per onnxruntime run)."""
    w = InferenceWorker(config)
    await w.start()
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((1, *shape)).astype(np.float32) for _ in range(callers)]
    loop = asyncio.get_running_loop()

    async def caller(x, end):
        n = 0
        while loop.time() < end:
            await w.call("infer", {"model": model, "inputs": {"x": x}})
            n += 1
        return n

    await asyncio.gather(*[caller(x, loop.time() + 0.2) for x in inputs])  # warm-up
    before = (await w.call("stats"))["models"][f"{model}@1"]
    t0 = loop.time()
    counts = await asyncio.gather(*[caller(x, t0 + seconds) for x in inputs])
    elapsed = loop.time() - t0
    after = (await w.call("stats"))["models"][f"{model}@1"]
    await w.stop()
    runs = after["batches"] - before["batches"]
    return sum(counts) / elapsed, (after["rows"] - before["rows"]) / max(1, runs)


async def bench(model_dir: Path, seconds: float, threads: int, executor_threads: int) -> list[dict]:
    results = []
    for model, shape in MODELS.items():
        path = model_dir / f"{model}-1.onnx"
        raw1 = raw_rows_per_s(path, shape, 1, seconds, threads)
        raw32 = raw_rows_per_s(path, shape, 32, seconds, threads)
        row = {"model": model, "raw_1": raw1, "raw_32": raw32}
        for batching in (False, True):
            config = InferenceConfig(model_dir=str(model_dir), ops_port=0, serve=(model,), batching=batching,
                                     intra_op_threads=threads, executor_threads=executor_threads,
                                     max_concurrent=executor_threads, max_queue=256, require_sha256=True)
            for c in CALLERS:
                rate, mean_batch = await worker_rows_per_s(config, model, shape, c, seconds)
                key = "batched" if batching else "unbatched"
                row[f"{key}_{c}"] = rate
                row[f"{key}_{c}_mean_batch"] = mean_batch
        results.append(row)
        print_row(row)
    return results


def print_row(r: dict) -> None:
    print(f"\n{r['model']}: raw onnxruntime 1 row/call {r['raw_1']:,.0f} rows/s, 32 rows/call {r['raw_32']:,.0f} rows/s")
    print(f"  {'callers':>7} {'unbatched':>11} {'batched':>11} {'mean batch':>10} {'batched/unb':>11} "
          f"{'unb/raw1':>8} {'bat/raw32':>9}")
    for c in CALLERS:
        u, b = r[f"unbatched_{c}"], r[f"batched_{c}"]
        print(f"  {c:>7} {u:>11,.0f} {b:>11,.0f} {r[f'batched_{c}_mean_batch']:>10.1f} {b / u:>11.2f}x "
              f"{u / r['raw_1']:>7.2f}x {b / r['raw_32']:>8.2f}x")


def markdown(results: list[dict], args) -> str:
    lines = ["| model | callers | unbatched rows/s | batched rows/s | mean rows/run | batched / unbatched "
             "| unbatched / raw 1-row | batched / raw batch-32 |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for c in CALLERS:
            u, b = r[f"unbatched_{c}"], r[f"batched_{c}"]
            lines.append(f"| {r['model']} | {c} | {u:,.0f} | {b:,.0f} | {r[f'batched_{c}_mean_batch']:.1f} | "
                         f"{b / u:.2f}x | {u / r['raw_1']:.2f}x | {b / r['raw_32']:.2f}x |")
    lines += ["", "| model | raw 1 row/call rows/s | raw 32 rows/call rows/s |", "|---|---|---|"]
    lines += [f"| {r['model']} | {r['raw_1']:,.0f} | {r['raw_32']:,.0f} |" for r in results]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="measuring time per cell")
    ap.add_argument("--models", default="", help="folder from scripts/make_models.py (default: build to a temp dir)")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (raw and worker)")
    ap.add_argument("--executor-threads", type=int, default=2, help="worker executor threads = max_concurrent")
    ap.add_argument("--json", default="", help="also write the numbers to this file")
    args = ap.parse_args(argv)
    if args.models:
        model_dir = Path(args.models)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        from scripts.make_models import write_models
        model_dir = Path(tempfile.mkdtemp(prefix="bench-models-"))
        write_models(model_dir, list(MODELS))
    print(f"worker benchmark: infer handler called in-process through validate/queue/batch (no RPC hop); "
          f"{args.seconds}s per cell; onnxruntime {ort.__version__}, intra-op threads {args.threads}, "
          f"worker executor threads {args.executor_threads}; {platform.processor() or platform.machine()}")
    results = asyncio.run(bench(model_dir, args.seconds, args.threads, args.executor_threads))
    print("\n" + markdown(results, args))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
