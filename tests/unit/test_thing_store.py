"""The CRUD template's store and service: persistence, validation, versions, lists."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workers.errors import Conflict, InvalidInput, NotFound, StorageError
from workers.things.schema import Field, Schema
from workers.things.service import ThingService
from workers.things.store import ThingStore

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FIELDS = {
    "name": Field(str, required=True, min=1, max=40),
    "n": Field(int, min=0),
    "score": Field(float),
    "done": Field(bool),
    "tags": Field(list, max=5),
    "code": Field(str, unique=True, pattern=r"[A-Z]{3}"),
}


def no_even_reserved(data: dict) -> None:
    if data.get("name") == "reserved" and data.get("n", 0) % 2 == 0:
        raise InvalidInput("n: expected an odd number when name is 'reserved'")


def make_service(path, **kw) -> ThingService:
    schema = Schema(FIELDS, validate=no_even_reserved)
    store = ThingStore(str(path), "items", indexes={k: f.unique for k, f in FIELDS.items() if f.unique or f.index})
    return ThingService(schema, store, **kw)


@pytest.fixture
async def svc(tmp_path):
    s = make_service(tmp_path / "things.db")
    yield s
    await s.close()


async def test_crud_round_trip(svc):
    made = await svc.create({"name": "a", "n": 1, "tags": ["x"]})
    assert made["version"] == 1 and made["name"] == "a" and made["n"] == 1 and made["tags"] == ["x"]
    assert made["created_at"] == made["updated_at"]
    got = await svc.get({"id": made["id"]})
    assert got == made
    up = await svc.update({"id": made["id"], "version": 1, "n": 2, "tags": None})
    assert up["version"] == 2 and up["n"] == 2 and "tags" not in up and up["name"] == "a"
    assert up["created_at"] == made["created_at"] and up["updated_at"] >= made["updated_at"]
    assert await svc.get({"id": made["id"]}) == up
    gone = await svc.delete({"id": made["id"], "version": 2})
    assert gone == {"id": made["id"], "version": 2, "deleted": True}
    with pytest.raises(NotFound, match="no thing with id"):
        await svc.get({"id": made["id"]})


async def test_client_chosen_id_and_duplicate(svc):
    await svc.create({"id": "item-1", "name": "a"})
    with pytest.raises(Conflict, match="already exists"):
        await svc.create({"id": "item-1", "name": "b"})
    with pytest.raises(InvalidInput, match="^id: expected"):
        await svc.create({"id": "no spaces", "name": "b"})
    assert (await svc.get({"id": "item-1"}))["name"] == "a"


@pytest.mark.parametrize("data, field, words", [
    ({}, "name", "required"),
    ({"name": ""}, "name", "between 1 and 40 in length"),
    ({"name": 5}, "name", "a string"),
    ({"name": "a", "n": -1}, "n", "an integer between 0 and inf"),
    ({"name": "a", "n": True}, "n", "an integer"),
    ({"name": "a", "n": 1.5}, "n", "an integer"),
    ({"name": "a", "n": 2**63}, "n", "within 64 bits"),
    ({"name": "a", "score": float("nan")}, "score", "a finite number"),
    ({"name": "a", "done": 1}, "done", "a boolean"),
    ({"name": "a", "tags": [1, 2, 3, 4, 5, 6]}, "tags", "a list"),
    ({"name": "a", "tags": [b"bytes"]}, "tags", "JSON values"),
    ({"name": "a", "code": "abc"}, "code", "matching"),
    ({"name": "a", "colour": "red"}, "colour", "no such field"),
    ({"name": "a", "version": 3}, "version", "the store sets it"),
    ({"name": "reserved", "n": 2}, "n", "odd number"),
])
async def test_invalid_fields_name_the_field_and_store_nothing(svc, data, field, words):
    with pytest.raises(InvalidInput) as info:
        await svc.create(data)
    assert str(info.value).startswith(f"{field}: expected")
    assert words in str(info.value)
    assert info.value.code == "INVALID_INPUT"
    assert svc.store.count() == 0


async def test_invalid_update_stores_nothing(svc):
    made = await svc.create({"name": "a", "n": 1})
    with pytest.raises(InvalidInput, match="^n: expected an integer"):
        await svc.update({"id": made["id"], "version": 1, "name": "b", "n": "two"})
    with pytest.raises(InvalidInput, match="^name: expected .*required"):
        await svc.update({"id": made["id"], "version": 1, "name": None})
    with pytest.raises(InvalidInput, match="^n: expected an odd number"):
        await svc.update({"id": made["id"], "version": 1, "name": "reserved", "n": 4})
    with pytest.raises(InvalidInput, match="^update: expected at least one field"):
        await svc.update({"id": made["id"], "version": 1})
    assert await svc.get({"id": made["id"]}) == made


@pytest.mark.parametrize("req, field", [
    ({"id": 3}, "id"), ({}, "id"), ({"id": "x", "extra": 1}, "extra"), ("x", "request"),
])
async def test_bad_get_requests(svc, req, field):
    with pytest.raises(InvalidInput, match=f"^{field}: expected"):
        await svc.get(req)


async def test_stale_version_is_refused_naming_the_current_one(svc):
    made = await svc.create({"name": "a", "n": 1})
    await svc.update({"id": made["id"], "version": 1, "n": 2})
    with pytest.raises(Conflict, match="version 1 .* is stale: the current version is 2") as info:
        await svc.update({"id": made["id"], "version": 1, "n": 3})
    assert info.value.code == "CONFLICT" and info.value.details["current_version"] == 2
    with pytest.raises(Conflict, match="current version is 2"):
        await svc.delete({"id": made["id"], "version": 1})
    assert (await svc.get({"id": made["id"]}))["n"] == 2
    with pytest.raises(InvalidInput, match="^version: expected"):
        await svc.delete({"id": made["id"]})
    with pytest.raises(NotFound):
        await svc.update({"id": "nope", "version": 1, "n": 1})
    with pytest.raises(NotFound):
        await svc.delete({"id": "nope", "version": 1})


async def test_unique_field(svc):
    a = await svc.create({"name": "a", "code": "ABC"})
    with pytest.raises(Conflict, match=f"code: 'ABC' is already used by thing '{a['id']}'"):
        await svc.create({"name": "b", "code": "ABC"})
    b = await svc.create({"name": "b", "code": "XYZ"})
    with pytest.raises(Conflict, match="already used"):
        await svc.update({"id": b["id"], "version": 1, "code": "ABC"})
    # Re-saving its own value is no clash.
    assert (await svc.update({"id": a["id"], "version": 1, "code": "ABC", "n": 1}))["version"] == 2
    assert svc.store.count() == 2


async def fill(svc, n=25):
    made = []
    for i in range(n):
        made.append(await svc.create({"name": f"t{i:02d}", "n": i % 5, "done": i % 2 == 0,
                                      **({"score": i / 2} if i % 3 else {})}))
    return made


async def test_list_filters(svc):
    await fill(svc)
    async def names(where):
        return [t["name"] for t in (await svc.list({"where": where, "limit": 100}))["items"]]
    assert await names({"n": 3}) == ["t03", "t08", "t13", "t18", "t23"]
    assert await names({"n": {"gte": 4}, "done": True}) == ["t04", "t14", "t24"]
    assert await names({"n": {"in": [0, 1]}, "name": {"lt": "t10"}}) == ["t00", "t01", "t05", "t06"]
    assert await names({"name": {"prefix": "t2"}, "n": {"ne": 0}}) == ["t21", "t22", "t23", "t24"]
    assert await names({"score": None, "n": 0}) == ["t00", "t15"]
    assert await names({"score": {"gt": 11}}) == ["t23"]
    assert len(await names({"score": {"ne": None}})) == 16
    assert await names({"id": "nope"}) == []


@pytest.mark.parametrize("req, field", [
    ({"where": {"colour": "red"}}, "where"),
    ({"where": {"n": {"near": 3}}}, "where.n"),
    ({"where": {"n": "three"}}, "where.n.eq"),
    ({"where": {"n": {"in": []}}}, "where.n.in"),
    ({"where": {"tags": ["x"]}}, "where.tags"),
    ({"where": ["n", 1]}, "where"),
    ({"order": "colour"}, "order"),
    ({"order": 3}, "order"),
    ({"limit": 0}, "limit"),
    ({"limit": 5000}, "limit"),
    ({"offset": -1}, "offset"),
    ({"cursor": "garbage!"}, "cursor"),
    ({"page": 2}, "page"),
])
async def test_bad_list_requests(svc, req, field):
    with pytest.raises(InvalidInput, match=f"^{field}: expected"):
        await svc.list(req)


async def test_list_order_and_pagination(svc):
    made = await fill(svc)
    # Insertion order by default.
    assert [t["id"] for t in (await svc.list({"limit": 100}))["items"]] == [t["id"] for t in made]
    expected = sorted(made, key=lambda t: (t["n"], made.index(t)))
    for order, want in [("n", expected), ("-n", expected[::-1])]:
        seen, cursor = [], None
        while True:
            page = await svc.list({"order": order, "limit": 4, **({"cursor": cursor} if cursor else {})})
            assert len(page["items"]) <= 4
            seen += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert [t["id"] for t in seen] == [t["id"] for t in want]
    # Nulls last ascending, first descending; cursor pages agree with one big page.
    full = (await svc.list({"order": "score", "limit": 100}))["items"]
    assert [t.get("score") for t in full][-9:] == [None] * 9
    paged, cursor = [], None
    while True:
        page = await svc.list({"order": "score", "limit": 3, **({"cursor": cursor} if cursor else {})})
        paged += page["items"]
        if not (cursor := page["next_cursor"]):
            break
    assert paged == full
    # Offset paging and a cursor for another order is refused.
    assert (await svc.list({"order": "-name", "offset": 20}))["items"][0]["name"] == "t04"
    first = await svc.list({"order": "n", "limit": 2})
    with pytest.raises(InvalidInput, match="^cursor: expected"):
        await svc.list({"order": "-n", "cursor": first["next_cursor"]})
    with pytest.raises(InvalidInput, match="^cursor: expected no cursor together with an offset"):
        await svc.list({"order": "n", "cursor": first["next_cursor"], "offset": 1})


async def test_cursor_survives_writes_between_pages(svc):
    made = await fill(svc, 10)
    page = await svc.list({"order": "name", "limit": 5})
    # Deleting a row already seen and adding one before the cursor skip nothing after it.
    await svc.delete({"id": made[0]["id"], "version": 1})
    await svc.create({"name": "a-first"})
    rest = await svc.list({"order": "name", "limit": 100, "cursor": page["next_cursor"]})
    assert [t["name"] for t in rest["items"]] == [f"t{i:02d}" for i in range(5, 10)]
    assert rest["next_cursor"] is None


async def test_data_survives_reopen(tmp_path):
    path = tmp_path / "things.db"
    svc = make_service(path)
    a = await svc.create({"name": "a", "n": 1, "code": "AAA"})
    a = await svc.update({"id": a["id"], "version": 1, "n": 7})
    b = await svc.create({"name": "b"})
    await svc.delete({"id": b["id"], "version": 1})
    await svc.close()
    svc = make_service(path)
    try:
        assert await svc.get({"id": a["id"]}) == a
        with pytest.raises(NotFound):
            await svc.get({"id": b["id"]})
        with pytest.raises(Conflict, match="already used"):  # the unique index came back too
            await svc.create({"name": "c", "code": "AAA"})
        with pytest.raises(Conflict, match="current version is 2"):
            await svc.update({"id": a["id"], "version": 1, "n": 8})
        assert svc.store.integrity_ok()
    finally:
        await svc.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


async def test_concurrent_read_modify_write_loses_no_update(svc):
    counter = await svc.create({"id": "counter", "name": "c", "n": 0})
    conflicts = 0

    async def bump(times):
        nonlocal conflicts
        for _ in range(times):
            while True:
                cur = await svc.get({"id": "counter"})
                await asyncio.sleep(0)  # let the others read the same version
                try:
                    await svc.update({"id": "counter", "version": cur["version"], "n": cur["n"] + 1})
                    break
                except Conflict:
                    conflicts += 1

    await asyncio.gather(*(bump(10) for _ in range(8)))
    final = await svc.get({"id": counter["id"]})
    assert final["n"] == 80 and final["version"] == 81
    assert conflicts > 0  # the test did race


def test_threads_with_own_connections_lose_no_update(tmp_path):
    """Separate SQLite connections (as separate processes would have) on one file."""
    path = str(tmp_path / "things.db")
    schema = Schema(FIELDS)
    first = ThingStore(path, "items")
    first.insert("counter", {"name": "c", "n": 0})
    errors: list[BaseException] = []

    def worker():
        store = ThingStore(path, "items")
        try:
            for _ in range(25):
                while True:
                    cur = store.get("counter")
                    try:
                        store.update("counter", cur.version, lambda d: schema.clean({**d, "n": d["n"] + 1}))
                        break
                    except Conflict:
                        pass
        except BaseException as e:  # reported below; a thread cannot raise into the test
            errors.append(e)
        finally:
            store.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    final = first.get("counter")
    assert final.data["n"] == 100 and final.version == 101
    first.close()


WRITER = r"""
import sys
from workers.things.schema import Field, Schema
from workers.things.store import ThingStore
schema = Schema({"name": Field(str, required=True), "n": Field(int)})
store = ThingStore(sys.argv[1], "items")
i = 0
while True:
    i += 1
    store.insert(f"t{i}", schema.clean({"name": "x" * (i % 50 + 1), "n": i}))
    if i > 1:
        store.update(f"t{i - 1}", 1, lambda d: schema.clean({**d, "n": -d["n"]}))
    print(i, flush=True)
