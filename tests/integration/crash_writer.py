"""Child process for test_manager_crash: drives the model library and stops at a
named point, printing the point's name, so the parent can kill -9 it right there.

    python -m tests.integration.crash_writer ROOT POINT

Points: mid-upload, file-committed, row-inserted, row-deleted, loop (adds and
deletes models forever, printing a line after each step).
"""

from __future__ import annotations

import asyncio
import signal
import sys

from tests.unit.model_files import big_onnx_bytes, onnx_bytes, sha256
from workers.models.library import ModelLibrary, validator

LIMIT = 16 << 20


def signal_point(name: str) -> None:
    print(name, flush=True)


async def main(root: str, point: str) -> None:
    lib = ModelLibrary.open(root, LIMIT)
    if point == "mid-upload":
        data = big_onnx_bytes(1)
        pending = lib.store.begin(sha256(data), len(data))
        pending.write(data[: len(data) // 2])
        pending._file.flush()
        signal_point(point)
    elif point == "file-committed":
        data = onnx_bytes(1)
        pending = lib.store.begin(sha256(data), len(data))
        pending.write(data)
        pending.commit(validator("onnx"))
        signal_point(point)
    elif point == "row-inserted":
        data = onnx_bytes(1)
        pending = lib.store.begin(sha256(data), len(data))
        pending.write(data)
        await lib.add(pending, "m", "1", "onnx")
        signal_point(point)
    elif point == "row-deleted":
        data = onnx_bytes(1)
        pending = lib.store.begin(sha256(data), len(data))
        pending.write(data)
        await lib.add(pending, "m", "1", "onnx")
        # The first half of ModelLibrary.delete: the row goes, the file is still there.
        lib.registry.delete("m", "1", deleted=1.0)
        signal_point(point)
    elif point == "loop":
        await loop_forever(lib)
    signal.pause()


async def loop_forever(lib: ModelLibrary) -> None:
    i = 0
    while True:
        data = onnx_bytes(i % 7)
        pending = lib.store.begin(sha256(data), len(data))
        for k in range(0, len(data), 16):
            pending.write(data[k:k + 16])
        await lib.add(pending, f"m{i}", "1", "onnx")
        if i % 3 == 2:
            lib.delete(f"m{i - 1}", "1")
        signal_point(f"step {i}")
        i += 1


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
