"""Shared test fixtures."""

from __future__ import annotations

import pathlib
import shutil

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
NODE_HARNESS = ROOT / "tests" / "interop" / "node"


def node_available() -> bool:
    return shutil.which("node") is not None and (NODE_HARNESS / "node_modules" / "hyperdht").is_dir()


@pytest.fixture(scope="session")
def node_harness() -> pathlib.Path:
    """The folder of the Node interop harness (npm ci'd by scripts/setup)."""
    if not node_available():
        pytest.fail("Node.js harness not installed: run scripts/setup (npm ci in tests/interop/node)")
    return NODE_HARNESS
