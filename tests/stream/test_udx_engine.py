"""The sans-IO UDX engine driven directly: a fake clock, hand-carried datagrams."""

from __future__ import annotations

from mesh.errors import TimeoutError_
from mesh.udx import UDXConfig, UDXEngine
from mesh.udx import packet as P


class Rec:
    def __init__(self):
        self.data = bytearray()
        self.ended = False
        self.closed = "open"

    def on_data(self, d):
        self.data += d

    def on_end(self):
        self.ended = True

    def on_message(self, d):
        pass

    def on_close(self, exc):
        self.closed = exc

    def on_writable(self):
        pass


def make(cfg=UDXConfig()):
    wa, wb = [], []
    ra, rb = Rec(), Rec()
    a, b = UDXEngine(1, wa.append, ra, cfg), UDXEngine(2, wb.append, rb, cfg)
    a.connect(2, 0.0)
    b.connect(1, 0.0)
    return a, b, wa, wb, ra, rb


def carry(wire, dst, now, drop=lambda i, d: False):
    out = list(wire)
    wire.clear()
    for i, d in enumerate(out):
        if not drop(i, d):
            typ, off, rid, rwnd, seq, ack = P.decode_header(d)
            dst.receive(typ, off, rwnd, seq, ack, d, now)
    return len(out)


def test_header_codec_roundtrip():
    d = P.encode(P.DATA | P.END, 0xDEADBEEF, 1 << 22, 2**32 + 5, 7, b"xyz")
    assert P.decode_header(d) == (3, 0, 0xDEADBEEF, 1 << 22, 5, 7)
    blocks, payload = P.split_body(P.SACK, 16, P.encode_sack(1, 0, 0, 0, [(3, 5), (9, 12)]))
    assert blocks == [(3, 5), (9, 12)] and bytes(payload) == b""


def test_lost_packet_is_repaired_by_sack_then_delivered_in_order():
    a, b, wa, wb, ra, rb = make()
    now = 0.0
    a.write(bytes(range(256)) * 40, now)  # 10240 bytes: 9 packets in the initial window
    carry(wa, b, now + 0.01, drop=lambda i, d: i == 2)
    assert bytes(rb.data) == (bytes(range(256)) * 40)[: 2 * a.mss]
    carry(wb, a, now + 0.02)  # SACKs tell the sender packet 2 is missing
    # the loss is declared by RACK once the reordering window has passed
    t = a.next_deadline()
    assert t is not None
    a.handle_timer(max(t, 0.03))
    assert a.counters["retransmits"] >= 1
    carry(wa, b, 0.04)
    assert bytes(rb.data) == bytes(range(256)) * 40


def test_rto_backs_off_and_closes_after_six():
    a, b, wa, wb, ra, rb = make()
    a.write(b"x" * 100, 0.0)
    wa.clear()  # the peer never hears anything
    deadlines = []
    while a.next_deadline() is not None and len(deadlines) < 50:
        t = a.next_deadline()
        deadlines.append(t)
        a.handle_timer(t)
        wa.clear()
    assert isinstance(ra.closed, TimeoutError_)
    assert a.counters["rto_timeouts"] == 6
    assert deadlines[-1] < 200


def test_end_both_ways_closes_cleanly():
    a, b, wa, wb, ra, rb = make()
    a.write(b"bye", 0.0)
    a.end(0.0)
    b.end(0.0)
    for step in range(1, 6):
        carry(wa, b, step * 0.01)
        carry(wb, a, step * 0.01 + 0.005)
    assert ra.closed is None and rb.closed is None
    assert rb.ended and ra.ended and bytes(rb.data) == b"bye"
