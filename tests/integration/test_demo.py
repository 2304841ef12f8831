"""The README's first command: scripts/demo starts the whole local mesh, serves a
real inference through the gateway, and stops everything on Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_demo_starts_the_mesh_and_stops_cleanly_on_ctrl_c(tmp_path, node_harness):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "scripts" / "demo.py"), "--state", str(tmp_path / "demo"),
        "--port", str(free_port(socket.SOCK_STREAM)), "--bootstrap-port", str(free_port(socket.SOCK_DGRAM)),
        "--no-ops", cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    seen: list[str] = []
    try:
        async def until(text: str) -> None:
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, f"demo exited before printing {text!r}:\n" + "".join(seen)
                seen.append(line)
                if text in line:
                    return

        await asyncio.wait_for(until("Press Ctrl-C"), 180)
        out = "".join(seen)
        assert "the model says 8" in out  # the real digit in the example is an 8
        assert "/v2/models/mlp-tiny/infer" in out and "export MESH_API_KEY=" in out
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(until("stopped."), 60)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert "killing it" not in "".join(seen), "a process did not stop on SIGTERM"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
