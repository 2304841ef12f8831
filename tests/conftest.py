"""Shared test fixtures."""

from __future__ import annotations

import os
import pathlib
import shutil

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Workers started by tests (in this process through layered config, or as
# processes that inherit this) run on CPU, so results compare exactly with the
# CPU onnxruntime references on any machine; tests/workers/test_cuda.py names
# the CUDA provider where it tests it.
os.environ.setdefault("MESH_PROVIDERS", "CPUExecutionProvider")
NODE_HARNESS = ROOT / "tests" / "interop" / "node"


def node_available() -> bool:
    return shutil.which("node") is not None and (NODE_HARNESS / "node_modules" / "hyperdht").is_dir()


@pytest.fixture(scope="session")
def node_harness() -> pathlib.Path:
    """The folder of the Node interop harness (npm ci'd by scripts/setup)."""
    if not node_available():
        pytest.fail("Node.js harness not installed: run scripts/setup (npm ci in tests/interop/node)")
    return NODE_HARNESS


@pytest.hookimpl(optionalhook=True)
def pytest_asyncio_loop_factories(config, item):
    """Tests run on the loop the mesh's processes run on (mesh.eventloop)."""
    from mesh.eventloop import new_event_loop

    return {"mesh": new_event_loop}