"""


def test_sigkill_mid_writes_leaves_a_consistent_store(tmp_path):
    path = str(tmp_path / "things.db")
    child = subprocess.Popen([sys.executable, "-c", WRITER, path], stdout=subprocess.PIPE, text=True,
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    acked = 0
    try:
        for line in child.stdout:
            acked = int(line)
            if acked >= 300:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        # Lines still in the pipe were acknowledged before the kill too.
        for line in child.stdout:
            acked = int(line)
        child.stdout.close()
    assert acked >= 300, "writer died early"
    store = ThingStore(path, "items")
    try:
        assert store.integrity_ok()
        total = store.count()
        # Every acknowledged write is there; at most the one in flight after it too.
        assert acked <= total <= acked + 1
        for i in range(1, total + 1):
            rec = store.get(f"t{i}")
            # Either the insert alone (version 1, n > 0) or insert + update (version 2, n < 0).
            assert (rec.version, rec.data["n"]) in ((1, i), (2, -i)), rec
            if i < acked:
                assert rec.version == 2
    finally:
        store.close()


def test_open_failure_is_a_storage_error(tmp_path):
    with pytest.raises(StorageError, match="cannot open thing store"):
        ThingStore(str(tmp_path / "missing-dir" / "x.db"))


async def test_loose_schema_stores_any_json(tmp_path):
    svc = ThingService(Schema({}, strict=False), ThingStore(str(tmp_path / "t.db")))
    try:
        made = await svc.create({"anything": {"nested": [1, "two", None]}, "k": 3})
        assert (await svc.list({"where": {"k": 3}}))["items"] == [made]
        with pytest.raises(InvalidInput, match="^blob: expected a JSON value"):
            await svc.create({"blob": b"\x00"})
        with pytest.raises(InvalidInput, match="^where: expected a field name"):
            await svc.list({"where": {"bad name": 1}})
    finally:
        await svc.close()


@pytest.mark.parametrize("req, field", [
    ({"offset": 2**70}, "offset"),
    ({"where": {"n": {"gte": 2**70}}}, "where.n.gte"),
    ({"where": {"n": {"in": [1, -2**64]}}}, "where.n.in"),
])
async def test_out_of_range_integers_in_lists(svc, req, field):
    with pytest.raises(InvalidInput, match=f"^{field}: expected"):
        await svc.list(req)


BUMPER = r"""
import sys
from workers.errors import Conflict
from workers.things.store import ThingStore
store = ThingStore(sys.argv[1], "items")
conflicts = 0
for _ in range(int(sys.argv[2])):
    while True:
        cur = store.get("counter")
        try:
            store.update("counter", cur.version, lambda d: {**d, "n": d["n"] + 1})
            break
        except Conflict:
            conflicts += 1
