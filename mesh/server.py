"""The server side of a HyperDHT connection: `create_server(dht, firewall=...)`,
`await server.listen(keypair)`, connections via `on_connection(cb)` or
`async for conn in server`, `await server.close()`.

A handshake (PEER_HANDSHAKE, relayed FROM_RELAY or direct FROM_CLIENT) is
answered as Noise IK responder; the firewall hook runs on the client's key
before anything else is set up, and a refused key gets an ABORTED reply. The
UDX stream connects at once when the client is reachable or came directly,
else on the client's first packet (mesh.paths.server_connects_now).
"""

from __future__ import annotations

import asyncio
import inspect
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from mesh import crypto
from mesh.connect_errors import BadHandshakeError
from mesh.encoding import Address
from mesh.errors import ClosedError, CryptoError, DecodeError
from mesh.noise import NoiseWrap
from mesh.noise_payload import ERROR_ABORTED, ERROR_NONE, ERROR_VERSION_MISMATCH, NoisePayload, UdxInfo
from mesh.paths import server_connects_now
from mesh.server_announcer import Announcer
from mesh.transport import (
    connect_stream, firewall_of, handshake_socket, new_stream, our_addresses, secure_connection,
    udx_mux,
)

# A retransmitted (or multiply relayed) first message within this window gets
# the same answer; after it, the same bytes are a replay and are dropped.
HANDSHAKE_CLEAR_WAIT = 10.0
REPLAY_MEMORY = 4096  # first messages remembered to reject replays
MAX_PENDING = 512  # handshakes answered in the last HANDSHAKE_CLEAR_WAIT; more are dropped

# firewall(remote_public_key, remote_payload, client_address) -> True refuses (hyperdht's rule).
ServerFirewall = Callable[[bytes, NoisePayload, Address], bool | Awaitable[bool]]


def create_server(dht, firewall: ServerFirewall | None = None) -> "Server":
    """A server on `dht` (not listening yet)."""
    return Server(dht, firewall)


