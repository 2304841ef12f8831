"""`python -m mesh.node` processes on loopback find each other through a bootstrap node."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import pytest

from mesh.topics import topic_key

pytestmark = pytest.mark.slow
DEADLINE = 30.0


async def spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mesh.node", "--json", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def next_event(proc, timeout=DEADLINE) -> dict:
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    assert line, (await proc.stderr.read()).decode()
    return json.loads(line)


async def stop(proc) -> list[dict]:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(proc.communicate(), DEADLINE)
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


async def test_five_members_find_each_other(tmp_path):
    config = tmp_path / "topics.toml"
    config.write_text('namespace = "cli-test"\nbootstrap = []\n')
    boot = await spawn("--bootstrap-node", "--port", "0", "--config", str(config))
    procs = []
    try:
        ready = await next_event(boot)
        assert ready["event"] == "ready"
        addr = f"{ready['host']}:{ready['port']}"
        for i in range(5):
            procs.append(await spawn("--bootstrap", addr, "--topic", "demo", "--seed", f"{i + 1:02x}" * 32,
                                     "--config", str(config), "--lookup-interval", "0.5"))
        keys = {}
        for p in procs:
            ev = await next_event(p)
            assert ev["event"] == "ready"
            keys[p] = ev["public_key"]
        topic = topic_key("cli-test", "demo").hex()

        async def collect(p):
            found = set()
            while len(found) < 4:
                ev = await next_event(p)
                if ev["event"] == "peer":
                    assert ev["topic"] == topic
                    found.add(ev["public_key"])
            return found

        results = await asyncio.wait_for(asyncio.gather(*[collect(p) for p in procs]), DEADLINE)
        for p, found in zip(procs, results):
            assert found == set(keys.values()) - {keys[p]}
    finally:
        for p in procs:
            events = await stop(p)
            assert p.returncode == 0 and events[-1]["event"] == "stopped"
        events = await stop(boot)
        assert boot.returncode == 0


async def test_help_documents_every_flag():
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "mesh.node", "--help",
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), DEADLINE)
    text = out.decode()
    for flag in ["--bootstrap-node", "--bootstrap", "--topic", "--topic-key", "--no-announce", "--no-lookup",
                 "--seed", "--key-file", "--config", "--json", "--host", "--port"]:
        assert flag in text
