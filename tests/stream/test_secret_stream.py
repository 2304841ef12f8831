"""mesh.secret_stream: recorded Node frames, round trips, bad and oversized frames."""

from __future__ import annotations

import json
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh import crypto
from mesh.errors import CryptoError, DecodeError, EncodeError
from mesh.noise import NoiseHandshake
from mesh.secret_stream import FrameTooLarge, SecretStream

V = json.loads((pathlib.Path(__file__).parent / "vectors" / "noise.json").read_text())


def responder_from_vectors() -> SecretStream:
    k = V["responderKeys"]
    return SecretStream(False, bytes.fromhex(k["hash"]), bytes.fromhex(k["tx"]), bytes.fromhex(k["rx"]))


def pair(**kw):
    server, client = crypto.keypair(), crypto.keypair()
    i, r = NoiseHandshake(client, server.public_key), NoiseHandshake(server)
    r.recv(i.send(b""))
    i.recv(r.send(b""))
    a, b = i.result(), r.result()
    return (SecretStream(True, a.handshake_hash, a.tx, a.rx, **kw), SecretStream(False, b.handshake_hash, b.tx, b.rx, **kw))


def test_decrypts_recorded_node_stream_byte_by_byte_and_whole():
    raw = bytes.fromhex(V["initiatorStream"])
    assert raw[:3] == b"\x38\x00\x00"  # the 56-byte id/header frame comes first
    want = [bytes.fromhex(m) for m in V["streamMessages"]]
    s = responder_from_vectors()
    assert s.feed(raw) == want
    assert s.counters["keepalives"] == 1
    s2 = responder_from_vectors()
    got = []
    for i in range(len(raw)):
        got += s2.feed(raw[i : i + 1])
    assert got == want


def test_opens_recorded_node_datagram():
    s = responder_from_vectors()
    assert s.open_datagram(bytes.fromhex(V["initiatorDatagram"])) == bytes.fromhex(V["datagramMessage"])


def test_roundtrip_both_ways_and_datagrams():
    a, b = pair()
    assert b.feed(a.header_frame + a.encrypt(b"x" * 70000) + a.encrypt(b"")) == [b"x" * 70000]
    assert a.feed(b.header_frame + b.encrypt(b"yo")) == [b"yo"]
    assert b.open_datagram(a.seal_datagram(b"d1")) == b"d1"
    assert a.open_datagram(b.seal_datagram(b"d2")) == b"d2"
    with pytest.raises(CryptoError):
        a.open_datagram(a.seal_datagram(b"own direction"))
    with pytest.raises(CryptoError):
        a.open_datagram(b"short")
    assert a.counters["bad_datagrams"] == 2


def test_oversized_frame_is_rejected_and_counted():
    a, b = pair(max_frame=1024)
    b.feed(a.header_frame)
    with pytest.raises(FrameTooLarge):
        b.feed(a.encrypt(b"z" * 2000))
    assert b.counters["oversized"] == 1
    with pytest.raises(CryptoError):  # the stream stays failed
        b.feed(b"")
    with pytest.raises(EncodeError):
        a.encrypt(bytes((1 << 24)))


def test_wrong_header_id_tampered_frame_and_replay():
    a, b = pair()
    a2, _ = pair()
    with pytest.raises(CryptoError):
        b.feed(a2.header_frame)  # header of another session
    a, b = pair()
    f1 = a.encrypt(b"one")
    b.feed(a.header_frame + f1)
    with pytest.raises(CryptoError):
        b.feed(f1)  # replayed frame
    a, b = pair()
    f = bytearray(a.encrypt(b"two"))
    f[-1] ^= 1
    with pytest.raises(CryptoError):
        b.feed(a.header_frame + bytes(f))
    assert b.counters["bad_frames"] == 1


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_never_crashes(data):
    _, b = pair()
    try:
        b.feed(data)
    except (CryptoError, DecodeError):
        pass


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3000), min_size=1, max_size=6), st.data())
def test_frames_split_at_any_points_decrypt_in_order(sizes, data):
    """Chunks that end mid-frame, hold several frames, or start on a frame boundary."""
    a, b = pair()
    messages = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    wire = a.header_frame + b"".join(a.encrypt(m) for m in messages)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(wire) - 1), max_size=8)))
    got = []
    for lo, hi in zip([0, *cuts], [*cuts, len(wire)]):
        got += b.feed(memoryview(wire)[lo:hi])
    assert got == [m for m in messages if m]
    assert b.counters["keepalives"] == sum(1 for m in messages if not m)