print(conflicts, flush=True)
"""


def test_processes_racing_on_one_file_lose_no_update(tmp_path):
    path = str(tmp_path / "things.db")
    store = ThingStore(path, "items")
    store.insert("counter", {"name": "c", "n": 0})
    procs = [subprocess.Popen([sys.executable, "-c", BUMPER, path, "40"], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}) for _ in range(3)]
    try:
        outs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in procs), outs
    final = store.get("counter")
    assert final.data["n"] == 120 and final.version == 121
    store.close()


ROWS = st.lists(st.fixed_dictionaries({}, optional={
    "n": st.integers(-5, 5), "score": st.floats(-3, 3, allow_nan=False) | st.integers(-3, 3),
    "name": st.text("abc", max_size=3), "done": st.booleans()}), max_size=30)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(ROWS, st.sampled_from(["", "n", "-n", "score", "-score", "name", "-name", "done", "-done", "id"]),
       st.integers(1, 7), st.sampled_from([None, {"n": {"gte": 0}}, {"score": None}, {"name": {"prefix": "a"}}]))
def test_cursor_pages_equal_the_reference_order(tmp_path_factory, rows, order, limit, where):
    """Random documents (with duplicates and missing values), any order: walking
    the cursor pages gives exactly the filtered rows in the reference order."""
    from workers.things.query import parse_list

    schema = Schema({"name": Field(str), "n": Field(int), "score": Field(float),
                     "done": Field(bool)})
    store = ThingStore(str(tmp_path_factory.mktemp("pages") / "t.db"), "items")
    try:
        for i, row in enumerate(rows):
            store.insert(f"r{i:02d}", schema.clean(dict(row)))

        def keep(i):
            row = rows[i]
            if where is None:
                return True
            (field, test), = where.items()
            if test is None:
                return field not in row
            if "gte" in test:
                return field in row and row[field] >= test["gte"]
            return field in row and row[field].startswith(test["prefix"])

        def key(i):
            name = order.lstrip("-")
            if not name:
                return (i,)
            if name == "id":
                return (f"r{i:02d}", i)
            v = rows[i].get(name)
            return (v is None, 0 if v is None else (int(v) if isinstance(v, bool) else v), i)

        want = sorted((i for i in range(len(rows)) if keep(i)), key=key, reverse=order.startswith("-"))
        got, cursor = [], None
        while True:
            req = {"order": order, "limit": limit, **({"where": where} if where else {}),
                   **({"cursor": cursor} if cursor else {})}
            page = store.select(parse_list(req, schema, 50, 1000))
            assert len(page.items) <= limit
            got += [int(r.id[1:]) for r in page.items]
            if not (cursor := page.next_cursor):
                break
        assert got == want
    finally:
        store.close()
