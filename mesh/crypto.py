"""All cryptography of the mesh, and the only module that imports pynacl.

Hashes are libsodium's generic hash (BLAKE2b), 32 bytes unless stated. Key
pairs are Ed25519 with libsodium's 64-byte secret keys (seed || public key); the
same key signs DHT records and is the Noise static key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from nacl import bindings as _nb
from nacl._sodium import ffi as _ffi
from nacl._sodium import lib as _lib
from nacl.exceptions import BadSignatureError as _BadSignature
from nacl.exceptions import CryptoError as _NaclCryptoError

from .errors import CryptoError

PUBLIC_KEY_BYTES = 32
SECRET_KEY_BYTES = 64
SIGNATURE_BYTES = 64
SEED_BYTES = 32


@dataclass(frozen=True)
class KeyPair:
    """An Ed25519 identity: 32-byte public key, 64-byte libsodium secret key."""

    public_key: bytes
    secret_key: bytes

    def __repr__(self) -> str:  # never print the secret key
        return f"KeyPair(public_key={self.public_key.hex()})"


def keypair(seed: bytes | None = None) -> KeyPair:
    """Return a key pair derived from a 32-byte seed, or a random one."""
    if seed is None:
        pk, sk = _nb.crypto_sign_keypair()
    else:
        if len(seed) != SEED_BYTES:
            raise ValueError("seed must be 32 bytes")
        pk, sk = _nb.crypto_sign_seed_keypair(bytes(seed))
    return KeyPair(pk, sk)


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


def hash(data: bytes, key: bytes | None = None, size: int = 32) -> bytes:  # noqa: A001 - the protocol's name
    """BLAKE2b of `data`, optionally keyed (libsodium crypto_generichash)."""
    return hashlib.blake2b(data, digest_size=size, key=key or b"").digest()


def hash_batch(parts: list[bytes], key: bytes | None = None, size: int = 32) -> bytes:
    """BLAKE2b over the concatenation of `parts` (crypto_generichash_batch)."""
    h = hashlib.blake2b(digest_size=size, key=key or b"")
    for p in parts:
        h.update(p)
    return h.digest()


def namespace(name: str | bytes, ids: list[int]) -> list[bytes]:
    """hypercore-crypto namespace: ns = hash(name); one hash(ns || byte(id)) per id."""
    ns = hash(name.encode() if isinstance(name, str) else name)
    return [hash(ns + bytes([i])) for i in ids]


def sign(message: bytes, secret_key: bytes) -> bytes:
    """Detached Ed25519 signature (64 bytes)."""
    return _nb.crypto_sign(message, secret_key)[:SIGNATURE_BYTES]


def verify(signature: bytes, message: bytes, public_key: bytes) -> bool:
    """True if `signature` is a valid Ed25519 signature of `message` by `public_key`."""
    if len(signature) != SIGNATURE_BYTES or len(public_key) != PUBLIC_KEY_BYTES:
        return False
    try:
        _nb.crypto_sign_open(signature + message, public_key)
        return True
    except (_BadSignature, _NaclCryptoError, ValueError):
        return False


# ---------------------------------------------------------------- Noise (noise-curve-ed)

def ed25519_scalar(secret_key: bytes) -> bytes:
    """The clamped Ed25519 scalar of a libsodium secret key (SHA-512 of the seed)."""
    h = bytearray(hashlib.sha512(secret_key[:32]).digest()[:32])
    h[0] &= 248
    h[31] &= 127
    h[31] |= 64
    return bytes(h)


def ed25519_dh(secret_key: bytes, public_key: bytes) -> bytes:
    """noise-curve-ed DH: the peer's Ed25519 point times our clamped scalar."""
    try:
        return _nb.crypto_scalarmult_ed25519_noclamp(ed25519_scalar(secret_key), public_key)
    except (_NaclCryptoError, ValueError) as e:
        raise CryptoError("invalid Ed25519 public key for key agreement") from e


def hmac_blake2b(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.blake2b).digest()


def hkdf_blake2b(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    """Noise HKDF with HMAC-BLAKE2b, two 64-byte outputs."""
    temp = hmac_blake2b(chaining_key, ikm)
    out1 = hmac_blake2b(temp, b"\x01")
    out2 = hmac_blake2b(temp, out1 + b"\x02")
    return out1, out2


def aead_encrypt(key: bytes, counter: int, ad: bytes, plaintext: bytes) -> bytes:
    """ChaCha20-Poly1305 IETF with the Noise nonce (4 zero bytes || u64 LE counter)."""
    nonce = b"\x00\x00\x00\x00" + counter.to_bytes(8, "little")
    return _nb.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, ad, nonce, key)


