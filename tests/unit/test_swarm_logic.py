"""The Swarm's sans-IO decisions: dedup, backoff, peer selection, limits, paths."""

import random

import pytest

from mesh import swarm_logic as sl
from mesh.paths import (
    FIREWALL_OPEN,
    FIREWALL_UNKNOWN,
    PathKind,
    choose_client_path,
    is_bogon,
    is_private,
    is_reserved,
    match_address,
    server_connects_now,
)

A = b"\x01" * 32
B = b"\x02" * 32
T1 = b"\x10" * 32
T2 = b"\x20" * 32


def key(i: int) -> bytes:
    return i.to_bytes(32, "big")


# -- duplicate resolution ------------------------------------------------------

def test_dedup_both_sides_agree_on_one_connection():
    # B > A, so B is the expected initiator. A connection initiated by B is kept
    # on both ends; one initiated by A is dropped on both ends.
    b_initiated_seen_by_b = sl.keep_new_connection(B, A, True, False)
    b_initiated_seen_by_a = sl.keep_new_connection(A, B, False, False)
    a_initiated_seen_by_b = sl.keep_new_connection(B, A, False, False)
    a_initiated_seen_by_a = sl.keep_new_connection(A, B, True, False)
    assert b_initiated_seen_by_b and b_initiated_seen_by_a
    assert not a_initiated_seen_by_b and not a_initiated_seen_by_a


def test_dedup_new_wins_over_established_connection():
    assert sl.keep_new_connection(A, B, True, existing_exchanged_data=True)
    assert sl.keep_new_connection(B, A, False, existing_exchanged_data=True)


def test_dedup_compares_bytes_lexicographically_like_b4a():
    lo = b"\x00" + b"\xff" * 31
    hi = b"\x01" + b"\x00" * 31
    assert sl.keep_new_connection(hi, lo, True, False)
    assert not sl.keep_new_connection(lo, hi, True, False)


# -- backoff -------------------------------------------------------------------

def delays(proven: bool, rng=None) -> list:
    rng = rng or random.Random(1)
    out = []
    for attempts in range(0, 5):
        p = sl.PeerState(A, attempts=attempts, proven=proven)
        out.append(sl.retry_delay(p, rng))
    return out


def test_backoff_schedule_for_proven_peer():
    d = delays(True)
    assert 1.0 <= d[0] <= 1.5 and 1.0 <= d[1] <= 1.5
    assert 5.0 <= d[2] <= 6.0
    assert 15.0 <= d[3] <= 17.0
    assert d[4] is None


def test_backoff_schedule_for_unproven_peer():
    d = delays(False)
    assert 5.0 <= d[1] <= 6.0
    assert 15.0 <= d[2] <= 17.0 and 15.0 <= d[3] <= 17.0
    assert d[4] is None


def test_banned_peer_is_never_retried():
    assert sl.retry_delay(sl.PeerState(A, banned=True), random.Random(0)) is None


def test_refresh_delay_is_ten_minutes_plus_jitter():
    rng = random.Random(3)
    for _ in range(50):
        assert 600.0 <= sl.refresh_delay(rng) <= 720.0
        assert 0.0 <= sl.refresh_delay(rng, eager=True) <= 120.0


# -- the peer table ------------------------------------------------------------

def table(**kw) -> sl.PeerTable:
    t = sl.PeerTable(A, rng=random.Random(7), **kw)
    t.client_topics.add(T1)
    return t


def test_found_peers_are_dialled_within_max_parallel():
    t = table(max_parallel=2)
    for i in range(5):
        t.found(key(100 + i), [("127.0.0.1", 1000 + i)], T1, now=0.0)
    first = t.dials(0.0)
    assert [p.public_key for p in first] == [key(100), key(101)]
    for p in first:
        t.dial_started(p.public_key)
    assert t.dials(0.0) == []
    t.opened(key(100), 0.5)
    assert [p.public_key for p in t.dials(0.5)] == [key(102)]


def test_own_key_is_ignored():
    t = table()
    assert t.found(A, [], T1, 0.0) is None
    assert t.dials(0.0) == []


