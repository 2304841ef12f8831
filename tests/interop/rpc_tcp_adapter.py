"""A stand-in secure connection over TCP, for checking mesh.rpc's codec against Node.

CODEC CHECK ONLY, not the product transport: the real Connection (HyperDHT
PEER_HANDSHAKE routing + UDX + secret-stream) is mesh.connect's job. This file
does what rpc-reference/rpc-interop.js does on the Node side: hyperdht's Noise
IK handshake (messages framed as uint16 LE length + bytes on one TCP
connection, standing in for the DHT routing), then @hyperswarm/secret-stream
framing on the same socket (a 56-byte header frame, then uint24-length
xchacha20poly1305 secretstream frames, one per message). Built on mesh.crypto.
"""

from __future__ import annotations

import asyncio

from mesh import crypto
from mesh.encoding import uint
from mesh.errors import ClosedError, CryptoError, DecodeError

PROTOCOL_NAME = b"Noise_IK_Ed25519_ChaChaPoly_BLAKE2b"
NS_PEER_HANDSHAKE = crypto.namespace("hyperswarm/dht", [0])[0]
SS_INITIATOR, SS_RESPONDER = crypto.namespace("hyperswarm/secret-stream", [0, 1])
MAX_FRAME = (1 << 24) - 1


def noise_payload() -> bytes:
    """hyperdht's noise payload: version 1, firewall OPEN, one IPv4 address, udx, secretStream."""
    flags = 2 | 8 | 16
    return (uint(1) + uint(flags) + uint(0) + uint(1) + uint(1) + bytes([127, 0, 0, 1]) + (1).to_bytes(2, "little")
            + uint(1) + uint(0) + uint(1) + uint(0) + uint(1))


class NoiseIK:
    """Noise IK over Ed25519 (noise-curve-ed), ChaCha20-Poly1305, BLAKE2b-512."""

    def __init__(self, initiator: bool, static: crypto.KeyPair, remote_static: bytes | None = None):
        self.initiator, self.s, self.rs = initiator, static, remote_static
        self.e: crypto.KeyPair | None = None
        self.re = b""
        self.h = PROTOCOL_NAME.ljust(64, b"\x00")
        self.ck, self.k, self.n = self.h, None, 0
        self._mix_hash(NS_PEER_HANDSHAKE)
        self._mix_hash(remote_static if initiator else static.public_key)
        self.tx = self.rx = self.hash = b""

    def _mix_hash(self, data: bytes) -> None:
        self.h = crypto.hash(self.h + data, size=64)

    def _mix_key(self, dh: bytes) -> None:
        self.ck, temp = crypto.hkdf_blake2b(self.ck, dh)
        self.k, self.n = temp[:32], 0

    def _enc(self, plain: bytes) -> bytes:
        c = crypto.aead_encrypt(self.k, self.n, self.h, plain)
        self.n += 1
        self._mix_hash(c)
        return c

    def _dec(self, c: bytes) -> bytes:
        p = crypto.aead_decrypt(self.k, self.n, self.h, c)
        self.n += 1
        self._mix_hash(c)
        return p

    def _split(self) -> None:
        t1, t2 = crypto.hkdf_blake2b(self.ck, b"")
        self.tx, self.rx = (t1[:32], t2[:32]) if self.initiator else (t2[:32], t1[:32])
        self.hash = self.h

    def write1(self, payload: bytes) -> bytes:
        self.e = crypto.keypair()
        self._mix_hash(self.e.public_key)
        self._mix_key(crypto.ed25519_dh(self.e.secret_key, self.rs))
        out = self.e.public_key + self._enc(self.s.public_key)
        self._mix_key(crypto.ed25519_dh(self.s.secret_key, self.rs))
        return out + self._enc(payload)

    def read1(self, msg: bytes) -> bytes:
        self.re = msg[:32]
        self._mix_hash(self.re)
        self._mix_key(crypto.ed25519_dh(self.s.secret_key, self.re))
        self.rs = self._dec(msg[32:80])
        self._mix_key(crypto.ed25519_dh(self.s.secret_key, self.rs))
        return self._dec(msg[80:])

    def write2(self, payload: bytes) -> bytes:
        self.e = crypto.keypair()
        self._mix_hash(self.e.public_key)
        self._mix_key(crypto.ed25519_dh(self.e.secret_key, self.re))
        self._mix_key(crypto.ed25519_dh(self.e.secret_key, self.rs))
        out = self.e.public_key + self._enc(payload)
        self._split()
        return out

    def read2(self, msg: bytes) -> bytes:
        self.re = msg[:32]
        self._mix_hash(self.re)
        self._mix_key(crypto.ed25519_dh(self.e.secret_key, self.re))
        self._mix_key(crypto.ed25519_dh(self.s.secret_key, self.re))
        p = self._dec(msg[32:])
        self._split()
        return p


