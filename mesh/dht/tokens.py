"""Round-trip tokens (sans-IO).

A token proves that the requester can receive at its IP: token =
hash(ip as ASCII, key = secret). Two secrets rotate every 10 x 750 ms (the
older is replaced by hash(itself)), and a token made from either is accepted,
so a token lives 7.5-15 s. Rotation is computed from `now`, no timer needed.
"""

from __future__ import annotations

from .. import crypto

ROTATE_INTERVAL = 7.5


class Tokens:
    __slots__ = ("_secrets", "_epoch")

    def __init__(self, now: float, seed: bytes | None = None):
        s = seed or crypto.random_bytes(32)
        self._secrets = [crypto.hash(s + b"\x00"), crypto.hash(s + b"\x01")]
        self._epoch = int(now // ROTATE_INTERVAL)

    def _advance(self, now: float) -> None:
        epoch = int(now // ROTATE_INTERVAL)
        steps = epoch - self._epoch
        if steps <= 0:
            return
        for _ in range(min(steps, 2)):
            # the older secret becomes the newest: secrets[1] is always the current one
            self._secrets = [self._secrets[1], crypto.hash(self._secrets[0])]
        self._epoch = epoch

    def create(self, host: str, now: float) -> bytes:
        self._advance(now)
        return crypto.hash(host.encode(), key=self._secrets[1])

    def validate(self, host: str, token: bytes, now: float) -> bool:
        self._advance(now)
        msg = host.encode()
        return token == crypto.hash(msg, key=self._secrets[1]) or token == crypto.hash(msg, key=self._secrets[0])