def test_max_peers_caps_dials_and_incoming():
    t = table(max_peers=2, max_parallel=10)
    for i in range(4):
        t.found(key(i + 1), [], T1, 0.0)
    dial = t.dials(0.0)
    assert len(dial) == 2
    for p in dial:
        t.dial_started(p.public_key)
        t.opened(p.public_key, 0.0)
    assert t.dials(0.0) == []
    assert not t.accepts_incoming()
    t.closed(dial[0].public_key, 1.0)
    assert t.accepts_incoming()


def test_topics_accumulate_per_peer():
    t = table()
    t.client_topics.add(T2)
    t.found(B, [], T1, 0.0)
    peer = t.found(B, [("127.0.0.1", 5)], T2, 0.0)
    assert peer.topics == [T1, T2]
    assert peer.relay_addresses == [("127.0.0.1", 5)]


def test_lost_connection_is_redialled_with_backoff_then_given_up():
    t = table()
    t.found(B, [], T1, 0.0)
    t.dial_started(B)
    t.opened(B, 0.0)
    now = 1.0
    retry = t.closed(B, now)  # lived 1 s: attempts 1, proven -> short backoff
    assert retry is not None and 1.0 <= retry - now <= 1.5
    assert t.dials(now) == [] and t.next_deadline() == retry
    assert [p.public_key for p in t.dials(retry)] == [B]
    # three failed dials in a row: medium, long, then give up
    waits = []
    for _ in range(3):
        t.dial_started(B)
        now = t.next_deadline() or now
        r = t.closed(B, now + 0.1)
        waits.append(None if r is None else r - (now + 0.1))
    assert 5.0 <= waits[0] <= 6.0
    assert 15.0 <= waits[1] <= 17.0
    assert waits[2] is None
    assert B not in t.peers
    assert t.next_deadline() is None


def test_long_lived_connection_retries_fast():
    t = table()
    t.found(B, [], T1, 0.0)
    t.dial_started(B)
    t.opened(B, 0.0)
    t.closed(B, 1.0)
    t.dial_started(B)
    t.opened(B, 2.0)
    retry = t.closed(B, 2.0 + sl.MIN_CONNECTION_TIME)
    assert retry - (2.0 + sl.MIN_CONNECTION_TIME) <= 1.5


def test_recently_lost_peer_dials_before_new_peers():
    t = table(max_parallel=1)
    t.found(B, [], T1, 0.0)
    t.dial_started(B)
    t.opened(B, 0.0)
    retry = t.closed(B, 1.0)
    for i in range(3):
        t.found(key(50 + i), [], T1, 0.0)
    assert t.dials(retry)[0].public_key == B


def test_banned_peer_is_not_dialled_or_retried():
    t = table()
    t.found(B, [], T1, 0.0)
    t.ban(B, 0.0)
    assert t.dials(0.0) == []
    t.found(B, [], T1, 1.0)
    assert t.dials(1.0) == []


def test_leaving_topic_stops_redials():
    t = table()
    t.found(B, [], T1, 0.0)
    t.dial_started(B)
    t.opened(B, 0.0)
    t.left(T1)
    assert t.closed(B, 1.0) is None
    assert t.next_deadline() is None
    assert B not in t.peers


def test_server_only_peers_are_not_dialled():
    t = sl.PeerTable(A, rng=random.Random(0))
    t.found(B, [], T1, 0.0)  # found, but T1 is not a client topic
    assert t.dials(0.0) == []


def test_rediscovered_peer_after_giving_up_gets_one_more_chance():
    t = table()
    t.found(B, [], T1, 0.0)
    peer = t.peers[B]
    peer.attempts = sl.MAX_ATTEMPTS + 1
    t.found(B, [], T1, 5.0)
    assert [p.public_key for p in t.dials(5.0)] == [B]


# -- path choice ---------------------------------------------------------------

LOCAL = ("127.0.0.1", 40000)
RELAY = ("127.0.0.1", 49738)
SERVER = ("127.0.0.1", 49085)


def path(**kw):
    args = dict(
        relayed=True,
        relay_address=RELAY,
        server_address=SERVER,
        client_address=("127.0.0.1", 46907),
        server_firewall=FIREWALL_UNKNOWN,
        server_addresses=[("127.0.0.1", 38029)],
        server_holepunchable=True,
        client_firewall=FIREWALL_UNKNOWN,
        local_addresses=[LOCAL],
    )
    args.update(kw)
    return choose_client_path(**args)


