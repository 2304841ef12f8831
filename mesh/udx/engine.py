"""The UDX stream engine (sans-IO): reliability, ordering, flow and congestion
control for one stream, wire-compatible with libudx (PROTOCOL.md 4).

Bytes and `now` go in (`receive`, `write`, `end`, `handle_timer`); datagrams
go out through the `transmit(data)` callable and events through a listener
(`on_data`, `on_end`, `on_message`, `on_close`, `on_writable`). Sequence
numbers are unbounded ints inside and 32-bit on the wire.

Sender: a scoreboard of sent packets (cumulative ack + SACK), loss detection by
three SACKed packets above a hole or three duplicate acks (fast retransmit),
retransmissions re-detected RACK-style by later deliveries, RTT/RTO per
RFC 6298 with doubling backoff (six RTOs on one packet close the stream),
NewReno-style AIMD, and the peer's receive window respected (zero window
probed with HEARTBEAT). Receiver: in-order delivery with an out-of-order buffer,
an ACK within `ack_soon` (0.5 ms) once `ack_every` (4) in-order packets are
unacked, else after `ack_delay` (2 ms), data carrying the ACK when it goes first, an immediate SACK when
data is out of order, duplicate or a heartbeat arrives.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ClosedError, TimeoutError_
from . import packet as P
from .scoreboard import Pkt, Scoreboard


@dataclass(frozen=True)
class UDXConfig:
    """Tunables of one stream (defaults follow libudx where it matters)."""

    mtu: int = 1200  # starting MTU; payload per packet = mtu - 48, as libudx
    max_mtu: int = 1500  # probe upward in 32-byte steps (padded DATA) up to this; = mtu disables
    rwnd: int = 4 * 1024 * 1024  # receive window we advertise (bytes)
    initial_cwnd: int = 10  # packets
    initial_rto: float = 1.0
    min_rto: float = 0.2
    max_rto: float = 30.0
    max_rto_count: int = 6  # RTOs on one packet before the stream is closed
    ack_delay: float = 0.002  # delayed ACK for in-order packets below ack_every
    ack_every: int = 4  # ACK soon (within ack_soon) after this many in-order packets
    # Not at once: a burst of packets read in one loop turn (a batch of RPC
    # requests or replies) then gets one ACK, or none when the answer that
    # follows within ack_soon carries it, instead of a pure ACK per 4 packets.
    ack_soon: float = 0.0005
    keepalive: float = 0.0  # send a HEARTBEAT after this much sending silence (0 = off)
    high_water: int = 1024 * 1024  # write buffer above which writes should wait
    max_ooo_packets: int = 8192  # out-of-order packets buffered at most
    linger: float = 30.0  # after a clean close, keep re-acking the peer's END this long

    @property
    def mss(self) -> int:
        return self.mtu - 48


class Listener:
    """What an engine reports; the asyncio stream implements it."""

    def on_data(self, data: memoryview) -> None: ...
    def on_end(self) -> None: ...
    def on_message(self, data: memoryview) -> None: ...
    def on_close(self, exc: BaseException | None) -> None: ...
    def on_writable(self) -> None: ...


def _rel(wire: int, base: int) -> int:
    """Unwrap a 32-bit wire sequence number to the unbounded int nearest `base`."""
    d = (wire - base) & P.U32
    return base + (d - 0x100000000 if d >= 0x80000000 else d)


class UDXEngine:
    def __init__(self, local_id: int, transmit: Callable[[bytes], None], listener: Listener, config: UDXConfig = UDXConfig()):
        self.local_id = local_id
        self.remote_id: int | None = None
        self.config = config
        self._transmit = transmit
        self.listener = listener
        self.mss = config.mss
        self.mtu = config.mtu
        self._probe_pkt: Pkt | None = None
        self._probe_at: int | None = 16 if config.max_mtu >= config.mtu + P.MTU_STEP else None
        self.closed = False
        self.close_error: BaseException | None = None
        # receive side
        self._ack = 0  # next seq expected from the peer
        self._ooo: dict[int, tuple[int, memoryview]] = {}
        self._ranges: list[list[int]] = []  # the out-of-order seqs as [start, end) ranges
        self._unacked_rx = 0
        self._ack_now = False
        self._ack_soon = False
        self._ack_at: float | None = None
        self._rx_buffered = 0  # delivered, not yet consumed by the reader
        self._remote_end: int | None = None
        self.remote_ended = False
        # send side
        self.sb = Scoreboard(self)
        self._wbuf: deque[memoryview] = deque()
        self.write_buffered = 0
        self._want_writable = False
        self._ending = False  # end() called
        self._end_seq: int | None = None
        self.local_ended = False  # our END was acked
        self.peer_rwnd = config.rwnd
        self._last_send = 0.0
        self._keepalive_at: float | None = None
        self.counters = dict.fromkeys(
            ("packets_in", "packets_out", "data_in", "dup_data", "ooo_data", "ooo_dropped", "bad_ack",
             "bad_packet", "messages_in", "heartbeats_in", "acks_out", "retransmits", "fast_retransmits",
             "rto_timeouts", "tail_probes", "mtu_probes", "after_close"), 0)

    # ---------------------------------------------------------------- public inputs

    def set_mtu(self, mtu: int) -> None:
        """A known path MTU (a loopback path to a peer that reads large datagrams):
        packets from now on carry up to mtu - 48 bytes; no probing."""
        if not 1200 <= mtu <= 65535:
            raise ValueError(f"MTU {mtu} is outside 1200..65535")
        self.mtu = mtu
        self.mss = mtu - 48
        self._probe_at = None
        self._probe_pkt = None

    def connect(self, remote_id: int, now: float, seq: int = 0, ack: int = 0) -> None:
        """Set the peer's stream id (and optionally initial sequence numbers)."""
        self.remote_id = remote_id
        self.sb.reset(seq)
        self._ack = ack
        self._last_send = now
        self._rearm_keepalive(now)
        self._flush(now)

    def write(self, data: bytes, now: float) -> bool:
        """Queue bytes; returns False when the buffer is above the high-water mark."""
        if self.closed or self._ending:
            raise ClosedError("UDX stream is closed for writing")
        if data:
            self._wbuf.append(memoryview(data))
            self.write_buffered += len(data)
            self._flush(now)
        if self.write_buffered < self.config.high_water:
            return True
        self._want_writable = True
        return False

    def end(self, now: float) -> None:
        """Send END after the queued data (graceful half-close)."""
        if self.closed or self._ending:
            return
        self._ending = True
        self._flush(now)

    def send_message(self, data: bytes, now: float) -> None:
        """An unreliable MESSAGE datagram (no seq, may be lost)."""
        if self.closed or self.remote_id is None:
            raise ClosedError("UDX stream is not connected")
        if len(data) > self.mss:
            raise ValueError(f"UDX message of {len(data)} bytes exceeds {self.mss}")
        self._send(P.MESSAGE, self.sb.next_seq, data, now)

    def destroy(self, now: float, exc: BaseException | None = None) -> None:
        """Abort: tell the peer (DESTROY) and close at once."""
        if self.closed:
            return
        if self.remote_id is not None:
            self._send(P.DESTROY, self.sb.next_seq, b"", now)
        self._close(exc)

    def consumed(self, n: int, now: float) -> None:
        """The reader took `n` delivered bytes: reopen the window if it was closing."""
        before = self._rx_buffered
        self._rx_buffered = before - n if before > n else 0
        if before >= self.config.rwnd - 4 * self.mss > self._rx_buffered and not self.closed:
            self._ack_now = True
            self._flush(now)

    # ---------------------------------------------------------------- packets in

    def receive(self, typ: int, data_offset: int, rwnd: int, seq_w: int, ack_w: int, data: bytes, now: float) -> None:
        """Process one datagram already routed to this stream (header decoded by the mux)."""
        c = self.counters
        if self.closed:
            c["after_close"] += 1
            if typ & P.DATA_OR_END and self.close_error is None and self.remote_id is not None:
                self._send(0, self.sb.next_seq, b"", now)  # our final ACK was lost: repeat it
            return
        c["packets_in"] += 1
        if not data_offset and not typ & P.SACK:
            blocks, payload = (), memoryview(data)[20:]
        else:
            try:
                blocks, payload = P.split_body(typ, data_offset, data)
            except ValueError:
                c["bad_packet"] += 1
                return
        seq = _rel(seq_w, self._ack)
        if typ & P.DATA_OR_END:
            self._on_data(typ, seq, payload)
        if typ & P.DESTROY and seq >= self._ack - 1:
            self._close(ClosedError("UDX stream destroyed by the remote peer"))
            return
        if typ & P.MESSAGE:
            c["messages_in"] += 1
            self.listener.on_message(payload)
        if typ & P.HEARTBEAT:
            c["heartbeats_in"] += 1
            self._ack_now = True
        if self.closed:
            return
        self._on_ack_field(typ, rwnd, ack_w, blocks, now)
        if not self.closed:
            self._flush(now)

    def _on_ack_field(self, typ: int, rwnd: int, ack_w: int, blocks, now: float) -> None:
        sb = self.sb
        ack = _rel(ack_w, sb.remote_acked)
        if ack > sb.next_seq or ack < sb.remote_acked - 0x10000:
            self.counters["bad_ack"] += 1  # acks what we never sent: ignore (as libudx)
            return
        if ack >= sb.remote_acked:
            self.peer_rwnd = rwnd
        sb.on_ack(ack, blocks, bool(typ & P.DATA_OR_END), now)
        if self._probe_pkt is not None:
            self._check_probe()
        if self._end_seq is not None and sb.remote_acked > self._end_seq and not self.local_ended:
            self.local_ended = True
            self._maybe_finish()

    def _on_data(self, typ: int, seq: int, payload: memoryview) -> None:
        c = self.counters
        c["data_in"] += 1
        exp = self._ack
        if seq == exp and not self._ooo:
            self._ack = exp + 1
            self._deliver(typ, payload)
            self._unacked_rx += 1
            if self._unacked_rx >= self.config.ack_every:
                self._ack_soon = True
            return
        if seq < exp:
            c["dup_data"] += 1
            self._ack_now = True
            return
        if seq == exp:
            self._ack = exp + 1
            self._deliver(typ, payload)
            ooo = self._ooo
            while self._ack in ooo and not self.closed:
                t, p = ooo.pop(self._ack)
                self._ack += 1
                self._deliver(t, p)
        elif seq - exp > self.config.max_ooo_packets:
            c["ooo_dropped"] += 1
        elif seq not in self._ooo:
            c["ooo_data"] += 1
            self._ooo[seq] = (typ, bytes(payload))  # the datagram buffer is not ours to keep
            self._note_ooo(seq)
        else:
            c["dup_data"] += 1
        self._ack_now = True

    def _deliver(self, typ: int, payload: memoryview) -> None:
        if typ & P.DATA and len(payload):
            self._rx_buffered += len(payload)
            self.listener.on_data(payload)
        if typ & P.END:
            self._ack_now = True  # no delayed ACK for an END: the peer waits on it to close
            self.remote_ended = True
            self.listener.on_end()
            self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self.remote_ended and self.local_ended and not self.closed:
            self._close(None)

    # ---------------------------------------------------------------- packets out

    def _rwnd(self) -> int:
        return max(0, self.config.rwnd - self._rx_buffered)

    def _send(self, typ: int, seq: int, payload: bytes | memoryview, now: float) -> None:
        self._transmit(P.HEADER.pack(0xFF, 1, typ, 0, self.remote_id, self._rwnd(), seq & 0xFFFFFFFF, self._ack & 0xFFFFFFFF) + payload)
        self.counters["packets_out"] += 1
        self._last_send = now
        self._ack_now = self._ack_soon = False
        self._unacked_rx = 0
        self._ack_at = None

    def transmit_pkt(self, pkt: Pkt, now: float) -> None:
        self._send(pkt.typ, pkt.seq, pkt.payload, now)

    def _flush(self, now: float) -> None:
        """Send what the windows allow, then any ACK still owed."""
        if self.remote_id is None or self.closed:
            return
        sb = self.sb
        sb.send_retransmits(now)
        mss = self.mss
        while self._wbuf and sb.can_send(mss):
            self._send_new(P.DATA, self._take(mss), now)
        if self._ending and self._end_seq is None and not self._wbuf and sb.can_send(0):
            self._end_seq = sb.next_seq
            self._send_new(P.END, b"", now)
        if self._ack_now:
            self._send_ack(now)
        elif self._unacked_rx:
            due = now + (self.config.ack_soon if self._ack_soon else self.config.ack_delay)
            if self._ack_at is None or due < self._ack_at:
                self._ack_at = due
        if self._wbuf and not sb.inflight and sb.rto_at is None:
            sb.rto_at = now + sb.rto  # peer window closed: probe it on the RTO cadence
        if self._want_writable and self.write_buffered < self.config.high_water:
            self._want_writable = False
            self.listener.on_writable()

    def _take(self, n: int) -> memoryview:
        head = self._wbuf[0]
        if len(head) <= n:
            self._wbuf.popleft()
            chunk = head
        else:
            chunk, self._wbuf[0] = head[:n], head[n:]
        self.write_buffered -= len(chunk)
        return chunk

    def _send_new(self, typ: int, payload: memoryview | bytes, now: float) -> None:
        pkt = self.sb.add(typ, payload, now)
        if self._probe_at is not None and pkt.seq >= self._probe_at and len(payload) == self.mss:
            self._send_probe(pkt, now)
        else:
            self._send(typ, pkt.seq, payload, now)

    # ---------------------------------------------------------------- path MTU

    def _send_probe(self, pkt: Pkt, now: float) -> None:
        """Send `pkt` padded to the next MTU step (libudx-style); a retransmission goes unpadded."""
        pad = P.MTU_STEP
        self._probe_pkt, self._probe_at = pkt, None
        self._transmit(
            P.HEADER.pack(0xFF, 1, pkt.typ, pad, self.remote_id, self._rwnd(), pkt.seq & 0xFFFFFFFF, self._ack & 0xFFFFFFFF)
            + bytes(pad) + pkt.payload
        )
        self.counters["packets_out"] += 1
        self.counters["mtu_probes"] += 1
        self._last_send = now
        self._ack_now = self._ack_soon = False
        self._unacked_rx = 0
        self._ack_at = None

    def _check_probe(self) -> None:
        pkt = self._probe_pkt
        if pkt is None:
            return
        if pkt.tx > 1 or pkt.lost:  # the bigger packet did not make it: stay at this MTU
            self._probe_pkt = None
        elif pkt.sacked or pkt.seq < self.sb.remote_acked:
            self._probe_pkt = None
            self.mtu += P.MTU_STEP
            self.mss += P.MTU_STEP
            if self.mtu + P.MTU_STEP <= self.config.max_mtu:
                self._probe_at = self.sb.next_seq + 8

    def _send_ack(self, now: float) -> None:
        self.counters["acks_out"] += 1
        if self._ooo:
            blocks = self._sack_blocks()
            self._transmit(P.encode_sack(self.remote_id, self._rwnd(), self.sb.next_seq, self._ack, blocks))
            self.counters["packets_out"] += 1
            self._last_send = now
            self._ack_now = False
            self._unacked_rx = 0
            self._ack_at = None
        else:
            self._send(0, self.sb.next_seq, b"", now)

    def _sack_blocks(self) -> list[tuple[int, int]]:
        ranges = self._ranges
        while ranges and ranges[0][1] <= self._ack:
            ranges.pop(0)
        return [(a, b) for a, b in ranges[: P.MAX_SACK_BLOCKS]]

    def _note_ooo(self, seq: int) -> None:
        """Add `seq` to the sorted [start, end) ranges of buffered out-of-order packets."""
        ranges = self._ranges
        i = bisect.bisect_right(ranges, [seq, float("inf")])
        if i and ranges[i - 1][1] == seq:
            ranges[i - 1][1] = seq + 1
            if i < len(ranges) and ranges[i][0] == seq + 1:
                ranges[i - 1][1] = ranges.pop(i)[1]
        elif i < len(ranges) and ranges[i][0] == seq + 1:
            ranges[i][0] = seq
        else:
            ranges.insert(i, [seq, seq + 1])

    # ---------------------------------------------------------------- timers

    def next_deadline(self) -> float | None:
        """The earliest time `handle_timer` has work to do, or None."""
        if self.closed:
            return None
        sb = self.sb
        best = None
        for d in (sb.rto_at, sb.pto_at, sb.rack_at, self._ack_at, self._keepalive_at):
            if d is not None and (best is None or d < best):
                best = d
        return best

    def handle_timer(self, now: float) -> None:
        if self.closed or self.remote_id is None:
            return
        if self._ack_at is not None and now >= self._ack_at:
            self._ack_now = True
        sb = self.sb
        if sb.rack_at is not None and now >= sb.rack_at:
            sb.detect_losses(now)
        if sb.pto_at is not None and now >= sb.pto_at and (sb.rto_at is None or now < sb.rto_at):
            probe = sb.on_pto(now)
            if probe is not None:
                self.transmit_pkt(probe, now)
        if sb.rto_at is not None and now >= sb.rto_at:
            self.counters["rto_timeouts"] += 1
            if not sb.on_rto(now):
                self._close(TimeoutError_(f"UDX stream timed out: a packet hit {self.config.max_rto_count} RTOs"))
                return
            if not sb.inflight and (self._wbuf or (self._ending and self._end_seq is None)):
                self._send(P.HEARTBEAT, sb.next_seq, b"", now)  # zero-window probe
            elif sb.rto_count >= 2:
                # The head keeps getting lost: send it twice so that a lossy but
                # live path does not hit the RTO limit that means "peer gone".
                self._flush(now)
                head = sb.inflight.get(sb.remote_acked)
                if head is not None and not head.sacked and not head.lost:
                    self.counters["retransmits"] += 1
                    self.transmit_pkt(head, now)
        if self._keepalive_at is not None and now >= self._keepalive_at:
            if now - self._last_send >= self.config.keepalive:
                self._send(P.HEARTBEAT, sb.next_seq, b"", now)
            self._rearm_keepalive(now)
        self._flush(now)

    def _rearm_keepalive(self, now: float) -> None:
        k = self.config.keepalive
        self._keepalive_at = (max(self._last_send, now - k) + k) if k > 0 else None

    def _close(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        if exc is None and self.remote_id is not None:
            self._send_ack(self._last_send)  # ack the END that completed the close
        self.closed = True
        self.close_error = exc
        self._wbuf.clear()
        self._ooo.clear()
        self._ranges.clear()
        self.sb.clear()
        self.listener.on_close(exc)
