"""Python full-connection peer for scripts/bench/stream.py (mesh.DHT.create_server /
DHT.connect: Noise IK, UDX, secret-stream): the same JSON-lines protocol as
tests/interop/node/stream-conn-bench.js (modes sink, source, echo, ping).

    python conn_peer.py --bootstrap 127.0.0.1:PORT[,..] [--net asyncio]

--net asyncio puts the DHT (and so UDX) on asyncio's datagram transport with the
kernel's default buffers: the socket Python peers had before batched reads, for
the before/after of docs/benchmarks/stream.md.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from mesh import crypto
from mesh.dht import DHT, DHTConfig
from mesh.net import AsyncioUDPNetwork, UDPNetwork


class _DefaultBufferAsyncio(AsyncioUDPNetwork):
    """asyncio's transport as it was: default socket buffers (no growing)."""

    async def bind(self, host, port, on_datagram):
        ep = await super().bind(host, port, on_datagram)
        ep.set_buffer_size = None  # mesh.udx.mux.grow_buffers skips endpoints without it
        return ep


def out(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main(bootstrap: list[tuple[str, int]], net: str) -> None:
    loop = asyncio.get_running_loop()
    network = _DefaultBufferAsyncio() if net == "asyncio" else UDPNetwork()
    dht = DHT(DHTConfig(bootstrap=tuple(bootstrap), host="127.0.0.1"), network=network)
    await dht.ready()
    incoming: asyncio.Queue = asyncio.Queue()
    server = dht.create_server()
    server.on_connection(incoming.put_nowait)
    kp = crypto.keypair()
    await server.listen(kp)
    out({"publicKey": kp.public_key.hex()})
    cmd = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    if cmd.get("connect"):
        conn = await dht.connect(bytes.fromhex(cmd["connect"]))
    else:
        conn = await incoming.get()
    mode = cmd["mode"]
    if mode == "sink":
        n, t0 = 0, 0.0

        def on_message(m: bytes) -> None:
            nonlocal n, t0
            if not n:
                t0 = time.perf_counter()
            n += len(m)
            if n >= cmd["bytes"]:
                out({"bytes": n, "seconds": time.perf_counter() - t0})

        conn.on_message = on_message
    elif mode == "source":
        conn.on_message = lambda m: None
        chunk, left = bytes(65536), cmd["bytes"]
        while left > 0:
            if not conn.write(chunk if left >= len(chunk) else chunk[:left]):
                await conn.drain()
            left -= len(chunk)
        out({"sent": True})
    elif mode == "echo":
        conn.on_message = conn.write
    elif mode == "ping":
        msg, samples = bytes(cmd["size"]), []
        for _ in range(cmd["count"]):
            t0 = time.perf_counter()
            conn.write(msg)
            got = 0
            while got < len(msg):
                got += len(await conn.recv())
            samples.append((time.perf_counter() - t0) * 1000)
        samples.sort()
        out({"medianMs": samples[len(samples) // 2]})
    await conn.closed


if __name__ == "__main__":
    boot = sys.argv[sys.argv.index("--bootstrap") + 1]
    net = sys.argv[sys.argv.index("--net") + 1] if "--net" in sys.argv else "batch"
    asyncio.run(main([(h, int(p)) for h, p in (b.split(":") for b in boot.split(","))], net))
