"""protomux state machine (sans-IO): pairing, buffering, rejects, closes, id rules, batches."""

from __future__ import annotations

import pytest

from mesh.errors import DecodeError
from mesh.rpc import mux_codec as mc
from mesh.rpc.errors import DuplicateChannelError, ProtocolError
from mesh.rpc.mux import ChannelClosed, ChannelMessage, ChannelOpened, Mux

KEY = b"k" * 32


def pump(a: Mux, b: Mux) -> None:
    """Deliver everything queued on either side until both are quiet."""
    while True:
        out_a, out_b = a.data_to_send(), b.data_to_send()
        if not out_a and not out_b:
            return
        for m in out_a:
            b.receive(m)
        for m in out_b:
            a.receive(m)


def kinds(events):
    return [type(e).__name__ for e in events]


def test_both_sides_open_and_pair_then_exchange_messages():
    a, b = Mux(), Mux()
    ca = a.open_channel("protomux-rpc", KEY)
    cb = b.open_channel("protomux-rpc", KEY)
    pump(a, b)
    assert ca.opened and cb.opened and ca.remote_id == cb.local_id == 1
    assert kinds(a.events()) == ["ChannelOpened"] and kinds(b.events()) == ["ChannelOpened"]
    a.send(ca, 0, b"hi")
    pump(a, b)
    (ev,) = b.events()
    assert isinstance(ev, ChannelMessage) and ev.channel is cb and (ev.type, bytes(ev.payload)) == (0, b"hi")


def test_messages_before_pairing_are_buffered_and_replayed():
    a = Mux()
    hook_calls = []
    b = Mux(pair=lambda proto, id_, hs: hook_calls.append(proto) or b.open_channel(proto, id_))
    ca = a.open_channel("protomux-rpc", KEY, handshake=b"\x01hs")
    a.send(ca, 0, b"one")
    a.send(ca, 0, b"two")
    for m in a.data_to_send():
        b.receive(m)
    assert hook_calls == ["protomux-rpc"]
    evs = b.events()
    assert kinds(evs) == ["ChannelOpened", "ChannelMessage", "ChannelMessage"]
    assert evs[0].channel.remote_handshake == b"\x01hs"
    assert [bytes(e.payload) for e in evs[1:]] == [b"one", b"two"]
    assert b.buffered == 0


def test_unknown_protocol_is_rejected_not_fatal():
    a, b = Mux(), Mux()
    ca = a.open_channel("hypercore/alpha", KEY)
    a.send(ca, 0, b"x")
    pump(a, b)
    assert ca.closed
    evs = a.events()
    assert isinstance(evs[-1], ChannelClosed) and evs[-1].remote
    assert b.counters["rejected_open"] == 1
    # the stream lives on: a later channel still pairs
    c2 = a.open_channel("protomux-rpc", KEY)
    b.open_channel("protomux-rpc", KEY)
    pump(a, b)
    assert c2.opened and c2.local_id == 1  # the rejected id was freed and reused


def test_several_protocols_on_one_connection():
    a, b = Mux(), Mux()
    chans = [(a.open_channel(p, KEY), b.open_channel(p, KEY)) for p in ("protomux-rpc", "other", "third")]
    pump(a, b)
    a.events(), b.events()
    for i, (ca, cb) in enumerate(chans):
        a.send(ca, 0, bytes([i]))
    pump(a, b)
    got = {e.channel.protocol: bytes(e.payload) for e in b.events()}
    assert got == {"protomux-rpc": b"\x00", "other": b"\x01", "third": b"\x02"}


def test_open_ids_must_grow_by_one():
    b = Mux()
    with pytest.raises(ProtocolError, match="Invalid open"):
        b.receive(mc.encode_open(2, "protomux-rpc", KEY))


def test_open_of_a_used_remote_id_is_fatal():
    b = Mux(pair=lambda p, i, h: b.open_channel(p, i))
    b.receive(mc.encode_open(1, "protomux-rpc", KEY))
    with pytest.raises(ProtocolError):
        b.receive(mc.encode_open(1, "protomux-rpc", b"x" * 32))


def test_open_of_control_channel_is_rejected():
    b = Mux()
    b.receive(mc.encode_open(0, "protomux-rpc", KEY))
    assert b.data_to_send() == [mc.encode_reject(0)]


def test_reject_for_unknown_id_is_fatal_like_protomux():
    with pytest.raises(ProtocolError, match="Invalid reject"):
        Mux().receive(mc.encode_reject(3))


def test_messages_and_closes_for_unknown_channels_are_ignored():
    b = Mux()
    b.receive(b"\x07\x00hello")
    b.receive(mc.encode_close(9))
    b.receive(b"")  # keepalive
    assert b.events() == [] and b.counters == {"unknown_channel": 1, "close_unknown_channel": 1}


def test_remote_close_closes_the_paired_channel_and_frees_ids():
    a, b = Mux(), Mux()
    ca, cb = a.open_channel("p", KEY), b.open_channel("p", KEY)
    pump(a, b)
    a.events(), b.events()
    a.close(ca)
    pump(a, b)
    assert cb.closed and kinds(b.events()) == ["ChannelClosed"]
    assert kinds(a.events()) == ["ChannelClosed"]
    # after the close the peer may reuse its id 1
    ca2, cb2 = a.open_channel("p", KEY), b.open_channel("p", KEY)
    pump(a, b)
    assert ca2.local_id == 1 and ca2.opened and cb2.opened
    a.send(ca2, 3, b"z")
    pump(a, b)
    (ev,) = [e for e in b.events() if isinstance(e, ChannelMessage)]
    assert ev.channel is cb2


