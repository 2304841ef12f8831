"""Noise IK over Ed25519, exactly as hyperdht's `lib/noise-wrap.js` runs it (sans-IO).

Pattern IK (`<- s` known; `-> e, es, s, ss`; `<- e, ee, se`), protocol name
`Noise_IK_Ed25519_ChaChaPoly_BLAKE2b`, prologue NS_PEER_HANDSHAKE, HKDF over
HMAC-BLAKE2b and noise-curve-ed's Ed25519 point multiplication as DH
(PROTOCOL.md 3.3). `NoiseWrap` adds the hyperdht noise payload codec
(`mesh.noise_payload`). Every failure to authenticate, including a replayed or
out-of-order message, raises `CryptoError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import crypto
from .errors import CryptoError, DecodeError
from .noise_payload import NoisePayload, decode_noise_payload, encode_noise_payload

PROTOCOL_NAME = b"Noise_IK_Ed25519_ChaChaPoly_BLAKE2b"
HASHLEN = 64
DHLEN = 32
MACLEN = 16

_DHT_NS = crypto.namespace("hyperswarm/dht", [0, 1])
NS_PEER_HANDSHAKE = _DHT_NS[0]
NS_PEER_HOLEPUNCH = _DHT_NS[1]


@dataclass(frozen=True)
class NoiseResult:
    """What a completed handshake yields (hyperdht `NoiseWrap.final()`)."""

    is_initiator: bool
    public_key: bytes
    remote_public_key: bytes
    handshake_hash: bytes  # 64 bytes
    tx: bytes  # 32-byte key for what we send
    rx: bytes  # 32-byte key for what we receive
    holepunch_secret: bytes

    def __repr__(self) -> str:  # keys stay out of logs
        return f"NoiseResult(initiator={self.is_initiator}, remote={self.remote_public_key.hex()[:16]}..)"


class _SymmetricState:
    __slots__ = ("h", "ck", "k", "n")

    def __init__(self, prologue: bytes):
        self.h = PROTOCOL_NAME.ljust(HASHLEN, b"\x00")
        self.ck = self.h
        self.k: bytes | None = None
        self.n = 0
        self.mix_hash(prologue)

    def mix_hash(self, data: bytes) -> None:
        self.h = crypto.hash(self.h + data, size=HASHLEN)

    def mix_key(self, dh: bytes) -> None:
        self.ck, temp = crypto.hkdf_blake2b(self.ck, dh)
        self.k, self.n = temp[:32], 0

    def encrypt_and_hash(self, plain: bytes) -> bytes:
        assert self.k is not None  # IK mixes a key before any encrypted field
        c = crypto.aead_encrypt(self.k, self.n, self.h, plain)
        self.n += 1
        self.mix_hash(c)
        return c

    def decrypt_and_hash(self, c: bytes) -> bytes:
        assert self.k is not None
        p = crypto.aead_decrypt(self.k, self.n, self.h, c)  # raises CryptoError
        self.n += 1
        self.mix_hash(c)
        return p

    def split(self) -> tuple[bytes, bytes]:
        k1, k2 = crypto.hkdf_blake2b(self.ck, b"")
        return k1[:32], k2[:32]


class NoiseHandshake:
    """One side of a Noise IK handshake over raw payload bytes.

    Initiator: `send(payload)` -> message 1, then `recv(message 2)` -> payload.
    Responder: `recv(message 1)` -> payload, then `send(payload)` -> message 2.
    After that `complete` is True and `result()` gives the keys.
    """

    def __init__(
        self,
        keypair: crypto.KeyPair,
        remote_public_key: bytes | None = None,
        *,
        prologue: bytes = NS_PEER_HANDSHAKE,
        ephemeral: crypto.KeyPair | None = None,
    ):
        self.is_initiator = remote_public_key is not None
        self._s = keypair
        self._e = ephemeral
        self._re: bytes | None = None
        self.remote_public_key = remote_public_key
        self._sym = _SymmetricState(prologue)
        self._sym.mix_hash(remote_public_key if self.is_initiator else keypair.public_key)
        self._step = 0  # messages processed so far
        self.complete = False
        self._result: NoiseResult | None = None

    def send(self, payload: bytes = b"") -> bytes:
        """Write our next handshake message carrying `payload`."""
        if self.is_initiator and self._step == 0:
            return self._write1(payload)
        if not self.is_initiator and self._step == 1:
            return self._write2(payload)
        raise CryptoError("noise: send() out of turn")

    def recv(self, message: bytes) -> bytes:
        """Read the peer's handshake message; returns its payload, raises CryptoError."""
        message = bytes(message)
        if not self.is_initiator and self._step == 0:
            return self._read1(message)
        if self.is_initiator and self._step == 1:
            return self._read2(message)
        raise CryptoError("noise: unexpected handshake message (replayed or out of turn)")

    def result(self) -> NoiseResult:
        if self._result is None:
            raise CryptoError("noise: handshake not complete")
        return self._result

    # message 1: -> e, es, s, ss
    def _write1(self, payload: bytes) -> bytes:
        sym, rs = self._sym, self.remote_public_key
        assert rs is not None
        e = self._e = self._e or crypto.keypair()
        sym.mix_hash(e.public_key)
        sym.mix_key(crypto.ed25519_dh(e.secret_key, rs))
        enc_s = sym.encrypt_and_hash(self._s.public_key)
        sym.mix_key(crypto.ed25519_dh(self._s.secret_key, rs))
        self._step = 1
        return e.public_key + enc_s + sym.encrypt_and_hash(payload)

    def _read1(self, msg: bytes) -> bytes:
        if len(msg) < DHLEN + DHLEN + MACLEN + MACLEN:
            raise CryptoError("noise: message 1 too short")
        sym = self._sym
        self._step = -1  # a failed message poisons the handshake
        re = self._re = msg[:DHLEN]
        sym.mix_hash(re)
        sym.mix_key(crypto.ed25519_dh(self._s.secret_key, re))
        rs = sym.decrypt_and_hash(msg[DHLEN : 2 * DHLEN + MACLEN])
        sym.mix_key(crypto.ed25519_dh(self._s.secret_key, rs))
        payload = sym.decrypt_and_hash(msg[2 * DHLEN + MACLEN :])
        self.remote_public_key = rs
        self._step = 1
        return payload

    # message 2: <- e, ee, se
    def _write2(self, payload: bytes) -> bytes:
        sym, rs, re = self._sym, self.remote_public_key, self._re
        assert rs is not None and re is not None
        e = self._e = self._e or crypto.keypair()
        sym.mix_hash(e.public_key)
        sym.mix_key(crypto.ed25519_dh(e.secret_key, re))
        sym.mix_key(crypto.ed25519_dh(e.secret_key, rs))
        out = e.public_key + sym.encrypt_and_hash(payload)
        self._finish()
        return out

    def _read2(self, msg: bytes) -> bytes:
        if len(msg) < DHLEN + MACLEN:
            raise CryptoError("noise: message 2 too short")
        sym = self._sym
        assert self._e is not None
        self._step = -1
        re = self._re = msg[:DHLEN]
        sym.mix_hash(re)
        sym.mix_key(crypto.ed25519_dh(self._e.secret_key, re))
        sym.mix_key(crypto.ed25519_dh(self._s.secret_key, re))
        payload = sym.decrypt_and_hash(msg[DHLEN:])
        self._finish()
        return payload

    def _finish(self) -> None:
        k1, k2 = self._sym.split()
        tx, rx = (k1, k2) if self.is_initiator else (k2, k1)
        h = self._sym.h
        assert self.remote_public_key is not None
        self._result = NoiseResult(
            is_initiator=self.is_initiator,
            public_key=self._s.public_key,
            remote_public_key=self.remote_public_key,
            handshake_hash=h,
            tx=tx,
            rx=rx,
            holepunch_secret=crypto.hash(NS_PEER_HOLEPUNCH, key=h),
        )
        self._step = 2
        self.complete = True


class NoiseWrap:
    """hyperdht's NoiseWrap: the IK handshake with `NoisePayload`s inside.

    `NoiseWrap(keypair, remote_public_key)` is the initiator; with no remote key
    it is the responder. A payload that does not decode raises DecodeError; a
    message that does not authenticate raises CryptoError.
    """

    def __init__(self, keypair: crypto.KeyPair, remote_public_key: bytes | None = None, **kw):
        self.handshake = NoiseHandshake(keypair, remote_public_key, **kw)
        self.is_initiator = self.handshake.is_initiator

    @property
    def remote_public_key(self) -> bytes | None:
        return self.handshake.remote_public_key

    def send(self, payload: NoisePayload) -> bytes:
        return self.handshake.send(encode_noise_payload(payload))

    def recv(self, message: bytes) -> NoisePayload:
        return decode_noise_payload(self.handshake.recv(message))

    def final(self) -> NoiseResult:
        return self.handshake.result()


__all__ = [
    "NS_PEER_HANDSHAKE", "NS_PEER_HOLEPUNCH", "NoiseHandshake", "NoiseResult", "NoiseWrap",
    "NoisePayload", "encode_noise_payload", "decode_noise_payload", "DecodeError",
]
