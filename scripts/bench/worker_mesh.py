"""Inference workers as `python -m mesh.node` processes, for scripts/bench/worker.py --mode rpc.

    async with MeshWorkers(model_dir, models, settings) as mesh:
        peer = mesh.peers["batched"]           # a mesh.rpc.RpcPeer on a real Swarm connection
        await peer.request("infer", {...})

Starts a bootstrap node and one worker process per variant ("unbatched":
batching = false, "batched": the default), each a pool worker (`--topic
inference`) that preloads the given models from model_dir; this process joins
the topic with a MeshRuntime client and opens one secure connection (UDX on
127.0.0.1, Noise, secret-stream) and one RPC channel per worker. Each worker's
stderr goes to a log file in the temp folder.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

from mesh import crypto
from mesh.runtime import MeshRuntime, RuntimeConfig
from mesh.topics import topic_key

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "bench-worker-rpc"
DEADLINE = 60.0
VARIANTS = {"unbatched": "false", "batched": "true"}


async def _next_event(proc: asyncio.subprocess.Process, name: str, log: Path, **fields) -> dict:
    async def read():
        while line := await proc.stdout.readline():
            event = json.loads(line)
            if event["event"] == name and all(event.get(k) == v for k, v in fields.items()):
                return event
        raise RuntimeError(f"process exited before {name}; see {log}")
    return await asyncio.wait_for(read(), DEADLINE)


class MeshWorkers:
    def __init__(self, model_dir: Path, models: list[str], settings: dict[str, object]):
        self.model_dir = Path(model_dir).resolve()
        self.models = models
        self.settings = settings
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-worker-rpc-"))
        self.procs: list[asyncio.subprocess.Process] = []
        self.runtime: MeshRuntime | None = None
        self.peers: dict[str, object] = {}

    def _config(self) -> Path:
        manifest = json.loads((self.model_dir / "manifest.json").read_text())
        lines = [f'namespace = "{NAMESPACE}"', "bootstrap = []", "[topics.inference]", 'role = "workers.inference"',
                 "[workers]", 'log_level = "WARNING"', "[workers.inference]", "ops_port = 0",
                 f'model_dir = "{self.model_dir}"', "network_models = false"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in self.settings.items()]
        for m in manifest["models"]:
            if m["id"] in self.models:
                lines += ["[[models]]", f'id = "{m["id"]}"', f'file = "{m["file"]}"', f'sha256 = "{m["sha256"]}"',
                          'role = "workers.inference"']
        path = self.tmp / "topics.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    async def _spawn(self, name: str, *args: str) -> tuple[asyncio.subprocess.Process, Path]:
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mesh.node", "--json", *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
                stderr=err, env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.procs.append(proc)
        return proc, log

    async def __aenter__(self) -> "MeshWorkers":
        try:
            config = str(self._config())
            boot, log = await self._spawn("bootstrap", "--bootstrap-node", "--port", "0", "--config", config)
            ready = await _next_event(boot, "ready", log)
            bootstrap = f"{ready['host']}:{ready['port']}"
            keys = {}
            topic = topic_key(NAMESPACE, "inference")
            for variant, batching in VARIANTS.items():
                proc, log = await self._spawn(variant, "--config", config, "--bootstrap", bootstrap, "--topic",
                                              "inference", "--serve", ",".join(self.models), "--batching", batching)
                keys[variant] = bytes.fromhex((await _next_event(proc, "ready", log))["public_key"])
                await _next_event(proc, "announced", log, topic=topic.hex())
            host, port = bootstrap.rsplit(":", 1)
            self.runtime = MeshRuntime(RuntimeConfig(keypair=crypto.keypair(), bootstrap=((host, int(port)),)))
            await self.runtime.start()
            self.runtime.swarm.join(topic, server=False, client=True)
            for variant, key in keys.items():
                conn = await self.runtime.connection(public_key=key, timeout=DEADLINE)
                self.peers[variant] = self.runtime.peer(conn)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        if self.runtime is not None:
            await self.runtime.stop()
        for proc in self.procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