def test_direct_handshake_connects_to_the_node_we_asked():
    assert path(relayed=False, server_address=RELAY).address == RELAY
    assert path(relayed=False).kind is PathKind.DIRECT


def test_open_server_uses_first_public_address_else_relay_view():
    p = path(server_firewall=FIREWALL_OPEN, server_addresses=[("10.0.0.2", 1), ("8.8.8.8", 2)])
    assert p.kind is PathKind.DIRECT and p.address == ("8.8.8.8", 2)
    p = path(server_firewall=FIREWALL_OPEN)
    assert p.kind is PathKind.DIRECT and p.address == SERVER


def test_server_without_holepunch_info_is_dialled_directly():
    p = path(server_holepunchable=False)
    assert p.kind is PathKind.DIRECT and p.address == SERVER


def test_open_client_waits_for_server():
    assert path(client_firewall=FIREWALL_OPEN).kind is PathKind.PASSIVE


def test_same_host_takes_lan_shortcut_to_server_local_address():
    p = path()
    assert p.kind is PathKind.LAN and p.address == ("127.0.0.1", 38029)


def test_different_hosts_need_holepunch():
    assert path(client_address=("8.8.4.4", 1)).kind is PathKind.HOLEPUNCH
    assert path(lan=False).kind is PathKind.HOLEPUNCH


def test_match_address_prefers_longest_prefix():
    mine = [("192.168.122.238", 1)]
    theirs = [("10.1.1.1", 2), ("192.168.0.23", 3), ("192.168.122.1", 4)]
    assert match_address(mine, theirs) == ("192.168.122.1", 4)
    assert match_address(mine, [("10.1.1.1", 2)]) is None


@pytest.mark.parametrize(
    "host,private,reserved",
    [("127.0.0.1", True, False), ("10.2.3.4", True, False), ("8.8.8.8", False, False),
     ("0.0.0.0", False, True), ("224.0.0.1", False, True), ("100.64.1.1", True, False)],
)
def test_bogon_classes_match_node_bogon(host, private, reserved):
    assert is_private(host) is private
    assert is_reserved(host) is reserved
    assert is_bogon(host) is (private or reserved)


def test_server_connects_now_only_when_client_reachable_or_direct():
    assert server_connects_now(client_firewall=FIREWALL_OPEN, direct=False)
    assert server_connects_now(client_firewall=FIREWALL_UNKNOWN, direct=True)
    assert not server_connects_now(client_firewall=FIREWALL_UNKNOWN, direct=False)


# -- invariants under random event sequences -----------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

EVENTS = st.lists(
    st.tuples(st.sampled_from(["found", "dial", "open", "close", "ban", "leave", "tick"]),
              st.integers(1, 6), st.floats(0, 30)),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(EVENTS, st.integers(1, 4), st.integers(1, 3))
def test_peer_table_never_breaks_its_limits(events, max_peers, max_parallel):
    t = sl.PeerTable(A, max_peers=max_peers, max_parallel=max_parallel, rng=random.Random(0))
    t.client_topics.add(T1)
    now = 0.0
    for kind, i, dt in events:
        now += dt
        pk = key(i)
        peer = t.peers.get(pk)
        if kind == "found":
            t.found(pk, [], T1, now)
        elif kind == "dial":
            for p in t.dials(now):
                assert not (p.banned or p.connected or p.connecting) and p.retry_at <= now
                t.dial_started(p.public_key)
        elif kind == "open" and peer is not None and peer.connecting:
            t.opened(pk, now)
        elif kind == "close" and peer is not None and (peer.connecting or peer.connected):
            retry = t.closed(pk, now)
            assert retry is None or retry > now
        elif kind == "ban":
            t.ban(pk, now)
        elif kind == "leave":
            t.left(T1)
            t.client_topics.add(T1)
        assert t.connecting_count <= max_parallel
        assert t.connection_count <= max_peers
        deadline = t.next_deadline()
        assert deadline is None or any(p.retry_at == deadline for p in t.peers.values())