def aead_decrypt(key: bytes, counter: int, ad: bytes, ciphertext: bytes) -> bytes:
    nonce = b"\x00\x00\x00\x00" + counter.to_bytes(8, "little")
    try:
        return _nb.crypto_aead_chacha20poly1305_ietf_decrypt(ciphertext, ad, nonce, key)
    except (_NaclCryptoError, ValueError) as e:
        raise CryptoError("AEAD authentication failed") from e


# ---------------------------------------------------------------- secretbox (holepunch, unordered send)

SECRETBOX_NONCE_BYTES = 24
SECRETBOX_MAC_BYTES = 16


def secretbox(message: bytes, nonce: bytes, key: bytes) -> bytes:
    return _nb.crypto_secretbox_easy(message, nonce, key) if hasattr(_nb, "crypto_secretbox_easy") else _nb.crypto_secretbox(message, nonce, key)


def secretbox_open(ciphertext: bytes, nonce: bytes, key: bytes) -> bytes:
    try:
        if hasattr(_nb, "crypto_secretbox_open_easy"):
            return _nb.crypto_secretbox_open_easy(ciphertext, nonce, key)
        return _nb.crypto_secretbox_open(ciphertext, nonce, key)
    except (_NaclCryptoError, ValueError) as e:
        raise CryptoError("secretbox authentication failed") from e


# ---------------------------------------------------------------- secretstream (xchacha20poly1305)

SECRETSTREAM_HEADER_BYTES = 24
SECRETSTREAM_ABYTES = 17
TAG_MESSAGE = 0


# The per-message calls go to libsodium through pynacl's own cffi handle: the
# nacl.bindings wrappers re-check every argument with Python-level `ensure`
# calls and copy the output twice, which cost more than the cipher itself on
# the small messages RPC sends.
_alloc = _ffi.new_allocator(should_clear_after_alloc=False)
_ss_push = _lib.crypto_secretstream_xchacha20poly1305_push
_ss_pull = _lib.crypto_secretstream_xchacha20poly1305_pull


class SecretStreamPush:
    """Encrypting half of crypto_secretstream_xchacha20poly1305."""

    def __init__(self, key: bytes):
        self._state = _nb.crypto_secretstream_xchacha20poly1305_state()
        self.header = _nb.crypto_secretstream_xchacha20poly1305_init_push(self._state, key)
        self._st = self._state.statebuf

    def push(self, plaintext: bytes, tag: int = TAG_MESSAGE) -> bytes:
        return self.push_framed(plaintext, 0, tag)

    def push_framed(self, plaintext: bytes | memoryview, prefix: int, tag: int = TAG_MESSAGE) -> bytes:
        """The ciphertext after `prefix` bytes holding its length (little-endian; 0 = no prefix)."""
        mlen = len(plaintext)
        clen = mlen + SECRETSTREAM_ABYTES
        out = _alloc("unsigned char[]", prefix + clen)
        if prefix:
            _ffi.memmove(out, clen.to_bytes(prefix, "little"), prefix)
        m = plaintext if type(plaintext) is bytes else _ffi.from_buffer(plaintext)
        _ss_push(self._st, out + prefix, _ffi.NULL, m, mlen, _ffi.NULL, 0, tag)
        return _ffi.buffer(out)[:]


class SecretStreamPull:
    """Decrypting half of crypto_secretstream_xchacha20poly1305."""

    def __init__(self, header: bytes, key: bytes):
        if len(header) != SECRETSTREAM_HEADER_BYTES:
            raise CryptoError("secretstream header must be 24 bytes")
        self._state = _nb.crypto_secretstream_xchacha20poly1305_state()
        try:
            _nb.crypto_secretstream_xchacha20poly1305_init_pull(self._state, header, key)
        except (_NaclCryptoError, ValueError) as e:
            raise CryptoError("bad secretstream header") from e
        self._st = self._state.statebuf
        self._tag = _ffi.new("unsigned char *")

    def pull(self, ciphertext: bytes | memoryview) -> tuple[bytes, int]:
        """Return (plaintext, tag); raise CryptoError if the frame does not verify."""
        clen = len(ciphertext)
        if clen < SECRETSTREAM_ABYTES:
            raise CryptoError("secretstream frame failed to verify")
        mlen = clen - SECRETSTREAM_ABYTES
        out = _alloc("unsigned char[]", mlen or 1)
        c = ciphertext if type(ciphertext) is bytes else _ffi.from_buffer(ciphertext)
        if _ss_pull(self._st, out, _ffi.NULL, self._tag, c, clen, _ffi.NULL, 0) != 0:
            raise CryptoError("secretstream frame failed to verify")
        return _ffi.buffer(out, mlen)[:], self._tag[0]
