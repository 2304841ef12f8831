"""dht-rpc / hyperdht codecs against bytes captured from, and recorded with, Node."""

from __future__ import annotations

import json
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh import crypto
from mesh.dht import messages as m
from mesh.errors import DecodeError

# Recorded with tests/interop/node/dht-vectors.js (hyperdht 6.34.0).
V = {k: (bytes.fromhex(v) if k != "seed" else v) for k, v in
     json.loads((pathlib.Path(__file__).parent / "dht_vectors.json").read_text()).items()}
KP = crypto.keypair(bytes.fromhex(V["seed"]))
TARGET, NODE_ID, TOKEN = b"\xaa" * 32, b"\xbb" * 32, b"\xcc" * 32
PEER = m.PeerRecord(KP.public_key, (("127.0.0.1", 49738), ("10.1.2.3", 1)))

# PROTOCOL.md 6.1 / 6.2 (live capture)
ANNOUNCE_REQ = bytes.fromhex(
    "031a52357f0000014cc2"
    "6d5a38acfc75bcb26930589e01da2ab10af227cbfbf0bf57f0e27dc266e12235"
    "04a201c8689d0049bc28d0735b37dcb3cfbd97efc7cbb18360b3c2b90eba628cf0"
    "6805"
    "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
    "017f0000014ac2"
    "d0af241c4cb6a59633be48eba2f150826a8170a75d85b69238aeef37199141ea"
    "268fabfe10c29e335420de963b34cfa44aa886f2b93a5bcf363068893e9e8a0c"
)
ANNOUNCE_RES = bytes.fromhex(
    "130152357f00000169a2b89d3be56fb053503c63dc487b8071b8c0087fdda43036e02151a3a1e86fd74a")
LOOKUP_REQ = bytes.fromhex(
    "030898237f0000014dc203a201c8689d0049bc28d0735b37dcb3cfbd97efc7cbb18360b3c2b90eba628cf0")
LOOKUP_RES = bytes.fromhex(
    "131798237f000001e0e7"
    "901ea83061a41159799be3a934fb6069e825d38d39be238eb874abf50c1cbbf1"
    "529a5b0f2a3e5b14d9a33ea013eb4b8bcd77f7441b849840d34b3d6ed684a5a5"
    "037f0000014cc27f0000014ac27f0000014bc2"
    "29018a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c017f0000014ac200"
)


def test_captured_announce_request_roundtrips_and_verifies():
    req = m.decode_message(ANNOUNCE_REQ)
    assert isinstance(req, m.Request)
    assert (req.tid, req.to, req.command, req.internal, req.id) == (0x3552, ("127.0.0.1", 49740), m.ANNOUNCE, False, None)
    assert m.encode_request(req) == ANNOUNCE_REQ
    ann = m.decode_announce(req.value)
    assert ann.peer.relay_addresses == (("127.0.0.1", 49738),)
    assert m.encode_announce(ann) == req.value
    storing_id = m.node_id(("127.0.0.1", 49740))
    signable = m.announce_signable(req.target, storing_id, req.token, ann)
    assert crypto.verify(ann.signature, signable, ann.peer.public_key)


def test_captured_responses():
    res = m.decode_message(ANNOUNCE_RES)
    assert isinstance(res, m.Response)
    assert res.id == m.node_id(("127.0.0.1", 49740))
    assert res.to == ("127.0.0.1", 41577) and res.token is None and res.closer_nodes == []
    assert m.encode_response(res) == ANNOUNCE_RES
    res = m.decode_message(LOOKUP_RES)
    assert res.id == m.node_id(("127.0.0.1", 49741))
    assert res.closer_nodes == [("127.0.0.1", 49740), ("127.0.0.1", 49738), ("127.0.0.1", 49739)]
    lr = m.decode_lookup_reply(res.value)
    assert lr.bump == 0 and lr.peers[0].public_key.hex().startswith("8a88e3dd")
    assert m.encode_response(res) == LOOKUP_RES
    req = m.decode_message(LOOKUP_REQ)
    assert req.command == m.LOOKUP and req.target.hex().startswith("a201c868")
    assert m.encode_request(req) == LOOKUP_REQ