def test_duplicate_channel_is_refused():
    a = Mux()
    a.open_channel("p", KEY)
    with pytest.raises(DuplicateChannelError):
        a.open_channel("p", KEY)


def test_channel_closed_before_pairing_keeps_its_id_until_the_peer_answers():
    a, b = Mux(), Mux()
    ca = a.open_channel("p", KEY)
    a.close(ca)
    assert a.open_channel("q", KEY).local_id == 2  # 1 is still reserved
    b.open_channel("p", KEY)
    pump(a, b)  # b pairs p with the closed channel (id 1 freed) and rejects q (id 2 freed)
    assert {a.open_channel("r", KEY).local_id, a.open_channel("s", KEY).local_id} == {1, 2}


def test_received_batch_with_several_messages_is_answered_with_a_batch():
    a = Mux()
    b = Mux(pair=lambda p, i, h: b.open_channel(p, i))
    a.cork()
    ca = a.open_channel("p", KEY)
    a.send(ca, 0, b"one")
    a.send(ca, 0, b"two")
    a.uncork()
    (batch,) = a.data_to_send()
    assert batch[:2] == b"\x00\x00"
    b.receive(batch)
    (reply,) = b.data_to_send()  # b's own open, as a one-item "batch" (sent plain)
    assert reply == mc.encode_open(1, "p", KEY)
    assert kinds(b.events()) == ["ChannelOpened", "ChannelMessage", "ChannelMessage"]


def test_cork_collects_and_batch_round_trips():
    a, b = Mux(), Mux()
    ca, cb = a.open_channel("p", KEY), b.open_channel("p", KEY)
    pump(a, b)
    a.events(), b.events()
    a.cork()
    for i in range(5):
        a.send(ca, 0, bytes([i]) * 3)
    a.close(ca)
    a.uncork()
    (batch,) = a.data_to_send()
    b.receive(batch)
    evs = b.events()
    assert kinds(evs) == ["ChannelMessage"] * 5 + ["ChannelClosed"]


def test_shutdown_closes_every_channel():
    a = Mux()
    chans = [a.open_channel(p) for p in "xyz"]
    a.shutdown()
    assert all(c.closed for c in chans) and kinds(a.events()) == ["ChannelClosed"] * 3


def test_malformed_frames_raise_decode_error():
    for bad in (b"\x00", b"\x00\x01", b"\x00\x01\x01\x05ab", b"\xfd\x01", b"\x00\x02"):
        with pytest.raises(DecodeError):
            Mux().receive(bad)


# ---------------------------------------------------------------- fuzzing the state machine

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

small = st.integers(0, 4)
frames = st.one_of(
    st.builds(lambda i, p, k: mc.encode_open(i, p, k), small, st.sampled_from(["p", "protomux-rpc"]),
              st.sampled_from([None, KEY])),
    st.builds(mc.encode_reject, small),
    st.builds(mc.encode_close, small),
    st.builds(lambda i, t, b: mc.encode_message(i, t, b), st.integers(1, 4), small, st.binary(max_size=8)),
    st.binary(max_size=24),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(frames, st.lists(frames, min_size=1, max_size=4)), max_size=12))
def test_random_frame_sequences_raise_only_decode_errors(seq):
    def pair(p, i, h):  # like RpcServer.attach's reopen hook
        if p == "protomux-rpc":
            try:
                mux.open_channel(p, i)
            except DuplicateChannelError:
                pass

    mux = Mux(pair=pair)
    mux.open_channel("p", KEY)
    for item in seq:
        if isinstance(item, list):  # several frames in one batch
            try:
                item = mc.encode_batch([mc.split_channel(f) for f in item])
            except DecodeError:
                continue
        try:
            mux.receive(item)
        except DecodeError:
            return  # fatal for the connection, as in protomux
        mux.data_to_send()
        for ev in mux.events():
            assert isinstance(ev, (ChannelOpened, ChannelMessage, ChannelClosed))
        assert mux.buffered >= 0


def test_deferred_open_is_buffered_until_a_local_channel_opens():
    a = Mux()
    b = Mux(pair=lambda p, i, h: p == "protomux-rpc")  # keep rpc opens pending
    ca = a.open_channel("protomux-rpc", KEY)
    a.send(ca, 0, b"early")
    for m in a.data_to_send():
        b.receive(m)
    assert b.data_to_send() == [] and b.events() == [] and b.buffered > 0
    cb = b.open_channel("protomux-rpc", KEY)
    evs = b.events()
    assert kinds(evs) == ["ChannelOpened", "ChannelMessage"] and bytes(evs[1].payload) == b"early"
    assert cb.opened and b.buffered == 0
    pump(a, b)
    assert ca.opened


def test_deferred_open_overflow_and_close_are_rejected():
    from mesh.rpc import mux as mux_module

    b = Mux(pair=lambda p, i, h: True)
    b.receive(mc.encode_open(1, "x", KEY))
    big = b"z" * (mux_module.MAX_PENDING_BUFFER // 2)
    b.receive(mc.encode_message(1, 0, big))
    b.receive(mc.encode_message(1, 0, big))  # over the limit: rejected, buffers dropped
    assert b.data_to_send() == [mc.encode_reject(1)] and b.buffered == 0
    assert b.counters["pending_overflow"] == 1
    b.receive(mc.encode_open(2, "x", KEY))
    b.receive(mc.encode_close(2))  # the peer gave up: reject frees its id
    assert b.data_to_send() == [mc.encode_reject(2)]
    b.open_channel("x", KEY)
    assert b.events() == []  # nothing left to pair with
