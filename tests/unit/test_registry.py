"""Registry rows, the library that keeps files and rows together, deletes, merges."""

from __future__ import annotations

import asyncio

import pytest

from workers.models.errors import (BadRequestError, ChecksumError, ConflictError,
                                   InvalidModelError, NotFoundError)
from workers.models.library import ModelLibrary
from workers.models.registry import ModelEntry, Registry, Tombstone

from .model_files import onnx_bytes, sha256

LIMIT = 4 << 20


def open_library(tmp_path) -> ModelLibrary:
    return ModelLibrary.open(tmp_path / "lib", LIMIT)


async def add(library: ModelLibrary, data: bytes, model_id: str, version: str, **kw):
    pending = library.store.begin(sha256(data), len(data))
    pending.write(data)
    return await library.add(pending, model_id, version, "onnx", **kw)


def stored_files(library: ModelLibrary) -> set[str]:
    return {p.name for p in library.store.root.iterdir()}


def entry(model_id="m", version="1", sha="a" * 64, created=1.0) -> ModelEntry:
    return ModelEntry(model_id, version, "onnx", sha, 10, (), (), created, ("t",))


def test_registry_rows_round_trip(tmp_path):
    reg = Registry(tmp_path / "r.sqlite3")
    reg.insert(entry(version="1", created=1.0))
    reg.insert(entry(version="2", created=2.0, sha="b" * 64))
    reg.insert(entry(model_id="other", created=3.0))
    assert reg.get("m").version == "2"
    assert reg.get("m", "1").sha256 == "a" * 64
    assert [e.version for e in reg.versions("m")] == ["1", "2"]
    assert [e.key for e in reg.list(tag="t")] == [("m", "1"), ("m", "2"), ("other", "1")]
    assert reg.list(model_type="pytorch") == []
    assert reg.references("a" * 64) == 2
    with pytest.raises(NotFoundError):
        reg.get("nope")
    with pytest.raises(NotFoundError):
        reg.versions("nope")
    reg.close()
    reopened = Registry(tmp_path / "r.sqlite3")
    assert reopened.get("m", "2") == entry(version="2", created=2.0, sha="b" * 64)


def test_insert_same_key_same_sha_is_idempotent_other_sha_conflicts(tmp_path):
    reg = Registry(tmp_path / "r.sqlite3")
    first = reg.insert(entry(created=1.0))
    assert reg.insert(entry(created=5.0)) == first
    with pytest.raises(ConflictError):
        reg.insert(entry(sha="c" * 64))
    assert reg.get("m", "1") == first


def test_entry_wire_round_trip_and_rejects_garbage():
    e = entry()
    assert ModelEntry.from_wire(e.to_wire()) == e
    for bad in [None, [], {}, {**e.to_wire(), "sha256": "zz"}, {**e.to_wire(), "size": -1},
                {**e.to_wire(), "id": ""}, {**e.to_wire(), "tags": "x"},
                {**e.to_wire(), "inputs": [{"name": "x"}]}, {**e.to_wire(), "created": "now"},
                {**e.to_wire(), "outputs": [{"name": "y", "dtype": "f", "shape": [1.5]}]}]:
        with pytest.raises(BadRequestError):
            ModelEntry.from_wire(bad)


async def test_library_add_reads_specs_and_rejections_leave_nothing(tmp_path):
    lib = open_library(tmp_path)
    data = onnx_bytes(1)
    e = await add(lib, data, "lin", "1", tags=("demo",))
    assert e.sha256 == sha256(data) and e.size == len(data)
    assert e.inputs[0].name == "X" and e.inputs[0].shape == ("N", 4)
    assert e.outputs[0].dtype == "float32"
    assert stored_files(lib) == {sha256(data)}

    junk = b"not onnx at all"
    with pytest.raises(InvalidModelError):
        await add(lib, junk, "junk", "1")
    pending = lib.store.begin(sha256(onnx_bytes(2)), len(data))
    pending.write(data)
    with pytest.raises(ChecksumError):
        await lib.add(pending, "bad", "1", "onnx")
    with pytest.raises(ConflictError):
        await add(lib, onnx_bytes(3), "lin", "1")
    assert stored_files(lib) == {sha256(data)}
    assert [x.key for x in lib.registry.list()] == [("lin", "1")]


async def test_delete_removes_file_only_when_unreferenced(tmp_path):
    lib = open_library(tmp_path)
    data = onnx_bytes(1)
    await add(lib, data, "a", "1")
    await add(lib, data, "b", "1")
    _, removed = lib.delete("a", "1")
    assert removed is False and lib.store.has(sha256(data))
    _, removed = lib.delete("b", "1")
    assert removed is True and stored_files(lib) == set()
    with pytest.raises(NotFoundError):
        lib.delete("b", "1")
    assert [(t.id, t.version) for t in lib.registry.tombstones()] == [("a", "1"), ("b", "1")]


async def test_reupload_after_delete_revives(tmp_path):
    lib = open_library(tmp_path)
    await add(lib, onnx_bytes(1), "a", "1")
    lib.delete("a", "1")
    await add(lib, onnx_bytes(1), "a", "1")
    assert lib.registry.get("a", "1")
    assert lib.registry.tombstones() == []


async def test_concurrent_uploads_of_the_same_file(tmp_path):
    lib = open_library(tmp_path)
    data = onnx_bytes(4)
    results = await asyncio.gather(add(lib, data, "same", "1"), add(lib, data, "same", "1"),
                                   add(lib, data, "alias", "1"))
    assert results[0] == results[1]
    assert stored_files(lib) == {sha256(data)}
    assert lib.registry.references(sha256(data)) == 2


