"""A `mesh.net.Network` whose endpoints drain the socket in batches.

asyncio's datagram transport reads one datagram per loop iteration, which for
a bulk UDX stream costs more than the protocol work itself. These endpoints
read up to `batch` datagrams per readiness event and send straight on the
non-blocking socket (a full send buffer drops the datagram, as the network
would; UDX retransmits). Like `UDPNetwork`, sends outside 127.0.0.0/8 are
refused unless `allow_remote` is set.
"""

from __future__ import annotations

import asyncio
import socket

from ..encoding import Address
from ..net import LOOPBACK_PREFIX, OnDatagram


class BatchUDPEndpoint:
    def __init__(self, sock: socket.socket, on_datagram: OnDatagram, allow_remote: bool, batch: int):
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._on_datagram = on_datagram
        self._allow_remote = allow_remote
        self._batch = batch
        host, port = sock.getsockname()[:2]
        self.local_address: Address = (host, port)
        self.refused_sends = 0
        self.send_drops = 0
        self.closed = False
        self._loop.add_reader(sock.fileno(), self._read_ready)

    def _read_ready(self) -> None:
        recv = self._sock.recvfrom
        on = self._on_datagram
        for _ in range(self._batch):
            try:
                data, addr = recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP errors surface here; the protocols time out instead
                continue
            on(data, (addr[0], addr[1]))
            if self.closed:
                return

    def sendto(self, data: bytes, addr: Address) -> None:
        if self.closed:
            return
        if not self._allow_remote and not addr[0].startswith(LOOPBACK_PREFIX):
            self.refused_sends += 1
            return
        try:
            self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self.send_drops += 1
        except OSError:
            self.send_drops += 1

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()


class BatchUDPNetwork:
    def __init__(self, allow_remote: bool = False, batch: int = 64, buffer_size: int = 1 << 21):
        self.allow_remote = allow_remote
        self.batch = batch
        self.buffer_size = buffer_size

    async def bind(self, host: str, port: int, on_datagram: OnDatagram) -> BatchUDPEndpoint:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, self.buffer_size)
                except OSError:
                    pass
            sock.bind((host, port))
        except BaseException:
            sock.close()
            raise
        return BatchUDPEndpoint(sock, on_datagram, self.allow_remote, self.batch)