class TcpConnection:
    """secret-stream over an asyncio TCP stream, with the Connection interface."""

    def __init__(self, reader, writer, nz: NoiseIK, public_key: bytes):
        self.reader, self.writer = reader, writer
        self.public_key, self.remote_public_key = public_key, nz.rs
        self.handshake_hash, self.is_initiator = nz.hash, nz.initiator
        self._push = crypto.SecretStreamPush(nz.tx)
        self._rx_key = nz.rx
        self._expected_id = crypto.hash(SS_RESPONDER if nz.initiator else SS_INITIATOR, key=nz.hash)
        own_id = crypto.hash(SS_INITIATOR if nz.initiator else SS_RESPONDER, key=nz.hash)
        writer.write((56).to_bytes(3, "little") + own_id + self._push.header)
        self.closed: asyncio.Future = asyncio.get_running_loop().create_future()

    def write(self, message: bytes) -> bool:
        if self.closed.done() or self.writer.is_closing():
            raise ClosedError("connection closed")
        c = self._push.push(bytes(message))
        if len(c) > MAX_FRAME:
            raise ValueError("Message is too large for an atomic write")
        self.writer.write(len(c).to_bytes(3, "little") + c)
        return True

    async def drain(self) -> None:
        if not self.closed.done():
            try:
                await self.writer.drain()
            except ConnectionError:
                self.destroy()

    async def __aiter__(self):
        pull = None
        try:
            while True:
                n = int.from_bytes(await self.reader.readexactly(3), "little")
                frame = await self.reader.readexactly(n)
                if pull is None:
                    if n != 56 or frame[:32] != self._expected_id:
                        raise DecodeError("bad secret-stream header frame")
                    pull = crypto.SecretStreamPull(frame[32:], self._rx_key)
                    continue
                message, _tag = pull.pull(frame)
                yield message
        except (asyncio.IncompleteReadError, ConnectionError, CryptoError):
            pass
        finally:
            self.destroy()

    async def close(self) -> None:
        self.destroy()

    def destroy(self, exc: BaseException | None = None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
            self.writer.close()


async def _read_u16(reader) -> bytes:
    n = int.from_bytes(await reader.readexactly(2), "little")
    return await reader.readexactly(n)


def _u16(b: bytes) -> bytes:
    return len(b).to_bytes(2, "little") + b


async def tcp_connect(port: int, remote_public_key: bytes, keypair: crypto.KeyPair) -> TcpConnection:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    nz = NoiseIK(True, keypair, remote_public_key)
    writer.write(_u16(nz.write1(noise_payload())))
    nz.read2(await _read_u16(reader))
    return TcpConnection(reader, writer, nz, keypair.public_key)


async def tcp_serve(keypair: crypto.KeyPair, on_connection, port: int = 0) -> asyncio.AbstractServer:
    """Listen on 127.0.0.1; on_connection(conn) is called for each handshaken connection."""

    async def handle(reader, writer):
        try:
            nz = NoiseIK(False, keypair)
            nz.read1(await _read_u16(reader))
            writer.write(_u16(nz.write2(noise_payload())))
        except (asyncio.IncompleteReadError, ConnectionError, CryptoError):
            writer.close()
            return
        on_connection(TcpConnection(reader, writer, nz, keypair.public_key))

    return await asyncio.start_server(handle, "127.0.0.1", port)
