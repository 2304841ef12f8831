"""The sender half of a UDX stream: sent packets, acks and SACKs, loss
detection, RTT/RTO and NewReno-style congestion control (sans-IO).

`pipe` counts packets believed in the network (sent, not acked, not SACKed,
not marked lost). A first transmission is lost once three packets above it are
SACKed (or after three duplicate acks); a retransmission is lost again when a
packet sent more than a quarter RTT after it has been delivered (RACK).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine import UDXEngine

DUPTHRESH = 3
OPEN, RECOVERY, LOSS = 0, 1, 2


class Pkt:
    __slots__ = ("seq", "typ", "payload", "sent_at", "tx", "sacked", "lost", "size")

    def __init__(self, seq: int, typ: int, payload, now: float):
        self.seq = seq
        self.typ = typ
        self.payload = payload
        self.sent_at = now
        self.tx = 1
        self.sacked = False
        self.lost = False
        self.size = len(payload)


class Scoreboard:
    def __init__(self, engine: "UDXEngine"):
        self.e = engine
        cfg = engine.config
        self.cfg = cfg
        self.inflight: dict[int, Pkt] = {}
        self.next_seq = 0
        self.remote_acked = 0
        self.pipe = 0
        self.outstanding_bytes = 0
        self.cwnd = float(cfg.initial_cwnd)
        self.ssthresh = float("inf")
        self.state = OPEN
        self.recovery_point = 0
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = cfg.initial_rto
        self.rto_at: float | None = None
        self.rto_count = 0  # consecutive RTOs without progress
        self.dupacks = 0
        self._rtx: deque[Pkt] = deque()  # marked lost, waiting to be resent
        self._resent: deque[tuple[Pkt, float]] = deque()  # retransmissions, in send order
        self._sack_done: dict[int, int] = {}  # SACK block start -> end already processed
        self._high_delivered = 0  # one above the highest seq acked or SACKed
        self.rack_at: float | None = None  # RACK reordering timer
        self.pto_at: float | None = None  # tail loss probe timer
        self._scan = 0  # first-transmission loss scan position
        self._rack_ts = 0.0  # latest send time of a delivered packet
        self._sample: float | None = None  # RTT sample of the ack being processed

    def reset(self, seq: int) -> None:
        self.next_seq = self.remote_acked = self._scan = seq

    def clear(self) -> None:
        self.inflight.clear()
        self._rtx.clear()
        self._resent.clear()
        self.rto_at = self.pto_at = self.rack_at = None

    # ------------------------------------------------------------ sending

    def can_send(self, size: int) -> bool:
        if self.pipe >= self.cwnd:
            return False
        return self.outstanding_bytes + size <= self.e.peer_rwnd or (size == 0 and not self.inflight)

    def add(self, typ: int, payload, now: float) -> Pkt:
        pkt = Pkt(self.next_seq, typ, payload, now)
        self.inflight[pkt.seq] = pkt
        self.next_seq += 1
        self.pipe += 1
        self.outstanding_bytes += pkt.size
        if self.rto_at is None:
            self.rto_at = now + self.rto
        if self.pto_at is None:
            self._arm_pto(now)
        return pkt

    def send_retransmits(self, now: float) -> None:
        rtx = self._rtx
        while rtx and self.pipe < self.cwnd:
            pkt = rtx.popleft()
            if not pkt.lost or pkt.sacked or pkt.seq < self.remote_acked:
                continue
            pkt.lost = False
            pkt.tx += 1
            pkt.sent_at = now
            self.pipe += 1
            self._resent.append((pkt, now))
            self.e.counters["retransmits"] += 1
            self.e.transmit_pkt(pkt, now)
            if self.rto_at is None:
                self.rto_at = now + self.rto
            if self.pto_at is None:
                self._arm_pto(now)

    def _mark_lost(self, pkt: Pkt) -> None:
        pkt.lost = True
        self.pipe -= 1
        self._rtx.append(pkt)

    # ------------------------------------------------------------ acks

    def on_ack(self, ack: int, blocks, carries_data: bool, now: float) -> None:
        """Apply a packet's cumulative ack and SACK blocks, then detect losses."""
        self._sample = None
        delivered = 0
        if ack > self.remote_acked:
            delivered += self._cumulative(ack, now)
        elif not blocks and not carries_data and self.inflight:
            self._dupack()
        if blocks:
            delivered += self._sacks(blocks, now)
        if delivered:
            self.detect_losses(now)
        if self._resent:
            self._detect_rtx_losses()
        if self._sample is not None:
            self._rtt(self._sample)
        if delivered:
            self._grow(delivered)
            self.rto_at = now + self.rto if self.inflight else None
            self._arm_pto(now)
        if self.state != OPEN and self.remote_acked >= self.recovery_point:
            self.state = OPEN
        if not self.inflight:
            self.rto_at = self.pto_at = self.rack_at = None

    def _delivered(self, pkt: Pkt, now: float) -> None:
        if not pkt.lost:
            self.pipe -= 1
        if pkt.tx == 1:  # Karn: no RTT sample from a retransmitted packet
            self._sample = now - pkt.sent_at
        if pkt.sent_at > self._rack_ts:
            self._rack_ts = pkt.sent_at

    def _cumulative(self, ack: int, now: float) -> int:
        inflight = self.inflight
        n = 0
        for s in range(self.remote_acked, ack):
            pkt = inflight.pop(s, None)
            if pkt is None:
                continue
            self.outstanding_bytes -= pkt.size
            if not pkt.sacked:
                n += 1
                self._delivered(pkt, now)
        self.remote_acked = ack
        if ack > self._high_delivered:
            self._high_delivered = ack
        self.dupacks = 0
        self.rto_count = 0
        if self._scan < ack:
            self._scan = ack
        return n

    def _dupack(self) -> None:
        self.dupacks += 1
        if self.dupacks == DUPTHRESH:  # fast retransmit for peers that send no SACK
            head = self.inflight.get(self.remote_acked)
            if head is not None and not head.lost and not head.sacked:
                self.e.counters["fast_retransmits"] += 1
                self._mark_lost(head)
                self._enter_recovery()

    def _sacks(self, blocks, now: float) -> int:
        inflight = self.inflight
        base = self.remote_acked
        done = self._sack_done
        if len(done) > 256:
            self._sack_done = done = {k: v for k, v in done.items() if v > base}
        n = 0
        for s_w, e_w in blocks:
            s = base + ((s_w - base) & 0xFFFFFFFF)
            end = s + ((e_w - s_w) & 0xFFFFFFFF)
            if end > self.next_seq or end - s > 8192:
                continue
            # a block usually only grows at its top: skip what an earlier SACK covered
            start = max(s, base, done.get(s, s))
            if end > start:
                done[s] = end
            for q in range(start, end):
                pkt = inflight.get(q)
                if pkt is None or pkt.sacked:
                    continue
                pkt.sacked = True
                n += 1
                self._delivered(pkt, now)
                if q >= self._high_delivered:
                    self._high_delivered = q + 1
        return n

    def _arm_pto(self, now: float) -> None:
        if self.inflight and self.srtt is not None:
            self.pto_at = now + max(2 * self.srtt, 0.01) + self.cfg.ack_delay
        else:
            self.pto_at = None

    def on_pto(self, now: float) -> Pkt | None:
        """Tail loss probe: the packet to resend (highest unSACKed), or None."""
        self.pto_at = None
        for q in range(self.next_seq - 1, self.remote_acked - 1, -1):
            pkt = self.inflight.get(q)
            if pkt is not None and not pkt.sacked:
                if pkt.lost:
                    return None
                pkt.tx += 1
                pkt.sent_at = now
                self._resent.append((pkt, now))
                self.e.counters["retransmits"] += 1
                self.e.counters["tail_probes"] += 1
                return pkt
        return None

    def _reo_wnd(self) -> float:
        return self.srtt / 4 if self.srtt is not None else 0.001

    def detect_losses(self, now: float) -> None:
        """RACK: an unSACKed first transmission below the highest delivered seq is
        lost once a packet sent a reordering window after it was delivered, or once
        it is older than an RTT plus that window."""
        limit = self._high_delivered
        q = max(self._scan, self.remote_acked)
        if q >= limit:
            self.rack_at = None
            return
        inflight = self.inflight
        reo = self._reo_wnd()
        horizon = self._rack_ts - reo
        aged = now - (self.srtt or 0.0) - reo
        found = False
        self.rack_at = None
        while q < limit:
            pkt = inflight.get(q)
            if pkt is not None and not pkt.sacked and not pkt.lost and pkt.tx == 1:
                if pkt.sent_at > horizon and pkt.sent_at > aged:
                    self.rack_at = pkt.sent_at + (self.srtt or 0.0) + reo
                    break
                self._mark_lost(pkt)
                self.e.counters["fast_retransmits"] += 1
                found = True
            q += 1
        self._scan = q
        if found:
            self._enter_recovery()

    def _detect_rtx_losses(self) -> None:
        resent = self._resent
        horizon = self._rack_ts - self._reo_wnd()
        found = False
        while resent and resent[0][1] < horizon:
            pkt, sent = resent.popleft()
            if pkt.sent_at == sent and not pkt.sacked and not pkt.lost and pkt.seq >= self.remote_acked:
                self._mark_lost(pkt)
                found = True
        if found:
            self._enter_recovery()

    def _enter_recovery(self) -> None:
        if self.state == OPEN:
            self.ssthresh = max(self.cwnd / 2, 2.0)
            self.cwnd = self.ssthresh
            self.state = RECOVERY
            self.recovery_point = self.next_seq

    def _grow(self, n: int) -> None:
        if self.state == RECOVERY:
            return
        if self.cwnd < self.ssthresh:
            self.cwnd += n
        else:
            self.cwnd += n / self.cwnd

    def _rtt(self, r: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = r, r / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - r)
            self.srtt = 0.875 * self.srtt + 0.125 * r
        cfg = self.cfg
        self.rto = min(cfg.max_rto, max(cfg.min_rto, self.srtt + max(0.001, 4 * self.rttvar)))

    # ------------------------------------------------------------ timeout

    def on_rto(self, now: float) -> bool:
        """The retransmission timer fired; False when the stream must close."""
        cfg = self.cfg
        self.rto = min(cfg.max_rto, self.rto * 2)
        if not self.inflight:
            self.rto_at = now + self.rto  # zero-window probing cadence
            return True
        self.rto_count += 1
        if self.rto_count >= cfg.max_rto_count:
            return False
        self.ssthresh = max(self.cwnd / 2, 2.0)
        self.cwnd = 1.0
        self.state = LOSS
        self.recovery_point = self.next_seq
        for pkt in self.inflight.values():
            if not pkt.sacked and not pkt.lost:
                self._mark_lost(pkt)
        self._rtx = deque(sorted(self._rtx, key=lambda p: p.seq))
        self.rto_at = now + self.rto
        self.pto_at = self.rack_at = None
        return True
