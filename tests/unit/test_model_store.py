"""Content-addressed store: atomic, verified writes; every rejection leaves nothing."""

from __future__ import annotations

import pathlib

import pytest

from workers.models.errors import (BadRequestError, ChecksumError, InvalidModelError,
                                   NotFoundError, TooLargeError, TruncatedError)
from workers.models.onnx_meta import inspect_model
from workers.models.store import TEMP_PREFIX, ContentStore

from .model_files import onnx_bytes, sha256

LIMIT = 1 << 20


def files(root: pathlib.Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def put(store: ContentStore, data: bytes, chunk: int = 64, validate=inspect_model):
    pending = store.begin(sha256(data), len(data))
    for i in range(0, len(data), chunk):
        pending.write(data[i:i + chunk])
    return pending.commit(validate)


def test_commit_makes_file_visible_under_its_sha256(tmp_path):
    store = ContentStore(tmp_path, LIMIT)
    data = onnx_bytes(1)
    pending = store.begin(sha256(data), len(data))
    pending.write(data[:100])
    assert not store.has(sha256(data))
    assert files(tmp_path) == [pending.temp_path.name]
    pending.write(data[100:])
    stored, meta = pending.commit(inspect_model)
    assert stored.sha256 == sha256(data) and stored.size == len(data)
    assert files(tmp_path) == [sha256(data)]
    assert stored.path.read_bytes() == data
    assert [s.name for s in meta.inputs] == ["X"]
    assert store.read(stored.sha256, 10, 20) == data[10:30]
    assert store.read(stored.sha256, len(data) - 5, 100) == data[-5:]


def test_wrong_checksum_leaves_nothing(tmp_path):
    store = ContentStore(tmp_path, LIMIT)
    data = onnx_bytes(1)
    pending = store.begin(sha256(onnx_bytes(2)), len(data))
    pending.write(data)
    with pytest.raises(ChecksumError):
        pending.commit(inspect_model)
    assert files(tmp_path) == []


def test_truncated_upload_leaves_nothing(tmp_path):
    store = ContentStore(tmp_path, LIMIT)
    data = onnx_bytes(1)
    pending = store.begin(sha256(data), len(data))
    pending.write(data[:-1])
    with pytest.raises(TruncatedError):
        pending.commit(inspect_model)
    assert files(tmp_path) == []


def test_more_bytes_than_declared_are_rejected_at_once(tmp_path):
    store = ContentStore(tmp_path, LIMIT)
    data = onnx_bytes(1)
    pending = store.begin(sha256(data), len(data) - 1)
    with pytest.raises(TooLargeError):
        pending.write(data)
    assert files(tmp_path) == []
    with pytest.raises(BadRequestError):
        pending.write(b"x")


def test_declared_size_over_limit_is_rejected_before_any_byte(tmp_path):
    store = ContentStore(tmp_path, 100)
    with pytest.raises(TooLargeError):
        store.begin("a" * 64, 101)
    assert files(tmp_path) == []


def test_not_onnx_leaves_nothing(tmp_path):
    store = ContentStore(tmp_path, LIMIT)
    for data in [b"", b"definitely not a model", onnx_bytes(1)[:-7]]:
        with pytest.raises(InvalidModelError):
            put(store, data)
    assert files(tmp_path) == []


def test_abort_leaves_nothing(tmp_path):
    store = ContentStore(tmp_path, LIMIT)
    data = onnx_bytes(1)
    pending = store.begin(sha256(data), len(data))
    pending.write(data[:50])
    pending.abort()
    pending.abort()
    assert files(tmp_path) == []


def test_bad_sha256_and_size_are_bad_requests(tmp_path):
    store = ContentStore(tmp_path, LIMIT)
    for sha, size in [("xyz", 1), ("a" * 63, 1), (5, 1), ("a" * 64, -1), ("a" * 64, True)]:
        with pytest.raises(BadRequestError):
            store.begin(sha, size)
    with pytest.raises(BadRequestError):
        store.path("../../etc/passwd")


def test_temp_files_from_a_crash_are_removed_on_open(tmp_path):
    store = ContentStore(tmp_path, LIMIT)
    stored, _ = put(store, onnx_bytes(1))
    (tmp_path / f"{TEMP_PREFIX}deadbeef").write_bytes(b"half an upload")
    reopened = ContentStore(tmp_path, LIMIT)
    assert reopened.removed_temp_files == 1
    assert files(tmp_path) == [stored.sha256]


def test_same_file_written_twice_concurrently(tmp_path):
    store = ContentStore(tmp_path, LIMIT)
    data = onnx_bytes(3)
    a = store.begin(sha256(data), len(data))
    b = store.begin(sha256(data), len(data))
    for i in range(0, len(data), 50):
        a.write(data[i:i + 50])
        b.write(data[i:i + 50])
    a.commit(inspect_model)
    b.commit(inspect_model)
    assert files(tmp_path) == [sha256(data)]
    assert store.stat(sha256(data)).size == len(data)


def test_missing_files(tmp_path):
    store = ContentStore(tmp_path, LIMIT)
    with pytest.raises(NotFoundError):
        store.read("b" * 64, 0, 10)
    with pytest.raises(NotFoundError):
        store.stat("b" * 64)
    assert store.remove("b" * 64) is False
