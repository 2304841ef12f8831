"""The asyncio driver under the DHT: sockets, transaction ids, retries, the
congestion window, per-source limits and the datagram demux.

Two endpoints are bound, as in dht-rpc: the server socket (the node's public
address) and a client socket that sends requests while the node is firewalled,
so that a PING_NAT answer arriving on the server socket proves reachability.
Both sockets demux by the first bytes: 0x03 / 0x13 dht-rpc, 0xff 0x01 UDX (to
a registered handler), a single byte a holepunch probe (to a registered
handler). Replies are matched by tid only, like dht-rpc.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable

from ..encoding import Address
from ..errors import DecodeError, TimeoutError_
from ..net import DatagramEndpoint, Network
from . import messages as m
from .congestion import CongestionWindow
from .tokens import Tokens

MAX_DATAGRAM = 8192
DEFAULT_TIMEOUT = 1.0
DEFAULT_RETRIES = 3
RATE_WINDOW = 1.0
RATE_LIMIT = 200  # requests per source per second
MAX_RATE_SOURCES = 8192
PORT_TRIES = 5

STAT_KEYS = (
    "malformed", "id_mismatch", "bad_token", "bad_signature", "oversized", "rate_limited",
    "unknown_command", "unexpected_response", "no_handler", "bad_value", "short",
)


class Reply:
    """A response as the requester sees it."""

    __slots__ = ("from_address", "from_id", "to", "token", "closer_nodes", "error", "value", "tid", "socket")

    def __init__(self, res: m.Response, from_address: Address, from_id: bytes | None, socket=None):
        self.socket = socket
        self.from_address = from_address
        self.from_id = from_id
        self.to = res.to
        self.token = res.token
        self.closer_nodes = res.closer_nodes
        self.error = res.error
        self.value = res.value
        self.tid = res.tid


class IncomingRequest:
    """A request this node received. Answer with `reply` / `error`, or forward
    it with `relay` (a new request with the same tid, command and target)."""

    __slots__ = ("io", "socket", "tid", "command", "internal", "target", "value", "token", "id",
                 "from_address", "to_address", "external", "answered")

    def __init__(self, io: "RpcIO", socket: DatagramEndpoint, req: m.Request, from_address: Address,
                 from_id: bytes | None, external: bool):
        self.io = io
        self.socket = socket
        self.tid = req.tid
        self.command = req.command
        self.internal = req.internal
        self.target = req.target
        self.value = req.value
        self.token = req.token
        self.id = from_id
        self.from_address = from_address
        self.to_address = req.to
        self.external = external
        self.answered = False

    def reply(self, value: bytes | None = None, *, token: bool = True, closer_nodes: bool = True,
              to: Address | None = None, error: int = 0) -> None:
        """Send a response (by default with a fresh token and, when the request
        had a target, the closest nodes we know)."""
        self.answered = True
        self.io.send_reply(self, value, token=token, closer_nodes=closer_nodes, to=to, error=error)

    def error(self, code: int, *, token: bool = False, closer_nodes: bool = True) -> None:
        self.reply(None, token=token, closer_nodes=closer_nodes, error=code)

    def relay(self, value: bytes | None, to: Address) -> None:
        """Send this request on to `to` with the same tid, command and target."""
        self.answered = True
        self.io.send_relay(self, value, to)


class Outgoing:
    __slots__ = ("io", "tid", "to", "buf", "retries", "sent", "timeout", "handle", "on_reply",
                 "on_error", "on_cycle", "socket", "done")

    def __init__(self, io, tid, to, buf, retries, timeout, on_reply, on_error, on_cycle, socket):
        self.io = io
        self.tid = tid
        self.to = to
        self.buf = buf
        self.retries = retries
        self.sent = 0
        self.timeout = timeout
        self.handle = None
        self.on_reply = on_reply
        self.on_error = on_error
        self.on_cycle = on_cycle
        self.socket = socket
        self.done = False

    def cancel(self) -> None:
        """Forget the request; no callback fires."""
        if not self.done:
            self.done = True
            self.io._forget(self)


class RpcIO:
    def __init__(self, network: Network, host: str, port: int, on_request: Callable[[IncomingRequest], None],
                 on_response: Callable[[Reply, bool], None]):
        self.network = network
        self.host = host
        self.port = port
        self.on_request = on_request
        self.on_response = on_response
        self.server: DatagramEndpoint | None = None
        self.client: DatagramEndpoint | None = None
        self.firewalled = True
        self.ephemeral = True
        self.table_id: bytes = b""
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self.stats.update(requests_sent=0, responses_received=0, requests_received=0, timeouts=0)
        self.udx_handler: Callable[[bytes, Address, DatagramEndpoint], None] | None = None
        self.probe_handler: Callable[[bytes, Address, DatagramEndpoint], None] | None = None
        self.inflight: dict[int, Outgoing] = {}
        self._tid = random.randrange(65536)
        self._queue: deque[Outgoing] = deque()
        self.congestion: CongestionWindow | None = None
        self._drain_handle: asyncio.TimerHandle | None = None
        self._rate: dict[Address, int] = {}
        self._rate_window = 0
        self.tokens: Tokens | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    async def bind(self) -> None:
        self.loop = asyncio.get_running_loop()
        now = self.loop.time()
        self.tokens = Tokens(now)
        self.congestion = CongestionWindow(now)
        self._rate_window = int(now / RATE_WINDOW)
        self.server = await self._bind_server()
        self.client = await self.network.bind(self.host, 0, lambda d, a: self._on_datagram(self.client, d, a))

    async def _bind_server(self) -> DatagramEndpoint:
        ports = [self.port + i for i in range(PORT_TRIES)] if self.port else []
        for p in ports:
            try:
                return await self.network.bind(self.host, p, lambda d, a: self._on_datagram(self.server, d, a))
            except OSError:
                continue
        return await self.network.bind(self.host, 0, lambda d, a: self._on_datagram(self.server, d, a))

    def close(self) -> None:
        self.closed = True
        for req in list(self.inflight.values()):
            req.done = True
            if req.handle:
                req.handle.cancel()
        self.inflight.clear()
        self._queue.clear()
        if self._drain_handle:
            self._drain_handle.cancel()
        for ep in (self.server, self.client):
            if ep is not None:
                ep.close()

    @property
    def request_socket(self) -> DatagramEndpoint:
        return self.client if self.firewalled else self.server

    def now(self) -> float:
        return self.loop.time()

    # ------------------------------------------------------------ receiving
    def _on_datagram(self, sock: DatagramEndpoint, data: bytes, addr: Address) -> None:
        if self.closed:
            return
        n = len(data)
        if n == 1 and self.probe_handler is not None:
            self.probe_handler(data, addr, sock)
            return
        if n < 2:
            self.stats["short"] += 1
            return
        first = data[0]
        if first == 0xFF and data[1] == 0x01:
            if self.udx_handler is not None:
                self.udx_handler(data, addr, sock)
            else:
                self.stats["no_handler"] += 1
            return
        if first != m.REQUEST_ID and first != m.RESPONSE_ID:
            self.stats["malformed"] += 1
            return
        if n > MAX_DATAGRAM:
            self.stats["oversized"] += 1
            return
        if not 0 < addr[1] < 65536:
            self.stats["malformed"] += 1
            return
        if first == m.REQUEST_ID and not self._allow(addr):
            self.stats["rate_limited"] += 1
            return
        try:
            msg = m.decode_message(data)
        except DecodeError:
            self.stats["malformed"] += 1
            return
        from_id = msg.id
        if from_id is not None and from_id != m.node_id(addr):
            self.stats["id_mismatch"] += 1
            from_id = None
        expected = self.client if self.firewalled else self.server
        external = sock is not expected
        if isinstance(msg, m.Request):
            self._on_request(sock, msg, addr, from_id, external)
        else:
            self._on_response(sock, msg, addr, from_id, external)

    def _allow(self, addr: Address) -> bool:
        w = int(self.loop.time() / RATE_WINDOW)
        if w != self._rate_window:
            self._rate_window = w
            self._rate.clear()
        c = self._rate.get(addr, 0)
        if c >= RATE_LIMIT:
            return False
        if c == 0 and len(self._rate) >= MAX_RATE_SOURCES:
            return False
        self._rate[addr] = c + 1
        return True

    def _on_request(self, sock, msg: m.Request, addr: Address, from_id, external: bool) -> None:
        self.stats["requests_received"] += 1
        req = IncomingRequest(self, sock, msg, addr, from_id, external)
        if msg.token is not None and not self.tokens.validate(addr[0], msg.token, self.now()):
            self.stats["bad_token"] += 1
            req.error(m.ERR_INVALID_TOKEN, token=True)
            return
        self.on_request(req)

    def _on_response(self, sock, res: m.Response, addr: Address, from_id, external: bool) -> None:
        req = self.inflight.pop(res.tid, None)
        if req is None:
            self.stats["unexpected_response"] += 1
            return
        self.stats["responses_received"] += 1
        req.done = True
        if req.handle is not None:
            req.handle.cancel()
        self._congestion_recv()
        reply = Reply(res, addr, from_id, sock)
        self.on_response(reply, external)
        req.on_reply(reply)

    # ------------------------------------------------------------ sending
    def _own_id_for(self, sock) -> bytes | None:
        return self.table_id if (not self.ephemeral and sock is self.server) else None

    def send_reply(self, req: IncomingRequest, value, *, token=True, closer_nodes=True, to=None, error=0) -> None:
        to = to or req.from_address
        closer = []
        if closer_nodes and req.target is not None:
            closer = self.closest_addresses(req.target)
        res = m.Response(
            req.tid, to, self._own_id_for(req.socket),
            self.tokens.create(to[0], self.now()) if token else None,
            closer, error, value,
        )
        self._send(req.socket, m.encode_response(res), to)

    def send_relay(self, req: IncomingRequest, value, to: Address) -> None:
        out = m.Request(req.tid, to, req.command, req.internal, self._own_id_for(req.socket), None, req.target, value)
        self._send(req.socket, m.encode_request(out), to)

    def closest_addresses(self, target: bytes) -> list[Address]:
        """Set by the node: the addresses of the k closest table nodes."""
        return []

    def _send(self, sock, data: bytes, to: Address) -> None:
        if not self.closed and sock is not None:
            sock.sendto(data, to)

    def send_raw(self, data: bytes, to: Address, sock: DatagramEndpoint | None = None) -> None:
        self._send(sock or self.server, data, to)

    def next_tid(self) -> int:
        self._tid = (self._tid + 1) & 0xFFFF
        while self._tid in self.inflight:
            self._tid = (self._tid + 1) & 0xFFFF
        return self._tid

    def request(self, to: Address, command: int, *, internal: bool = False, target: bytes | None = None,
                value: bytes | None = None, token: bytes | None = None, retries: int = DEFAULT_RETRIES,
                timeout: float = DEFAULT_TIMEOUT, on_reply: Callable[[Reply], None],
                on_error: Callable[[Exception], None], on_cycle: Callable[[], None] | None = None,
                socket: DatagramEndpoint | None = None, force: bool = False, tid: int | None = None) -> Outgoing:
        """Send a request; exactly one of on_reply / on_error fires later (unless cancelled)."""
        sock = socket or self.request_socket
        tid = self.next_tid() if tid is None else tid
        msg = m.Request(tid, to, command, internal, self._own_id_for(sock), token, target, value)
        req = Outgoing(self, tid, to, m.encode_request(msg), max(1, retries), timeout, on_reply, on_error, on_cycle, sock)
        self.inflight[tid] = req
        self.stats["requests_sent"] += 1
        if self.closed:
            req.done = True
            self.inflight.pop(tid, None)
            self.loop.call_soon(on_error, TimeoutError_("DHT is closed"))
            return req
        self._enqueue(req, force)
        return req

    def _enqueue(self, req: Outgoing, force: bool) -> None:
        if not force and (self._queue or self._full()):
            self._queue.append(req)
            self._schedule_drain()
            return
        self._send_now(req)

    def _send_now(self, req: Outgoing) -> None:
        if req.done:
            return
        req.sent += 1
        self._congestion_send()
        self._send(req.socket, req.buf, req.to)
        req.handle = self.loop.call_later(req.timeout, self._on_cycle, req)

    def _on_cycle(self, req: Outgoing) -> None:
        req.handle = None
        if req.done:
            return
        if req.sent >= req.retries:
            self.stats["timeouts"] += 1
            req.done = True
            self.inflight.pop(req.tid, None)
            self._congestion_recv()
            req.on_error(TimeoutError_(f"request to {req.to[0]}:{req.to[1]} timed out"))
            return
        if req.on_cycle is not None:
            req.on_cycle()
        self._enqueue(req, False)

    def _forget(self, req: Outgoing) -> None:
        if req.handle is not None:
            req.handle.cancel()
        if self.inflight.get(req.tid) is req:
            del self.inflight[req.tid]
            self._congestion_recv()

    # ------------------------------------------------------------ congestion window
    def _full(self) -> bool:
        return self.congestion.is_full(self.loop.time())

    def _congestion_send(self) -> None:
        self.congestion.send(self.loop.time())

    def _congestion_recv(self) -> None:
        self.congestion.recv()

    def _schedule_drain(self) -> None:
        if self._drain_handle is not None or self.closed:
            return
        delay = self.congestion.next_slot_at() - self.loop.time() + 1e-6
        self._drain_handle = self.loop.call_later(max(delay, 0.0), self._drain)

    def _drain(self) -> None:
        self._drain_handle = None
        while self._queue and not self._full():
            req = self._queue.popleft()
            self._send_now(req)
        if self._queue:
            self._schedule_drain()
