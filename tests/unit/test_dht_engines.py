"""The sans-IO DHT engines: routing table, tokens, store, query, NAT sampler."""

from __future__ import annotations

from mesh import crypto
from mesh.dht import messages as m
from mesh.dht.nat import NatSampler
from mesh.dht.query import Query
from mesh.dht.routing import Node, RoutingTable
from mesh.dht.store import RECORD_MAX_AGE, Store
from mesh.dht.tokens import Tokens


def addr(i: int):
    return ("127.0.0.1", 10_000 + i)


def test_routing_table_ping_before_evict():
    own = b"\x00" * 32
    t = RoutingTable(own, k=2)
    # ids in the same row (first bit set => row 0)
    ids = [bytes([0x80 | i]) + b"\x00" * 31 for i in range(4)]
    assert t.add(Node(ids[0], addr(0), 1)) is None
    assert t.add(Node(ids[1], addr(1), 2)) is None
    oldest = t.add(Node(ids[2], addr(2), 3))
    assert oldest is not None and oldest.id == ids[0]  # least recently pinged
    assert ids[2] not in t  # not added until the ping fails
    t.keep(oldest, 5)
    assert ids[0] in t and ids[2] not in t and not t.pending
    oldest = t.add(Node(ids[3], addr(3), 6))
    assert oldest.id == ids[1]
    t.evict(oldest)
    assert ids[3] in t and ids[1] not in t and len(t) == 2


def test_routing_closest_sorted_by_xor():
    own = crypto.hash(b"own")
    t = RoutingTable(own)
    for i in range(100):
        t.add(Node(m.node_id(addr(i)), addr(i)))
    target = crypto.hash(b"target")
    got = t.closest(target)
    ti = int.from_bytes(target, "big")
    dists = [n.int_id ^ ti for n in got]
    assert dists == sorted(dists) and len(got) == 20
    every = sorted(n.int_id ^ ti for n in t.nodes())
    assert dists == every[:20]


def test_tokens_rotate_and_expire():
    tk = Tokens(now=0.0)
    tok = tk.create("127.0.0.1", 0.0)
    assert tk.validate("127.0.0.1", tok, 7.0)
    assert tk.validate("127.0.0.1", tok, 14.0)  # previous secret still accepted
    assert not tk.validate("127.0.0.1", tok, 15.1)
    assert not tk.validate("127.0.0.2", tk.create("127.0.0.1", 16.0), 16.0)


def test_store_records_expire_after_max_age_and_refresh_keeps_them():
    s = Store(now=0.0)
    t, pk = b"t" * 32, b"k" * 32
    s.add_record(t, pk, b"rec", 0.0)
    assert s.get_records(t, RECORD_MAX_AGE - 1) == [b"rec"]
    assert s.get_records(t, RECORD_MAX_AGE + 1) == []
    s.add_record(t, pk, b"rec", 0.0)
    for minute in range(1, 60):
        s.add_record(t, pk, b"rec", minute * 60.0 - 30)  # refreshed every minute
        assert s.get_records(t, minute * 60.0) == [b"rec"]


def test_store_is_bounded_per_target():
    s = Store(now=0.0)
    t = b"t" * 32
    for i in range(1000):
        s.add_record(t, i.to_bytes(32, "big"), b"r%d" % i, 1.0)
    assert len(s.records.get(t, 1.0)) <= 256
    assert len(s.get_records(t, 1.0)) == 20
    assert s.get_records(t, 1.0)[0] == b"r999"  # newest first


def test_store_generations_bound_memory():
    s = Store(now=0.0)
    for i in range(10):
        s.add_record(i.to_bytes(32, "big"), b"k" * 32, b"r", 0.0)
    s.get_records(b"x" * 32, 2 * RECORD_MAX_AGE)  # two rotations: everything old is gone
    assert len(s.records) == 0


def test_query_engine_converges_and_keeps_closest():
    target = crypto.hash(b"target")
    q = Query(target, k=3, concurrency=2)
    q.add(addr(0))
    visits = q.next_visits()
    assert [v.address for v in visits] == [addr(0)]
    q.on_reply(visits[0], "r0", m.node_id(addr(0)), [addr(i) for i in range(1, 8)])
    seen = 1
    while not q.done:
        for v in q.next_visits():
            seen += 1
            q.on_reply(v, f"r{v.address[1]}", m.node_id(v.address), [])
    assert len(q.closest_replies()) == 3
    ti = int.from_bytes(target, "big")
    best = sorted(range(8), key=lambda i: int.from_bytes(m.node_id(addr(i)), "big") ^ ti)[:3]
    assert q.closest_replies() == [f"r{10_000 + i}" for i in best]


def test_query_timeout_reports_referrers_for_down_hints():
    q = Query(crypto.hash(b"x"), k=20, concurrency=1)
    q.add(addr(0))
    v = q.next_visits()[0]
    q.on_reply(v, "r", m.node_id(addr(0)), [addr(1)])
    down = q.next_visits()[0]
    assert down.address == addr(1)
    assert q.on_timeout(down) == [addr(0)]
    assert q.done


def test_nat_sampler():
    s = NatSampler()
    for _ in range(3):
        s.add(("1.2.3.4", 5000))
    assert s.address == ("1.2.3.4", 5000)
    for p in range(5001, 5010):
        s.add(("1.2.3.4", p))
    assert s.port == 0  # inconsistent mapping


def test_congestion_window_limits_per_slot_and_over_four_slots():
    from mesh.dht.congestion import CongestionWindow
    cw = CongestionWindow(now=0.0)
    sent = 0
    while not cw.is_full(0.1):
        cw.send(0.1)
        sent += 1
    assert sent == 80
    cw.recv()  # a reply frees a place
    assert not cw.is_full(0.1)
    cw.send(0.1)
    t = 0.8  # next slot: room again, until 160 over the last four slots
    while not cw.is_full(t):
        cw.send(t)
        sent += 1
    assert cw.is_full(t) and sent == 160
    assert not cw.is_full(0.75 * 5)  # the old slots have rolled out
