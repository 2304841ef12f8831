"""mesh.noise and mesh.noise_payload: recorded hyperdht vectors, bad input, live Node NoiseWrap."""

from __future__ import annotations

import json
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh import crypto
from mesh.errors import CryptoError, DecodeError
from mesh.noise import NoiseHandshake, NoiseWrap
from mesh.noise_payload import (
    NoisePayload, RelayThroughInfo, UdxInfo, HolepunchInfo, RelayInfo, decode_noise_payload, encode_noise_payload,
)

V = json.loads((pathlib.Path(__file__).parent / "vectors" / "noise.json").read_text())
KEYS = ("hash", "tx", "rx", "holepunchSecret")


def kp(hexseed: str) -> crypto.KeyPair:
    return crypto.keypair(bytes.fromhex(hexseed))


def payload_from(p: dict) -> NoisePayload:
    return NoisePayload(
        firewall=p.get("firewall", 0),
        addresses4=[(a["host"], a["port"]) for a in p.get("addresses4", [])],
        udx=UdxInfo(id=p["udx"]["id"], seq=p["udx"]["seq"], reusable_socket=p["udx"].get("reusableSocket", False)) if p.get("udx") else None,
        secret_stream=1 if p.get("secretStream") else None,
        relay_addresses=[(a["host"], a["port"]) for a in p["relayAddresses"]] if p.get("relayAddresses") else None,
    )


def result_keys(r) -> dict:
    return {"hash": r.handshake_hash.hex(), "tx": r.tx.hex(), "rx": r.rx.hex(), "holepunchSecret": r.holepunch_secret.hex()}


def test_initiator_matches_recorded_vectors():
    server = kp(V["responderSeed"])
    w = NoiseWrap(kp(V["initiatorSeed"]), server.public_key, ephemeral=kp(V["initiatorEphemeralSeed"]))
    assert w.send(payload_from(V["initiatorPayload"])).hex() == V["msg1"]
    p = w.recv(bytes.fromhex(V["msg2"]))
    assert p == payload_from(V["responderPayload"])
    r = w.final()
    assert {k: result_keys(r)[k] for k in KEYS} == {k: V["initiatorKeys"][k] for k in KEYS}
    assert r.remote_public_key == server.public_key


def test_responder_matches_recorded_vectors():
    w = NoiseWrap(kp(V["responderSeed"]), ephemeral=kp(V["responderEphemeralSeed"]))
    p = w.recv(bytes.fromhex(V["msg1"]))
    assert p == payload_from(V["initiatorPayload"])
    assert w.remote_public_key == kp(V["initiatorSeed"]).public_key
    assert w.send(payload_from(V["responderPayload"])).hex() == V["msg2"]
    r = w.final()
    assert {k: result_keys(r)[k] for k in KEYS} == {k: V["responderKeys"][k] for k in KEYS}
    assert not r.is_initiator and r.tx.hex() == V["initiatorKeys"]["rx"]


def _pair():
    server, client = crypto.keypair(), crypto.keypair()
    i = NoiseHandshake(client, server.public_key)
    r = NoiseHandshake(server)
    return i, r, server, client


def test_replayed_message1_is_rejected():
    i, r, *_ = _pair()
    m1 = i.send(b"hi")
    assert r.recv(m1) == b"hi"
    with pytest.raises(CryptoError):
        r.recv(m1)


def test_replayed_message2_is_rejected_and_send_out_of_turn():
    i, r, *_ = _pair()
    r.recv(i.send(b""))
    m2 = r.send(b"ok")
    assert i.recv(m2) == b"ok"
    with pytest.raises(CryptoError):
        i.recv(m2)
    with pytest.raises(CryptoError):
        r.send(b"again")
    assert i.result().tx == r.result().rx and i.result().handshake_hash == r.result().handshake_hash


@pytest.mark.parametrize("pos", [0, 33, 60, 85, -1])
def test_tampered_message1_is_rejected(pos):
    i, r, *_ = _pair()
    m1 = bytearray(i.send(b"payload"))
    m1[pos] ^= 1
    with pytest.raises(CryptoError):
        r.recv(bytes(m1))
    with pytest.raises(CryptoError):  # a failed handshake stays failed
        r.recv(bytes(m1))


def test_tampered_message2_and_wrong_keys_are_rejected():
    i, r, server, client = _pair()
    r.recv(i.send(b""))
    m2 = bytearray(r.send(b""))
    m2[-3] ^= 0x80
    with pytest.raises(CryptoError):
        i.recv(bytes(m2))
    # initiator aimed at another server key: the real server cannot read it
    wrong = NoiseHandshake(client, crypto.keypair().public_key)
    with pytest.raises(CryptoError):
        NoiseHandshake(server).recv(wrong.send(b""))
    # a reply from a key other than the one the initiator expected
    i2 = NoiseHandshake(client, server.public_key)
    imposter = NoiseHandshake(crypto.keypair())
    with pytest.raises(CryptoError):
        imposter.recv(i2.send(b""))


@pytest.mark.parametrize("n", [0, 10, 32, 95])
def test_truncated_messages_are_rejected(n):
    i, r, *_ = _pair()
    with pytest.raises(CryptoError):
        r.recv(i.send(b"")[:n])


def test_payload_roundtrip_all_fields():
    p = NoisePayload(
        error=3, firewall=2,
        holepunch=HolepunchInfo(9, [RelayInfo(("127.0.0.1", 1), ("127.0.0.2", 2))]),
        addresses4=[("127.0.0.1", 40000)], addresses6=[("0:0:0:0:0:0:0:1", 5)],
        udx=UdxInfo(id=0xFFFFFFFF, seq=3, reusable_socket=True), secret_stream=1,
        relay_through=RelayThroughInfo(bytes(range(32)), bytes(32)), relay_addresses=[("127.0.0.9", 9)],
    )
    assert decode_noise_payload(encode_noise_payload(p)) == p
    # trailing bytes and unknown flag bits are tolerated
    assert decode_noise_payload(encode_noise_payload(p) + b"\x07\x07") == p
    assert decode_noise_payload(b"\x01\x80\x01\x00\x00").error == 1  # flag 128: unknown, ignored
    assert decode_noise_payload(b"\x02").version == 2


def test_large_datagrams_feature_bit_sits_beside_reusable_socket():
    """Bit 64 of udx.features is the mesh's; hyperdht reads only bit 1 of it."""
    both = UdxInfo(id=7, reusable_socket=True, large_datagrams=True)
    wire = encode_noise_payload(NoisePayload(udx=both))
    assert wire == bytes([1, 8 | 16, 0, 0]) + bytes([1, 65, 7, 0]) + bytes([1])  # header | udx | secretStream
    assert decode_noise_payload(wire).udx == both
    plain = decode_noise_payload(bytes([1, 8, 0, 0, 1, 1, 7, 0]))  # what a Node peer sends
    assert plain.udx.reusable_socket and not plain.udx.large_datagrams


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_payload_decoder_never_crashes(data):
    try:
        decode_noise_payload(data)
    except DecodeError:
        pass
