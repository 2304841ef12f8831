"""kill -9 of a process writing models, at points it signals: after a restart there
is no partial model, no row without its file, no file without its row."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import sqlite3
import sys

import pytest

from workers.models.library import ModelLibrary
from workers.models.store import TEMP_PREFIX

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


async def run_until(tmp_path: pathlib.Path, point: str, lines: int = 1) -> pathlib.Path:
    """Start the writer, wait for `lines` signal lines, kill -9 it; returns its root."""
    root = tmp_path / "lib"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.integration.crash_writer", str(root), point,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        for _ in range(lines):
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, (await proc.stderr.read()).decode()
    finally:
        proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 30) == -signal.SIGKILL
    return root


def names(root: pathlib.Path) -> list[str]:
    return sorted(p.name for p in (root / "files").iterdir())


def assert_consistent(lib: ModelLibrary) -> None:
    files = set(lib.store.hashes())
    assert lib.registry.hashes() == files
    assert not any(n.startswith(TEMP_PREFIX) for n in names(lib.store.root.parent))
    for entry in lib.registry.list():
        assert lib.store.stat(entry.sha256).size == entry.size


async def test_killed_mid_upload_leaves_no_partial_model(tmp_path):
    root = await run_until(tmp_path, "mid-upload")
    assert any(n.startswith(TEMP_PREFIX) for n in names(root))
    lib = ModelLibrary.open(root, 16 << 20)
    assert lib.reconcile_report.temp_files_removed == 1
    assert names(root) == [] and lib.registry.list() == []


async def test_killed_between_file_and_row_leaves_no_orphan(tmp_path):
    root = await run_until(tmp_path, "file-committed")
    assert len(names(root)) == 1
    lib = ModelLibrary.open(root, 16 << 20)
    assert lib.reconcile_report.files_without_row == 1
    assert names(root) == [] and lib.registry.list() == []


async def test_killed_after_row_keeps_the_model(tmp_path):
    root = await run_until(tmp_path, "row-inserted")
    lib = ModelLibrary.open(root, 16 << 20)
    [entry] = lib.registry.list()
    assert names(root) == [entry.sha256]
    assert_consistent(lib)


async def test_killed_between_row_delete_and_file_removal(tmp_path):
    root = await run_until(tmp_path, "row-deleted")
    assert len(names(root)) == 1
    lib = ModelLibrary.open(root, 16 << 20)
    assert names(root) == [] and lib.registry.list() == []
    assert [(t.id, t.version) for t in lib.registry.tombstones()] == [("m", "1")]


@pytest.mark.parametrize("steps", [3, 11])
async def test_killed_at_an_arbitrary_point_of_a_busy_writer(tmp_path, steps):
    root = await run_until(tmp_path, "loop", lines=steps)
    db = sqlite3.connect(root / "registry.sqlite3")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    lib = ModelLibrary.open(root, 16 << 20)
    assert_consistent(lib)
    assert len(lib.registry.list()) >= steps - steps // 3