class Server:
    def __init__(self, dht, firewall: ServerFirewall | None = None):
        self.dht = dht
        self.firewall = firewall
        self.keypair: crypto.KeyPair | None = None
        self.target: bytes | None = None
        self.announcer: Announcer | None = None
        self.closed = False
        self.stats = dict.fromkeys(
            ("handshakes", "bad_handshake", "replayed", "busy", "firewalled", "firewall_errors",
             "version_mismatch", "no_udx", "connections"), 0)
        self._callbacks: list[Callable[[object], object]] = []
        self._queue: asyncio.Queue = asyncio.Queue()
        self._pending: dict[bytes, asyncio.Task] = {}
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._connections: set = set()
        self._handlers: set[asyncio.Task] = set()  # async on_connection callbacks

    @property
    def public_key(self) -> bytes | None:
        return self.keypair.public_key if self.keypair else None

    @property
    def relay_addresses(self) -> list[Address]:
        return list(self.announcer.relay_addresses) if self.announcer else []

    async def listen(self, keypair: crypto.KeyPair) -> "Server":
        """Accept handshakes for `keypair` and announce our route; returns self."""
        if self.keypair is not None:
            raise RuntimeError("server is already listening")
        if self.closed:
            raise ClosedError("server closed")
        await self.dht.ready()
        self.keypair = keypair
        udx_mux(self.dht)  # UDX packets may arrive before our first reply leaves
        self.target = self.dht.register_server(keypair, self._on_handshake)
        self.announcer = Announcer(self.dht, keypair, self.target)
        await self.announcer.start()
        return self

    def refresh(self) -> None:
        if self.announcer is not None:
            self.announcer.refresh()

    async def close(self) -> None:
        """Stop answering, unannounce our route, close the connections we made."""
        if self.closed:
            return
        self.closed = True
        if self.keypair is not None:
            self.dht.unregister_server(self.keypair.public_key)
        for task in self._pending.values():
            task.cancel()
        await asyncio.gather(*self._pending.values(), return_exceptions=True)
        self._pending.clear()
        if self.announcer is not None:
            await self.announcer.stop()
        for conn in list(self._connections):
            conn.destroy(ClosedError("server closed"))
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        self._queue.put_nowait(None)

    # -- connections out -------------------------------------------------------
    def on_connection(self, callback: Callable[[object], object]) -> None:
        self._callbacks.append(callback)

    def __aiter__(self):
        return self

    async def __anext__(self):
        conn = await self._queue.get()
        if conn is None:
            self._queue.put_nowait(None)
            raise StopAsyncIteration
        return conn

    def _emit(self, conn) -> None:
        self.stats["connections"] += 1
        if not self._callbacks:
            self._queue.put_nowait(conn)
        for cb in self._callbacks:
            result = cb(conn)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._handlers.add(task)
                task.add_done_callback(self._handlers.discard)

    # -- handshakes in -----------------------------------------------------------
    async def _on_handshake(self, req, hs):
        """The DHT's hook: returns (noise reply, socket) or None to stay silent."""
        if self.closed or not hs.noise:
            return None
        key = hs.noise
        task = self._pending.get(key)
        if task is None:
            if key in self._seen:
                self.stats["replayed"] += 1
                return None
            if len(self._pending) >= MAX_PENDING:
                self.stats["busy"] += 1  # a flood: each answer holds a stream for a while
                return None
            self._remember(key)
            direct = hs.peer_address is None
            client = req.from_address if direct else hs.peer_address
            task = asyncio.ensure_future(self._answer(key, client, direct))
            self._pending[key] = task
            asyncio.get_running_loop().call_later(HANDSHAKE_CLEAR_WAIT, self._pending.pop, key, None)
        reply = await asyncio.shield(task)
        return None if reply is None else (reply, handshake_socket(self.dht))

    def _remember(self, key: bytes) -> None:
        self._seen[key] = None
        while len(self._seen) > REPLAY_MEMORY:
            self._seen.popitem(last=False)

    async def _answer(self, noise: bytes, client: Address, direct: bool) -> bytes | None:
        self.stats["handshakes"] += 1
        wrap = NoiseWrap(self.keypair)
        try:
            remote = wrap.recv(noise)
        except (DecodeError, CryptoError):
            self.stats["bad_handshake"] += 1
            return None
        remote_key = wrap.remote_public_key
        if await self._refused(remote_key, remote, client):
            self.stats["firewalled"] += 1
            return wrap.send(NoisePayload(error=ERROR_ABORTED, firewall=firewall_of(self.dht)))
        error = ERROR_NONE
        if remote.version != 1:
            error = ERROR_VERSION_MISMATCH
            self.stats["version_mismatch"] += 1
        elif remote.udx is None:
            error = ERROR_ABORTED
            self.stats["no_udx"] += 1
        if error != ERROR_NONE:
            return wrap.send(NoisePayload(error=error, firewall=firewall_of(self.dht)))
        stream = new_stream(self.dht)
        reply = wrap.send(NoisePayload(
            firewall=firewall_of(self.dht),
            addresses4=our_addresses(self.dht),
            udx=UdxInfo(id=stream.local_id, large_datagrams=True),
            relay_addresses=self.relay_addresses or None,
        ))
        connects_now = server_connects_now(client_firewall=remote.firewall, direct=direct)
        conn = secure_connection(stream, wrap.final())
        self._connections.add(conn)  # closed with the server, reported or not
        conn.closed.add_done_callback(lambda _f: self._connections.discard(conn))
        # Reported once the client's stream is reachable (at once, or on its first packet).
        connect_stream(stream, remote.udx.id, client if connects_now else None,
                       on_connected=lambda: self._emit(conn), large_datagrams=remote.udx.large_datagrams)
        return reply

    async def _refused(self, remote_key: bytes, payload: NoisePayload, client: Address) -> bool:
        if self.firewall is None:
            return False
        try:
            verdict = self.firewall(remote_key, payload, client)
            if inspect.isawaitable(verdict):
                verdict = await verdict
        except Exception:  # noqa: BLE001 - a broken hook must fail closed, not open
            self.stats["firewall_errors"] += 1
            return True
        return bool(verdict)


__all__ = ["create_server", "Server", "BadHandshakeError"]
