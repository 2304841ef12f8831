"""The book worker: ISBN/year validation and the CRUD methods through the worker's
method table, with JSON-text (Node, hp-svc-facs-net style) and msgpack payloads."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.book import BookConfig, BookWorker, normalize_isbn, sane_year
from workers.config import layered
from workers.errors import Conflict, InvalidInput, NotFound

DUNE = {"title": "Dune", "author": "Frank Herbert", "isbn": "978-0-441-01359-3", "year": 1965}


@pytest.mark.parametrize("text, stored", [
    ("0-306-40615-2", "0306406152"),
    ("978-0-306-40615-7", "9780306406157"),
    ("080442957x", "080442957X"),
    ("979 10 90636 07 1", "9791090636071"),
])
def test_valid_isbns(text, stored):
    assert normalize_isbn(text) == stored


@pytest.mark.parametrize("text", ["0-306-40615-3", "978-0-306-40615-8", "12345", "X306406152",
                                  "977-0-306-40615-7", "0-306-4O615-2", ""])
def test_invalid_isbns(text):
    with pytest.raises(ValueError, match="ISBN-10 or ISBN-13"):
        normalize_isbn(text)


def isbn10(digits: list[int]) -> str:
    check = (11 - sum((10 - i) * d for i, d in enumerate(digits)) % 11) % 11
    return "".join(map(str, digits)) + ("X" if check == 10 else str(check))


def isbn13(digits: list[int]) -> str:
    body = [9, 7, 8] + digits
    check = (10 - sum(d * (3 if i % 2 else 1) for i, d in enumerate(body)) % 10) % 10
    return "".join(map(str, body)) + str(check)


nine = st.lists(st.integers(0, 9), min_size=9, max_size=9)


@given(nine, st.integers(0, 8), st.integers(1, 9))
def test_isbn10_check_digit_catches_any_single_digit_error(digits, pos, delta):
    good = isbn10(digits)
    assert normalize_isbn(good) == good
    bad = list(good)
    bad[pos] = str((int(bad[pos]) + delta) % 10)
    with pytest.raises(ValueError):
        normalize_isbn("".join(bad))


@given(nine, st.integers(3, 11), st.sampled_from([1, 2, 3, 4, 6, 7, 8, 9]))
def test_isbn13_check_digit_catches_single_digit_errors(digits, pos, delta):
    good = isbn13(digits)
    assert normalize_isbn(good) == good
    bad = list(good)
    bad[pos] = str((int(bad[pos]) + delta) % 10)  # weights 1 and 3 are units mod 10 except delta 5
    with pytest.raises(ValueError):
        normalize_isbn("".join(bad))


def test_sane_year():
    assert sane_year(1965) == 1965 and sane_year(-800) == -800
    for year in (-3001, 99999):
        with pytest.raises(ValueError, match="a year from -3000 to"):
            sane_year(year)


@pytest.fixture
async def books(tmp_path):
    w = BookWorker(BookConfig(db_path=str(tmp_path / "db" / "books.db")))
    await w.start()
    yield w
    await w.stop()


async def jcall(w: BookWorker, method: str, request) -> object:
    """A call as an hp-svc-facs-net caller makes it: JSON text in, JSON text out."""
    reply = await w.call(method, json.dumps(request).encode())
    assert isinstance(reply, bytes)
    return json.loads(reply)


async def test_methods_and_topic(books):
    assert set(books.methods) == {"create", "get", "update", "delete", "list"}
    assert all(m.encoding == "raw" for m in books.methods.values())
    assert books.topics == ["books"]
    assert books.health()["kind"] == "books"


async def test_json_crud(books):
    made = await jcall(books, "create", DUNE)
    assert made["isbn"] == "9780441013593" and made["version"] == 1 and made["year"] == 1965
    assert await jcall(books, "get", {"id": made["id"]}) == made
    up = await jcall(books, "update", {"id": made["id"], "version": 1, "title": "  Dune (1st ed.) "})
    assert up["title"] == "Dune (1st ed.)" and up["version"] == 2
    gone = await jcall(books, "delete", {"id": made["id"], "version": 2})
    assert gone["deleted"] is True
    assert await jcall(books, "list", {}) == {"items": [], "next_cursor": None}


async def test_json_errors_come_back_in_band(books):
    made = await jcall(books, "create", DUNE)
    cases = [
        ("create", {**DUNE, "isbn": "978-0-441-01359-4"},
         "[HRPC_ERR]=INVALID_INPUT: isbn: expected an ISBN-10 or ISBN-13 with a valid check digit"),
        ("create", {"title": "x", "author": "y", "isbn": "0306406152", "year": "1965"},
         "[HRPC_ERR]=INVALID_INPUT: year: expected an integer"),
        ("create", {"title": "   ", "author": "y", "isbn": "0306406152"},
         "[HRPC_ERR]=INVALID_INPUT: title: expected a non-blank string"),
        ("create", {"title": "x", "author": "y"}, "[HRPC_ERR]=INVALID_INPUT: isbn: expected"),
        ("create", {**DUNE, "pages": 3}, "[HRPC_ERR]=INVALID_INPUT: pages: expected no such field"),
        ("create", DUNE, f"[HRPC_ERR]=CONFLICT: isbn: '9780441013593' is already used by thing '{made['id']}'"),
        ("get", {"id": "missing"}, "[HRPC_ERR]=NOT_FOUND: no thing with id 'missing'"),
        ("update", {"id": made["id"], "version": 7, "year": 1966},
         f"[HRPC_ERR]=CONFLICT: version 7 of '{made['id']}' is stale: the current version is 1"),
        ("list", {"where": {"year": {"gte": "1900"}}}, "[HRPC_ERR]=INVALID_INPUT: where.year.gte: expected an int"),
        ("list", [1, 2], "[HRPC_ERR]=INVALID_INPUT: request: expected an object"),
    ]
    for method, request, start in cases:
        reply = await jcall(books, method, request)
        assert isinstance(reply, str) and reply.startswith(start), (method, request, reply)
    for bad in (b"{not json", b"[1, 2", b"{\xff}"):
        assert json.loads(await books.call("create", bad)) == "[HRPC_ERR]=ERR_FACS_NET_DATA_FORMAT"
    # Nothing partial was stored, and the in-band errors were counted.
    assert [b["id"] for b in (await jcall(books, "list", {}))["items"]] == [made["id"]]
    assert (await jcall(books, "get", {"id": made["id"]}))["version"] == 1
    assert books.inband_errors.get("create", "INVALID_INPUT") == 8
    assert books.inband_errors.get("create", "CONFLICT") == 1


async def test_list_filters_order_pages(books):
    shelf = [("Dune", "Frank Herbert", 1965), ("Children of Dune", "Frank Herbert", 1976),
             ("Emma", "Jane Austen", 1815), ("Persuasion", "Jane Austen", 1817),
             ("Neuromancer", "William Gibson", 1984)]
    for i, (title, author, year) in enumerate(shelf):
        twelve = f"978000000{i:03d}"
        await jcall(books, "create", {"title": title, "author": author, "year": year,
                                      "isbn": twelve + _check13(twelve)})
    page = await jcall(books, "list", {"where": {"author": "Jane Austen"}, "order": "-year"})
    assert [b["title"] for b in page["items"]] == ["Persuasion", "Emma"]
    page = await jcall(books, "list", {"where": {"year": {"gte": 1900, "lt": 1980}}, "order": "title"})
    assert [b["title"] for b in page["items"]] == ["Children of Dune", "Dune"]
    titles, cursor = [], None
    while True:
        page = await jcall(books, "list", {"order": "year", "limit": 2, **({"cursor": cursor} if cursor else {})})
        titles += [b["title"] for b in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert titles == ["Emma", "Persuasion", "Dune", "Children of Dune", "Neuromancer"]
    page = await jcall(books, "list", {"order": "year", "offset": 3, "limit": 1})
    assert [b["title"] for b in page["items"]] == ["Children of Dune"]


def _check13(twelve: str) -> str:
    return str((10 - sum(int(c) * (3 if i % 2 else 1) for i, c in enumerate(twelve)) % 10) % 10)


async def test_books_survive_a_worker_restart(tmp_path):
    cfg = BookConfig(db_path=str(tmp_path / "books.db"))
    w = BookWorker(cfg)
    await w.start()
    made = await jcall(w, "create", DUNE)
    await w.stop()
    w = BookWorker(cfg)
    await w.start()
    try:
        assert await jcall(w, "get", {"id": made["id"]}) == made
    finally:
        await w.stop()


async def test_calls_after_stop_are_refused(tmp_path):
    w = BookWorker(BookConfig(db_path=str(tmp_path / "books.db")))
    await w.start()
    await w.stop()
    with pytest.raises(Exception) as info:
        await w.call("list", b"{}")
    assert getattr(info.value, "code", None) == "UNAVAILABLE"


async def test_msgpack_callers_get_msgpack_and_raised_errors(books):
    codec = pytest.importorskip("mesh.rpc.codec")

    def pack(value) -> bytes:
        return bytes(codec.unframe(memoryview(codec.get("msgpack").encode(value))))

    def unpack(payload: bytes):
        return codec.get("msgpack").decode(memoryview(codec.frame(payload)))

    made = unpack(await books.call("create", pack(DUNE)))
    assert made["isbn"] == "9780441013593"
    assert unpack(await books.call("list", pack({"where": {"isbn": "9780441013593"}})))["items"] == [made]
    with pytest.raises(NotFound):
        await books.call("get", pack({"id": "nope"}))
    with pytest.raises(Conflict, match="current version is 1"):
        await books.call("delete", pack({"id": made["id"], "version": 2}))
    with pytest.raises(InvalidInput, match="^isbn: expected"):
        await books.call("create", pack({**DUNE, "isbn": b"\x00bytes"}))
    with pytest.raises(InvalidInput, match="undecodable"):
        await books.call("create", b"\xc1")
    # An empty payload is msgpack's None: list accepts it as "no options".
    assert unpack(await books.call("list", None))["items"] == [made]


def test_config_layers():
    toml = {"namespace": "ns", "workers": {"book": {"db_path": "/tmp/x.db", "max_limit": 10}}}
    cfg = layered(BookConfig, toml=toml, role="workers.book", env={"MESH_DEFAULT_LIMIT": "5"},
                  cli={"topic": "library"})
    assert (cfg.namespace, cfg.db_path, cfg.max_limit, cfg.default_limit, cfg.topic) == \
        ("ns", "/tmp/x.db", 10, 5, "library")
    assert BookConfig().topic == "books" and BookConfig().name == "books"


def test_role_entry_points(tmp_path):
    import workers.book as role
    import workers.thing as template

    assert role.ROLE == BookWorker.role == "workers.book" and template.ROLE == "workers.thing"
    topics = tmp_path / "topics.toml"
    topics.write_text('namespace = "ns"\nbootstrap = ["127.0.0.1:49737"]\n'
                      '[workers.book]\ndb_path = "/tmp/b.db"\nmax_limit = 20\n')
    cfg = role.role_config(str(topics), env={"MESH_MAX_LIMIT": "30"}, argv=["--default-limit", "7", "--other", "x"],
                           topic="books-eu")
    assert isinstance(cfg, BookConfig)
    assert (cfg.namespace, cfg.bootstrap, cfg.db_path, cfg.max_limit, cfg.default_limit, cfg.topic) == \
        ("ns", (("127.0.0.1", 49737),), "/tmp/b.db", 30, 7, "books-eu")
    assert template.role_config({}).topic == "things"


async def test_standalone_process_serves_health_and_drains_on_sigterm(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    db = tmp_path / "books.db"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers.book", "--db-path", str(db), "--ops-port", str(port), cwd=root,
        env={**os.environ, "PYTHONPATH": root}, stderr=asyncio.subprocess.PIPE)
    try:
        while True:
            line = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert line, "worker exited before it started"
            if json.loads(line).get("msg") == "worker started":
                break
        assert db.exists()
        # An answered /health means run() is past start() and has its SIGTERM
        # handler (installed right after "worker started", before the loop runs again).
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.0\r\nHost: x\r\n\r\n")
        reply = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        assert b'"kind": "books"' in reply or b'"kind":"books"' in reply, reply
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
book_like = st.fixed_dictionaries({}, optional={
    "id": json_values | st.text(max_size=10), "version": json_values, "title": json_values,
    "author": json_values, "isbn": json_values | st.just("0306406152"), "year": json_values,
    "where": json_values, "order": json_values | st.sampled_from(["year", "-title", "isbn"]),
    "limit": json_values, "cursor": json_values, "offset": json_values})
METHODS = st.sampled_from(["create", "get", "update", "delete", "list"])


def test_hostile_payloads_get_clear_errors_and_never_crash(tmp_path):
    """Random bytes, random JSON text and random msgpack to every method: each call
    answers or fails with a worker code (never INTERNAL), and the store stays sound."""
    from hypothesis import HealthCheck, settings

    from mesh.rpc import codec
    from workers.errors import WorkerError

    loop = asyncio.new_event_loop()
    worker = BookWorker(BookConfig(db_path=str(tmp_path / "books.db")))
    loop.run_until_complete(worker.start())

    def call(method, payload):
        try:
            reply = loop.run_until_complete(worker.call(method, payload))
        except WorkerError as e:
            assert e.code in ("INVALID_INPUT", "NOT_FOUND", "CONFLICT"), e
            return
        assert isinstance(reply, bytes)
        if payload[:1] in (b"{", b"["):
            value = json.loads(reply)
            if isinstance(value, str):
                assert value.startswith("[HRPC_ERR]=") and "INTERNAL" not in value, value

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(METHODS, st.binary(max_size=64) | json_values.map(lambda v: json.dumps(v).encode())
           | st.integers(2**63, 2**80).map(lambda n: json.dumps({"title": "t", "author": "a", "isbn": "0306406152",
                                                                   "year": n}).encode())
           | st.integers(2**63, 2**80).map(lambda n: json.dumps({"where": {"year": {"lt": n}}, "offset": n}).encode())
           | book_like.map(lambda v: json.dumps(v).encode())
           | book_like.map(lambda v: bytes(codec.unframe(memoryview(codec.get("msgpack").encode(v))) or b"")))
    def check(method, payload):
        call(method, payload)

    try:
        check()
        assert worker.service.store.integrity_ok()
    finally:
        loop.run_until_complete(worker.stop())
        loop.close()


BOOK_WRITER = r"""
import asyncio, json, sys
from workers.book import BookConfig, BookWorker

