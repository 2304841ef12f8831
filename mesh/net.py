"""Datagram networks: the real one (UDP sockets) and the interface the fakes share.

A `Network` binds endpoints; an endpoint sends datagrams and hands received ones
to the `on_datagram(data, addr)` callback given at bind time. The DHT, UDX and
every simulation are written against this interface, so a test can swap the
real UDP stack for `mesh.sim.SimNetwork` and run hundreds of nodes in one
process.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
import threading
from collections.abc import Callable
from typing import Protocol

from .encoding import Address

OnDatagram = Callable[[bytes, Address], None]


class DatagramEndpoint(Protocol):
    local_address: Address

    def sendto(self, data: bytes, addr: Address) -> None: ...

    def close(self) -> None: ...


class Network(Protocol):
    async def bind(self, host: str, port: int, on_datagram: OnDatagram) -> DatagramEndpoint: ...


LOOPBACK_PREFIX = "127."


def _grow_socket_buffers(sock, size: int) -> None:
    """Best effort (the OS caps the size): a UDX sender's burst of a window must fit
    in the receiver's buffer, or the kernel drops it and the sender backs off."""
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            if sock.getsockopt(socket.SOL_SOCKET, opt) < size:  # Linux reports twice what was set
                sock.setsockopt(socket.SOL_SOCKET, opt, size)
        except OSError:
            pass


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: OnDatagram):
        self.on_datagram = on_datagram
        self.errors = 0

    def datagram_received(self, data: bytes, addr) -> None:
        self.on_datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        # ICMP port-unreachable and friends: the request timeout handles them.
        self.errors += 1


class AsyncioUDPEndpoint:
    """A bound UDP socket. Sends to non-loopback hosts are refused unless allowed."""

    def __init__(self, transport: asyncio.DatagramTransport, protocol: _UDPProtocol, allow_remote: bool):
        self._transport = transport
        self._protocol = protocol
        self._allow_remote = allow_remote
        sock = transport.get_extra_info("sockname")
        self.local_address: Address = (sock[0], sock[1])
        self.refused_sends = 0

    def sendto(self, data: bytes, addr: Address) -> None:
        if not self._allow_remote and not addr[0].startswith(LOOPBACK_PREFIX):
            self.refused_sends += 1
            return
        if not self._transport.is_closing():
            self._transport.sendto(data, addr)

    def set_buffer_size(self, size: int) -> None:
        """Grow the kernel's send and receive buffers to `size` (never shrinks them)."""
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            _grow_socket_buffers(sock, size)

    def close(self) -> None:
        self._transport.close()


class AsyncioUDPNetwork:
    """asyncio's datagram transport: one datagram per loop iteration. Kept as the
    baseline the stream benchmark compares `UDPNetwork` against."""

    def __init__(self, allow_remote: bool = False):
        self.allow_remote = allow_remote

    async def bind(self, host: str, port: int, on_datagram: OnDatagram) -> AsyncioUDPEndpoint:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _UDPProtocol(on_datagram), local_addr=(host, port)
        )
        return AsyncioUDPEndpoint(transport, protocol, self.allow_remote)


# Work deferred to the end of the read batch in progress (see `at_batch_end`),
# per thread: each thread runs its own event loop.
_local = threading.local()


def at_batch_end(fn: Callable[[], None]) -> bool:
    """Run `fn` when the datagram batch being processed ends (before the sends it
    caused leave); False, and nothing scheduled, when no batch is in progress.

    For work that wants "once the current input is handled", like sending the
    replies it produced as one message, without waiting for the next turn of the
    event loop."""
    pending = getattr(_local, "batch_end", None)
    if pending is None:
        return False
    pending.append(fn)
    return True


# UDP generic segmentation offload (Linux >= 4.18): one sendmsg carries a run of
# equal-sized datagrams (the last may be shorter) that the kernel splits; the
# receiver still gets separate datagrams. A burst of UDX packets then costs one
# system call instead of one each.
_UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
_GSO_MAX_SEGMENTS = 64
_GSO_MAX_BYTES = 65000  # under the 65,507-byte IPv4 UDP payload limit


