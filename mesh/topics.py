"""Topic names to 32-byte DHT keys.

A topic key is BLAKE2b-256 of the UTF-8 text "<namespace>:<name>"; the rule is
stated in the README so services in other languages compute the same keys.
"""

from __future__ import annotations

from . import crypto

TOPIC_BYTES = 32


def topic_key(namespace: str, name: str) -> bytes:
    """The DHT topic for `name` in `namespace`."""
    return crypto.hash(f"{namespace}:{name}".encode("utf-8"))


def parse_topic_hex(text: str) -> bytes:
    """A raw 32-byte topic given as 64 hex characters."""
    try:
        key = bytes.fromhex(text)
    except ValueError as e:
        raise ValueError(f"topic key is not hex: {text!r}") from e
    if len(key) != TOPIC_BYTES:
        raise ValueError(f"topic key must be 32 bytes, got {len(key)}")
    return key
