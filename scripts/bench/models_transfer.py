"""Model manager transfer speed: a verified chunked upload into a ModelManager and a
verified peer-to-peer fetch out of it, beside the floor for the same bytes (read,
sha256, write to a new file and fsync), as ratios. In process, so it measures the
store, registry and protocol work, not the network.

    PYTHONPATH=. .venv/bin/python scripts/bench/models_transfer.py [--mib 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.unit.manager_peers import LocalPeer  # noqa: E402
from tests.unit.model_files import onnx_bytes  # noqa: E402
from workers.models.manager import ManagerConfig, ModelManager  # noqa: E402
from workers.models.onnx_meta import inspect_model  # noqa: E402
from workers.models.source import NetworkModelSource  # noqa: E402
from workers.models.store import ContentStore  # noqa: E402
from workers.models.upload import upload_file  # noqa: E402


def floor_copy(src: pathlib.Path, dst: pathlib.Path) -> None:
    """The least any verified store must do: read, hash, write, fsync."""
    digest = hashlib.sha256()
    with open(src, "rb") as f, open(dst, "wb") as g:
        while block := f.read(1 << 20):
            digest.update(block)
            g.write(block)
        g.flush()
        os.fsync(g.fileno())
    digest.hexdigest()


async def run(mib: int, repeat: int) -> None:
    side = int((mib * (1 << 20) / 4) ** 0.5)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench-models-"))
    model = tmp / "model.onnx"
    model.write_bytes(onnx_bytes(0, n_in=side, n_out=side))
    size = model.stat().st_size
    rows = {"floor: read+sha256+write+fsync": [], "onnx validation alone": [],
            "upload to manager (1 MiB chunks)": [], "fetch from manager (window 4)": []}
    for i in range(repeat):
        t = time.perf_counter()
        floor_copy(model, tmp / f"copy{i}")
        rows["floor: read+sha256+write+fsync"].append(time.perf_counter() - t)
        (tmp / f"copy{i}").unlink()
        t = time.perf_counter()
        inspect_model(model)
        rows["onnx validation alone"].append(time.perf_counter() - t)

        manager = ModelManager(ManagerConfig(data_dir=str(tmp / f"m{i}"), replicate_interval_s=0,
                                             max_model_bytes=size))
        await manager.start()
        t = time.perf_counter()
        await upload_file(LocalPeer(manager), model, "bench", "1")
        rows["upload to manager (1 MiB chunks)"].append(time.perf_counter() - t)
        source = NetworkModelSource(ContentStore(tmp / f"cache{i}", size), lambda: [LocalPeer(manager)])
        t = time.perf_counter()
        await source.fetch("bench", "1")
        rows["fetch from manager (window 4)"].append(time.perf_counter() - t)
        await manager.stop()

    floor = statistics.median(rows["floor: read+sha256+write+fsync"])
    print(f"model file: {size / 2**20:.1f} MiB, median of {repeat}")
    print(f"{'operation':36} {'seconds':>8} {'MiB/s':>8} {'x floor':>8}")
    for name, times in rows.items():
        med = statistics.median(times)
        print(f"{name:36} {med:8.3f} {size / 2**20 / med:8.1f} {med / floor:8.2f}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mib", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    asyncio.run(run(a.mib, a.repeat))


if __name__ == "__main__":
    main()
