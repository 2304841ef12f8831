"""Python UDX stream peer for scripts/bench/stream.py: the same JSON-lines
protocol as tests/interop/node/udx-peer.js (modes echo, sink, source, ping).
Argument `asyncio` puts it on mesh.net.UDPNetwork instead of the batched
socket of mesh.udx.fastnet."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time

from mesh.net import UDPNetwork
from mesh.udx import UDXMux
from mesh.udx.fastnet import BatchUDPNetwork


def out(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main() -> None:
    loop = asyncio.get_running_loop()
    net = UDPNetwork() if sys.argv[1:] == ["asyncio"] else BatchUDPNetwork()
    mux = await UDXMux.bind(net)
    s = mux.create_stream()
    out({"port": mux.address[1], "id": s.local_id})
    cmd = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    s.connect(cmd["remoteId"], ("127.0.0.1", cmd["port"]))
    mode = cmd["mode"]
    if mode == "echo":
        s.on_data = lambda d: s.write(bytes(d))
        s.on_end = s.end
    elif mode == "sink":
        h = hashlib.sha256()
        n = 0
        t0 = 0.0

        def on_data(d):
            nonlocal n, t0
            if not n:
                t0 = time.perf_counter()
            n += len(d)
            h.update(d)

        def on_end():
            out({"bytes": n, "sha256": h.hexdigest(), "seconds": time.perf_counter() - t0})
            s.end()

        s.on_data, s.on_end = on_data, on_end
    elif mode == "source":
        data = os.urandom(cmd["bytes"])
        out({"sha256": hashlib.sha256(data).hexdigest()})
        s.on_data = lambda d: None
        for i in range(0, len(data), 65536):
            if not s.write(data[i : i + 65536]):
                await s.drain()
        s.end()
    elif mode == "ping":
        msg = os.urandom(cmd["size"])
        samples = []
        for _ in range(cmd["count"]):
            t0 = time.perf_counter()
            s.write(msg)
            got = 0
            while got < len(msg):
                got += len(await s.read())
            samples.append((time.perf_counter() - t0) * 1000)
        samples.sort()
        out({"rttMs": sum(samples) / len(samples), "medianMs": samples[len(samples) // 2]})
        s.end()
        s.on_data = lambda d: None
    exc = await asyncio.wait_for(s.closed, 120)
    out({"done": True, "error": repr(exc) if exc else None, "retransmits": s.counters["retransmits"]})
    mux.close()


if __name__ == "__main__":
    asyncio.run(main())