class UDPEndpoint:
    def __init__(self, sock: socket.socket, on_datagram: OnDatagram, allow_remote: bool, batch: int,
                 gso: bool = sys.platform == "linux"):
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._on_datagram = on_datagram
        self._allow_remote = allow_remote
        self._batch = batch
        host, port = sock.getsockname()[:2]
        self.local_address: Address = (host, port)
        self.refused_sends = 0
        self.send_drops = 0
        self.gso_sends = 0
        self.closed = False
        self._gso = gso
        self._holds = 0
        self._held: list[tuple[bytes, Address]] = []
        self._loop.add_reader(sock.fileno(), self._read_ready)

    def _read_ready(self) -> None:
        # What the handlers send while this batch is processed (ACKs, replies)
        # goes out together at the end, after the work they deferred to it.
        recv = self._sock.recvfrom
        on = self._on_datagram
        self._holds += 1
        outer = getattr(_local, "batch_end", None)
        _local.batch_end = []
        try:
            for _ in range(self._batch):
                try:
                    data, addr = recv(65536)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # ICMP errors surface here; the protocols time out instead
                    continue
                on(data, (addr[0], addr[1]))
                if self.closed:
                    break
        finally:
            deferred, _local.batch_end = _local.batch_end, outer
            try:
                for fn in deferred:
                    try:
                        fn()
                    except Exception as exc:  # one failing callback must not strand the others
                        self._loop.call_exception_handler({"message": "exception in a batch-end callback",
                                                           "exception": exc, "callback": fn})
            finally:
                self.release()

    def hold(self) -> None:
        """Queue sends until the matching `release()` (holds nest)."""
        self._holds += 1

    def release(self) -> None:
        self._holds -= 1
        if not self._holds and self._held:
            self._send_held()

    def sendto(self, data: bytes, addr: Address) -> None:
        if self.closed:
            return
        if not self._allow_remote and not addr[0].startswith(LOOPBACK_PREFIX):
            self.refused_sends += 1
            return
        if self._holds:
            self._held.append((data, addr))
            return
        self._send_one(data, addr)

    def _send_one(self, data: bytes, addr: Address) -> None:
        try:
            self._sock.sendto(data, addr)
        except OSError:  # a full buffer (BlockingIOError) or an unreachable host: dropped
            self.send_drops += 1

    def _send_held(self) -> None:
        held, self._held = self._held, []
        if self.closed:
            return
        i, n = 0, len(held)
        while i < n:
            data, addr = held[i]
            size = len(data)
            j = i + 1
            if self._gso:
                total = size
                while j < n and j - i < _GSO_MAX_SEGMENTS:
                    d, a = held[j]
                    m = len(d)
                    if a != addr or m > size or total + m > _GSO_MAX_BYTES:
                        break
                    total += m
                    j += 1
                    if m < size:
                        break  # only the last segment may be shorter
            if j - i == 1:
                self._send_one(data, addr)
            else:
                self._send_segments([d for d, _ in held[i:j]], size, addr)
            i = j

    def _send_segments(self, datagrams: list[bytes], size: int, addr: Address) -> None:
        try:
            self._sock.sendmsg(datagrams, [(socket.SOL_UDP, _UDP_SEGMENT, size.to_bytes(2, sys.byteorder))], 0, addr)
            self.gso_sends += 1
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOPROTOOPT, errno.EIO):
                self._gso = False  # no segmentation offload here: one datagram per call
                for d in datagrams:
                    self._send_one(d, addr)
            else:
                self.send_drops += len(datagrams)

    def set_buffer_size(self, size: int) -> None:
        """Grow the kernel's send and receive buffers to `size` (never shrinks them)."""
        _grow_socket_buffers(self._sock, size)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()


class UDPNetwork:
    """The real network: non-blocking UDP sockets drained up to `batch` datagrams per
    wake-up (asyncio's transport reads one per loop turn, which costs a bulk UDX stream
    more than the protocol work). `allow_remote=False` (the default) confines traffic
    to 127.0.0.0/8; a full send buffer drops the datagram, as the network would.
    """

    def __init__(self, allow_remote: bool = False, batch: int = 64, buffer_size: int = 1 << 21):
        self.allow_remote = allow_remote
        self.batch = batch
        self.buffer_size = buffer_size

    async def bind(self, host: str, port: int, on_datagram: OnDatagram) -> UDPEndpoint:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((host, port))
        except BaseException:
            sock.close()
            raise
        ep = UDPEndpoint(sock, on_datagram, self.allow_remote, self.batch)
        ep.set_buffer_size(self.buffer_size)
        return ep
