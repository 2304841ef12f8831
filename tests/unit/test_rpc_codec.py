"""protomux and protomux-rpc codecs against bytes captured from the real Node stack.

tests/data/rpc-capture.json was recorded with tests/interop/node/rpc-capture.js
(a hyperdht testnet on 127.0.0.1, real @hyperswarm/rpc 3.5.0 server and client).
"""

from __future__ import annotations

import json
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.errors import DecodeError
from mesh.rpc import errors as E
from mesh.rpc import messages as M
from mesh.rpc import mux_codec as mc

CAPTURE = json.loads((pathlib.Path(__file__).parent.parent / "data" / "rpc-capture.json").read_text())
MESSAGES = [bytes.fromhex(m["hex"]) for m in CAPTURE["messages"]]
SERVER_KEY = bytes.fromhex(CAPTURE["serverPublicKey"])


def reencode(msg: bytes) -> bytes:
    """Decode a captured message fully and encode it again from the parts."""
    (item,) = mc.decode(msg)
    if isinstance(item, mc.Open):
        return mc.encode_open(item.remote_id, item.protocol, item.id, item.handshake)
    if isinstance(item, mc.Close):
        return mc.encode_close(item.remote_id)
    if isinstance(item, mc.Reject):
        return mc.encode_reject(item.local_id)
    assert isinstance(item, mc.Message)
    if item.type == M.REQUEST:
        req = M.decode_request(item.payload)
        return mc.encode_message(item.remote_id, 0, M.encode_request(req.id, req.method, req.value))
    res = M.decode_response(item.payload)
    if res.error is None:
        body = M.encode_response(res.id, res.value)
    else:
        body = M.encode_error_response(res.id, res.error)
    return mc.encode_message(item.remote_id, 1, body)


@pytest.mark.parametrize("n", range(len(MESSAGES)))
def test_captured_message_reencodes_byte_identically(n):
    assert reencode(MESSAGES[n]) == MESSAGES[n]


def test_rpc_md_echo_request_and_response():
    (req,) = mc.decode(bytes.fromhex("01000104656368 6f0568656c6c6f".replace(" ", "")))
    assert (req.remote_id, req.type) == (1, 0)
    r = M.decode_request(req.payload)
    assert (r.id, r.method, bytes(r.value)) == (1, "echo", b"\x05hello")
    (res,) = mc.decode(bytes.fromhex("010100010568656c6c6f"))
    d = M.decode_response(res.payload)
    assert (d.id, bytes(d.value), d.error) == (1, b"\x05hello", None)
    assert mc.encode_message(1, 0, M.encode_request(1, "echo", b"\x05hello")).hex() == "010001046563686f0568656c6c6f"


def test_open_from_capture_names_the_server_key():
    (o,) = mc.decode(MESSAGES[0])
    assert o == mc.Open(1, "protomux-rpc", SERVER_KEY, b"")


def test_error_responses_from_capture():
    unknown = M.decode_response(mc.decode(MESSAGES[14])[0].payload)
    assert unknown.error == E.WireError("Unknown method 'nope'", "UNKNOWN_METHOD")
    fail = M.decode_response(mc.decode(MESSAGES[18])[0].payload)
    assert fail.error == E.WireError("Request failed", "REQUEST_ERROR", "boom", None, None)
    err = E.from_wire(*[getattr(fail.error, f) for f in ("message", "code", "cause_message", "cause_code", "context")])
    assert isinstance(err, E.RequestFailedError) and err.code == "REQUEST_ERROR" and err.message == "boom"


def test_event_and_late_response_from_capture():
    ev = M.decode_request(mc.decode(MESSAGES[22])[0].payload)
    assert (ev.id, ev.method, bytes(ev.value)) == (0, "note", b"\x0ffire-and-forget")
    late = M.decode_response(mc.decode(MESSAGES[24])[0].payload)
    assert (late.id, bytes(late.value)) == (5, b"\x01x")


def test_capability_handshake_verifies_on_capture():
    caps = [m for m in CAPTURE["messages"] if m["label"] == "capability" and m["dir"] == "tx"
            and m["hex"].startswith("0001")]
    assert len(caps) == 2
    key = bytes([0x55]) * 32
    for m in caps:
        (o,) = mc.decode(bytes.fromhex(m["hex"]))
        hh = bytes.fromhex(m["handshakeHash"])
        is_initiator = m["side"] == "client"
        assert len(bytes.fromhex(m["hex"])) == 82
        assert o.handshake == M.encode_handshake(M.capability(is_initiator, key, hh))
        # the receiver verifies with its own role
        assert M.verify_capability(o.handshake, not is_initiator, key, hh)
        assert not M.verify_capability(o.handshake, is_initiator, key, hh)
        assert not M.verify_capability(o.handshake, not is_initiator, bytes(32), hh)


