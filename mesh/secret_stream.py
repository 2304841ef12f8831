"""@hyperswarm/secret-stream framing over a reliable byte stream (sans-IO).

After the Noise handshake each side sends one id/header frame
`uint24 56 | streamId(32) | secretstream header(24)`, then data frames
`uint24 len | crypto_secretstream_xchacha20poly1305_push(message)`. A frame
with an empty plaintext is a keepalive and is not delivered. Unordered
datagrams (UDX MESSAGE) are `counter(8) | secretbox(message)` with the nonce
`counter | 16 zero bytes` (PROTOCOL.md 3.6).

`SecretStream.feed(data)` returns the decrypted messages; any bad frame raises
CryptoError or FrameTooLarge (the stream is then unusable: the caller destroys
the connection).
"""

from __future__ import annotations

import os

from . import crypto
from .errors import CryptoError, DecodeError, EncodeError

_NS = crypto.namespace("hyperswarm/secret-stream", [0, 1, 2])
NS_INITIATOR, NS_RESPONDER, NS_SEND = _NS

HEADER_FRAME_LEN = 56
MAX_FRAME = (1 << 24) - 1  # uint24 length prefix
ABYTES = crypto.SECRETSTREAM_ABYTES
MAX_MESSAGE = MAX_FRAME - ABYTES
_MAC = crypto.SECRETBOX_MAC_BYTES
_NONCE_PAD = bytes(16)


class FrameTooLarge(DecodeError):
    """A frame announced a length above the configured maximum."""


def stream_id(handshake_hash: bytes, is_initiator: bool) -> bytes:
    """secret-stream's id of the side with role `is_initiator`."""
    return crypto.hash(NS_INITIATOR if is_initiator else NS_RESPONDER, key=handshake_hash)


class SecretStream:
    """Both directions of one secret-stream, fed raw stream bytes."""

    def __init__(
        self,
        is_initiator: bool,
        handshake_hash: bytes,
        tx: bytes,
        rx: bytes,
        *,
        max_frame: int = MAX_FRAME,
    ):
        self.is_initiator = is_initiator
        self.handshake_hash = handshake_hash
        self.max_frame = min(max_frame, MAX_FRAME)
        self._push = crypto.SecretStreamPush(tx[:32])
        self._rx_key = rx[:32]
        self._pull: crypto.SecretStreamPull | None = None
        self._remote_id = stream_id(handshake_hash, not is_initiator)
        self.header_frame = (
            HEADER_FRAME_LEN.to_bytes(3, "little") + stream_id(handshake_hash, is_initiator) + self._push.header
        )
        self._buf = bytearray()
        self._failed = False
        # unordered datagrams (UDX MESSAGE)
        mine, theirs = (NS_INITIATOR, NS_RESPONDER) if is_initiator else (NS_RESPONDER, NS_INITIATOR)
        self._send_key = crypto.hash_batch([mine, NS_SEND], key=handshake_hash)
        self._recv_key = crypto.hash_batch([theirs, NS_SEND], key=handshake_hash)
        self._counter = int.from_bytes(os.urandom(8), "little")
        self.counters = {"keepalives": 0, "messages": 0, "oversized": 0, "bad_frames": 0, "bad_datagrams": 0}

    @property
    def remote_started(self) -> bool:
        return self._pull is not None

    def encrypt(self, message: bytes) -> bytes:
        """One framed, encrypted message (empty = keepalive)."""
        if len(message) > MAX_MESSAGE:
            raise EncodeError(f"message of {len(message)} bytes exceeds the {MAX_MESSAGE}-byte frame limit")
        return self._push.push_framed(message, 3)

    def feed(self, data: bytes | memoryview) -> list[bytes]:
        """Feed stream bytes; return the complete messages they finish."""
        if self._failed:
            raise CryptoError("secret-stream already failed")
        buf = self._buf
        if buf:
            buf += data
            view = memoryview(buf)
        else:
            # Nothing pending: read the frames in place; only a trailing partial
            # frame is copied into the buffer.
            view = memoryview(data)
        out: list[bytes] = []
        pos, n = 0, len(view)
        frame = None
        try:
            while n - pos >= 3:
                flen = view[pos] | (view[pos + 1] << 8) | (view[pos + 2] << 16)
                if flen > self.max_frame:
                    self.counters["oversized"] += 1
                    raise FrameTooLarge(f"frame of {flen} bytes exceeds the {self.max_frame}-byte limit")
                if n - pos - 3 < flen:
                    break
                frame = view[pos + 3 : pos + 3 + flen]
                pos += 3 + flen
                if self._pull is None:
                    self._start_pull(bytes(frame))
                    continue
                plain, _tag = self._pull.pull(frame)
                if plain:
                    out.append(plain)
                else:
                    self.counters["keepalives"] += 1
        except (CryptoError, DecodeError):
            self._failed = True
            self.counters["bad_frames"] += 1
            raise
        finally:
            frame = None  # its export of the buffer must end before the buffer shrinks
            view.release()
            if buf:
                del buf[:pos]
            elif pos < n:
                buf += data[pos:]
        self.counters["messages"] += len(out)
        return out

    def _start_pull(self, frame: bytes) -> None:
        if len(frame) != HEADER_FRAME_LEN:
            raise CryptoError(f"secret-stream header frame has {len(frame)} bytes, expected 56")
        if frame[:32] != self._remote_id:
            raise CryptoError("secret-stream id does not match the handshake")
        self._pull = crypto.SecretStreamPull(frame[32:], self._rx_key)

    # ------------------------------------------------------------ unordered datagrams

    def seal_datagram(self, message: bytes) -> bytes:
        self._counter = (self._counter + 1) & 0xFFFFFFFFFFFFFFFF
        c = self._counter.to_bytes(8, "little")
        return c + crypto.secretbox(message, c + _NONCE_PAD, self._send_key)

    def open_datagram(self, data: bytes) -> bytes:
        """Decrypt an unordered datagram; raises CryptoError if it does not verify."""
        if len(data) < 8 + _MAC:
            self.counters["bad_datagrams"] += 1
            raise CryptoError("secret-stream datagram too short")
        try:
            return crypto.secretbox_open(bytes(data[8:]), bytes(data[:8]) + _NONCE_PAD, self._recv_key)
        except CryptoError:
            self.counters["bad_datagrams"] += 1
            raise