async def test_concurrent_uploads_of_different_files_to_one_key(tmp_path):
    lib = open_library(tmp_path)
    one, two = onnx_bytes(5), onnx_bytes(6)
    results = await asyncio.gather(add(lib, one, "k", "1"), add(lib, two, "k", "1"),
                                   return_exceptions=True)
    winners = [r for r in results if isinstance(r, ModelEntry)]
    losers = [r for r in results if isinstance(r, ConflictError)]
    assert len(winners) == 1 and len(losers) == 1
    assert stored_files(lib) == {winners[0].sha256}


async def test_reconcile_drops_rows_without_file_and_files_without_row(tmp_path):
    lib = open_library(tmp_path)
    kept = await add(lib, onnx_bytes(1), "kept", "1")
    lost = await add(lib, onnx_bytes(2), "lost", "1")
    lib.store.path(lost.sha256).unlink()
    damaged = await add(lib, onnx_bytes(4), "damaged", "1")
    lib.store.path(damaged.sha256).write_bytes(b"short")
    orphan = onnx_bytes(3)
    lib.store.path(sha256(orphan)).write_bytes(orphan)
    lib.close()
    lib = open_library(tmp_path)
    report = lib.reconcile_report
    assert (report.rows_without_file, report.files_without_row) == (2, 1)
    assert [e.key for e in lib.registry.list()] == [kept.key]
    assert stored_files(lib) == {kept.sha256}


async def test_merge_plan_new_conflicts_and_tombstones(tmp_path):
    reg = Registry(tmp_path / "r.sqlite3")
    reg.insert(entry("same", sha="a" * 64))
    reg.insert(entry("clash", sha="a" * 64))
    reg.insert(entry("gone", sha="b" * 64, created=1.0))
    reg.add_tombstone(Tombstone("dead", "1", "c" * 64, deleted=10.0))
    theirs = [entry("same", sha="a" * 64), entry("clash", sha="d" * 64),
              entry("fresh", sha="e" * 64), entry("dead", sha="c" * 64, created=5.0),
              entry("dead2", sha="c" * 64, created=5.0)]
    plan = reg.plan_merge(theirs, [Tombstone("gone", "1", "b" * 64, deleted=2.0),
                                   Tombstone("dead2", "1", "c" * 64, deleted=6.0)])
    assert [e.id for e in plan.new] == ["fresh"]
    assert [(mine.id, theirs.sha256) for mine, theirs in plan.conflicts] == [("clash", "d" * 64)]
    assert sorted(t.id for t in plan.deletions) == ["dead2", "gone"]


async def test_library_merge_fetches_missing_files_and_keeps_conflicting_entries(tmp_path):
    here = ModelLibrary.open(tmp_path / "here", LIMIT)
    there = ModelLibrary.open(tmp_path / "there", LIMIT)
    mine = await add(here, onnx_bytes(1), "clash", "1")
    await add(there, onnx_bytes(2), "clash", "1")
    new = await add(there, onnx_bytes(3), "new", "1", tags=("x",))

    async def fetch_from_there(e: ModelEntry):
        data = there.store.path(e.sha256).read_bytes()
        pending = here.store.begin(e.sha256, e.size)
        pending.write(data)
        return (await asyncio.to_thread(pending.commit))[0]

    snap = there.registry.snapshot()
    plan = here.registry.plan_merge([ModelEntry.from_wire(e) for e in snap["entries"]],
                                    [Tombstone.from_wire(t) for t in snap["tombstones"]])
    report = await here.merge(plan, fetch_from_there)
    assert [e.key for e in report.added] == [("new", "1")]
    assert len(report.conflicts) == 1 and report.failed == []
    assert here.registry.get("clash", "1") == mine
    got = here.registry.get("new", "1")
    assert (got.sha256, got.created, got.tags) == (new.sha256, new.created, ("x",))
    assert stored_files(here) == {mine.sha256, new.sha256}


from hypothesis import given, settings, strategies as st  # noqa: E402

_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=70),
                     st.binary(max_size=8))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
_fields = st.fixed_dictionaries({}, optional={k: _values for k in (
    "id", "version", "type", "sha256", "size", "inputs", "outputs", "created", "tags")})


@settings(max_examples=150, deadline=None)
@given(st.one_of(_values, _fields, _fields.map(lambda d: {**entry().to_wire(), **d})))
def test_from_wire_accepts_or_raises_bad_request(value):
    try:
        parsed = ModelEntry.from_wire(value)
    except BadRequestError:
        return
    assert ModelEntry.from_wire(parsed.to_wire()) == parsed
    try:
        Tombstone.from_wire(value)
    except BadRequestError:
        pass


def test_newest_version_is_by_version_key_like_the_inference_source(tmp_path):
    from workers.inference.source import version_key as inference_key
    from workers.models.registry import version_key
    samples = ["1", "2", "10", "1.9", "1.10", "1.2-rc1", "beta", "0.0.1"]
    assert sorted(samples, key=version_key) == sorted(samples, key=inference_key)
    reg = Registry(tmp_path / "r.sqlite3")
    for i, v in enumerate(["10", "9", "1.10"]):
        reg.insert(entry(version=v, created=float(i)))
    assert reg.get("m").version == "10"
    assert [e.version for e in reg.versions("m")] == ["1.10", "9", "10"]