def test_node_batch_from_rpc_md():
    # Node corked two requests and an event (batch-check.js in rpc-reference)
    batch = (b"\x00\x00\x01\x0b\x00\x01\x04echo\x03one\x0b\x00\x02\x04echo\x03two"
             b"\x0d\x00\x00\x04echo\x05three")
    items = mc.decode(batch)
    assert [(i.remote_id, i.type) for i in items] == [(1, 0), (1, 0), (1, 0)]
    reqs = [M.decode_request(i.payload) for i in items]
    assert [(r.id, bytes(r.value)) for r in reqs] == [(1, b"\x03one"), (2, b"\x03two"), (0, b"\x05three")]
    assert mc.encode_batch([(1, b"\x00" + M.encode_request(r.id, r.method, r.value)) for r in reqs]) == batch


def test_batch_with_control_and_channel_switch():
    open_item = mc.encode_open(1, "protomux-rpc", b"k" * 32)[1:]
    req = b"\x00" + M.encode_request(1, "py-a", b"")
    batch = mc.encode_batch([(0, open_item), (1, req)])
    assert batch[:3] == b"\x00\x00\x00"
    items = mc.decode(batch)
    assert items[0] == mc.Open(1, "protomux-rpc", b"k" * 32, b"")
    assert items[1].remote_id == 1 and M.decode_request(items[1].payload).method == "py-a"
    # Node's reply to it: a one-item batch
    (one,) = mc.decode(b"\x00\x00\x01\x08\x01\x00\x01\x04py-a")
    assert one.remote_id == 1 and one.type == 1 and M.decode_response(one.payload).id == 1


def test_overlong_batch_item_is_clamped_like_protomux():
    items = mc.decode(b"\x00\x00\x01\x20\x00\x01\x01m")
    assert len(items) == 1 and M.decode_request(items[0].payload).method == "m"


def test_nested_batch_is_refused():
    inner = b"\x00\x00\x01\x02\x00\x00"
    with pytest.raises(DecodeError):
        mc.decode(b"\x00\x00\x00" + bytes([len(inner) - 1]) + inner[1:])


def test_unknown_control_type_is_ignored():
    assert mc.decode(b"\x00\x09\x01\x02") == []


def test_error_response_with_code_cause_and_context_round_trips():
    w = E.WireError("Request failed", "REQUEST_ERROR", "busy now", "BUSY", "queue full")
    body = M.encode_error_response(300, w)
    assert body[0] == 0x0F
    assert M.decode_response(body) == M.Response(300, None, w)


def test_large_ids_and_long_methods():
    body = M.encode_request(70000, "m" * 300, b"\x00")
    r = M.decode_request(body)
    assert (r.id, r.method) == (70000, "m" * 300)
    assert M.decode_response(M.encode_response(1 << 40, b"x")).id == 1 << 40


# ---------------------------------------------------------------- fuzzing

@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_mux_decoder_raises_only_decode_error(data):
    try:
        items = mc.decode(data)
    except DecodeError:
        return
    for item in items:
        if isinstance(item, mc.Message):
            for dec in (M.decode_request, M.decode_response):
                try:
                    dec(item.payload)
                except DecodeError:
                    pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=100))
def test_rpc_decoders_raise_only_decode_error(data):
    for dec in (M.decode_request, M.decode_response, M.decode_handshake):
        try:
            dec(data)
        except DecodeError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**64 - 1), st.text(max_size=40), st.binary(max_size=50))
def test_request_round_trip(rid, method, value):
    r = M.decode_request(M.encode_request(rid, method, value))
    assert (r.id, r.method, bytes(r.value)) == (rid, method, value)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 2**32), st.text(max_size=20), st.one_of(st.none(), st.text(max_size=10)),
       st.one_of(st.none(), st.text(max_size=10)), st.one_of(st.none(), st.text(min_size=1, max_size=10)))
def test_error_response_round_trip(rid, message, code, cause, context):
    w = E.WireError(message, code or None, cause, None, context if cause is not None else None)
    assert M.decode_response(M.encode_error_response(rid, w)) == M.Response(rid, None, w)