def isbn(i):
    twelve = f"978{i:09d}"
    return twelve + str((10 - sum(int(c) * (3 if k % 2 else 1) for k, c in enumerate(twelve)) % 10) % 10)

async def main():
    w = BookWorker(BookConfig(db_path=sys.argv[1]))
    await w.start()
    i = 0
    while True:
        i += 1
        req = {"id": f"b{i}", "title": f"Book {i}", "author": "A", "isbn": isbn(i), "year": 2000}
        await w.call("create", json.dumps(req).encode())
        if i > 1:
            await w.call("update", json.dumps({"id": f"b{i - 1}", "version": 1, "year": 2001}).encode())
        print(i, flush=True)

asyncio.run(main())
"""


async def test_sigkill_of_a_book_worker_mid_writes_keeps_every_acknowledged_book(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    db = str(tmp_path / "books.db")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", BOOK_WRITER, db, cwd=root,
                                                env={**os.environ, "PYTHONPATH": root},
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    acked = 0
    try:
        while acked < 200:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, "writer died early"
            acked = int(line)
    finally:
        proc.kill()  # SIGKILL, mid-write
        await proc.wait()
    for line in (await proc.stdout.read()).split(b"\n"):
        if line.strip():
            acked = int(line)  # printed before the kill: acknowledged too
    assert proc.returncode == -signal.SIGKILL
    w = BookWorker(BookConfig(db_path=db))
    await w.start()
    try:
        assert w.service.store.integrity_ok()
        seen, cursor = [], None
        while True:
            req = {"limit": 100, **({"cursor": cursor} if cursor else {})}
            page = json.loads(await w.call("list", json.dumps(req).encode()))
            seen += page["items"]
            if not (cursor := page["next_cursor"]):
                break
        ids = [b["id"] for b in seen]
        assert ids[:acked] == [f"b{i}" for i in range(1, acked + 1)] and len(ids) <= acked + 1
        for b in seen:
            # whole writes only: created at version 1 (year 2000) or updated to version 2 (year 2001)
            assert (b["version"], b["year"]) in ((1, 2000), (2, 2001)), b
            if int(b["id"][1:]) < acked:
                assert b["version"] == 2
    finally:
        await w.stop()