def test_recorded_bodies_match_node():
    assert KP.public_key == V["publicKey"]
    assert m.encode_peer(PEER) == V["peer"]
    sig = crypto.sign(m.announce_signable(TARGET, NODE_ID, TOKEN, m.Announce(PEER)), KP.secret_key)
    assert m.encode_announce(m.Announce(PEER, None, sig)) == V["announce"]
    assert m.encode_announce(m.Announce(PEER, None, sig, 1700000000000)) == V["announceBump"]
    un = m.Announce(m.PeerRecord(KP.public_key, ()))
    un.signature = crypto.sign(m.announce_signable(TARGET, NODE_ID, TOKEN, un, m.NS_UNANNOUNCE), KP.secret_key)
    assert m.encode_announce(un) == V["unannounce"]
    assert m.encode_lookup_reply([V["peer"]], 42) == V["lookupRawReply"]
    assert m.decode_lookup_reply(V["lookupRawReply"]).peers == [PEER]
    msig = crypto.sign(m.mutable_signable(5, b"hello"), KP.secret_key)
    assert msig == V["mutableSignature"]
    assert m.encode_mutable_put(m.MutablePut(KP.public_key, 5, b"hello", msig)) == V["mutablePutRequest"]
    assert m.encode_mutable_get(m.MutableGet(5, b"hello", msig)) == V["mutableGetResponse"]
    assert m.decode_mutable_put(V["mutablePutRequest"]).seq == 5


def test_handshake_and_holepunch_bodies():
    hs = m.Handshake(m.FROM_RELAY, b"\x01" * 40, ("127.0.0.1", 1234))
    assert m.encode_handshake(hs) == V["handshake"]
    assert m.decode_handshake(V["handshake"]) == hs
    both = m.decode_handshake(V["handshakeBoth"])
    assert both == m.Handshake(m.FROM_SECOND_RELAY, b"\x02" * 3, ("127.0.0.1", 1), ("127.0.0.2", 2))
    assert m.encode_handshake(both) == V["handshakeBoth"]
    hp = m.decode_holepunch(V["holepunch"])
    assert hp == m.Holepunch(m.FROM_SERVER, 300, b"\x03" * 10, ("127.0.0.1", 999))
    assert m.encode_holepunch(hp) == V["holepunch"]


def test_namespaces_match_protocol():
    assert m.NS_ANNOUNCE == crypto.namespace("hyperswarm/dht", [4])[0]
    assert len({m.NS_ANNOUNCE, m.NS_UNANNOUNCE, m.NS_MUTABLE_PUT, m.NS_PEER_HANDSHAKE}) == 4


@pytest.mark.parametrize("raw", [ANNOUNCE_REQ, LOOKUP_RES])
def test_unknown_trailing_bytes_are_tolerated(raw):
    assert m.decode_message(raw + b"\x09\x08\x07") == m.decode_message(raw)


def test_trailing_bytes_in_bodies():
    assert m.decode_announce(V["announce"] + b"\x01\x02").signature == m.decode_announce(V["announce"]).signature
    assert m.decode_handshake(V["handshake"] + b"\xff").noise == b"\x01" * 40
    assert m.decode_mutable_get(V["mutableGetResponse"] + b"\x00").value == b"hello"


@pytest.mark.parametrize("raw", [ANNOUNCE_REQ, ANNOUNCE_RES, LOOKUP_REQ, LOOKUP_RES])
def test_truncations_raise_decode_error(raw):
    for n in range(len(raw) - 1):
        # a cut inside a trailing optional field may still decode; it must never raise anything else
        try:
            m.decode_message(raw[:n])
        except DecodeError:
            continue


DECODERS = [m.decode_message, m.decode_announce, m.decode_lookup_reply, m.decode_peer, m.decode_mutable_put,
            m.decode_mutable_get, m.decode_handshake, m.decode_holepunch, m.decode_uint]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(DECODERS))
def test_decoders_raise_only_decode_error(data, decoder):
    try:
        decoder(data)
    except DecodeError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([ANNOUNCE_REQ, LOOKUP_RES, V["announce"], V["handshakeBoth"]]), st.integers(0, 200),
       st.integers(0, 255))
def test_mutated_vectors_raise_only_decode_error(raw, pos, byte):
    mutated = bytearray(raw)
    mutated[pos % len(raw)] = byte
    for decoder in DECODERS:
        try:
            decoder(bytes(mutated))
        except DecodeError:
            pass


@given(st.integers(0, 0xFFFF), st.binary(min_size=32, max_size=32), st.binary(max_size=100), st.booleans())
def test_request_roundtrip(tid, target, value, internal):
    r = m.Request(tid, ("127.0.0.1", 5), 3, internal, None, target, target, value or None)
    assert m.decode_message(m.encode_request(r)) == r
