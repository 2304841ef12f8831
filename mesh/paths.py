"""Which network path a fresh Noise handshake leads to (sans-IO).

After PEER_HANDSHAKE both sides know each other's noise payload. This module
decides, from plain values, where the UDX stream goes (PROTOCOL.md 3.4 and
hyperdht lib/connect.js `holepunch()` / lib/server.js `_addHandshake`). The
drivers in connect.py and server.py only carry out the decision.

Holepunching through NATs is a later issue: `choose_client_path` returns
`Path(HOLEPUNCH)` where it would be needed and the client reports it as
`HolepunchRequiredError`; a holepuncher plugs in at that branch.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum

from mesh.encoding import Address

FIREWALL_UNKNOWN = 0
FIREWALL_OPEN = 1
FIREWALL_CONSISTENT = 2
FIREWALL_RANDOM = 3


class PathKind(Enum):
    DIRECT = "direct"  # connect the UDX stream to `address` now
    LAN = "lan"  # PING `address`; connect to it if it answers
    PASSIVE = "passive"  # we are reachable: wait for the server's first packet
    HOLEPUNCH = "holepunch"  # needs NAT traversal (not implemented yet)


@dataclass(frozen=True)
class Path:
    kind: PathKind
    address: Address | None = None


_PRIVATE = [
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
              "172.16.0.0/12", "192.168.0.0/16")
]
_RESERVED = [
    ipaddress.ip_network(n)
    for n in ("0.0.0.0/8", "192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15",
              "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4")
]


def is_private(host: str) -> bool:
    """Private-use, CGNAT, loopback or link-local IPv4 (the `bogon` package's isPrivate)."""
    ip = ipaddress.ip_address(host)
    return any(ip in n for n in _PRIVATE)


def is_reserved(host: str) -> bool:
    """Reserved / documentation / multicast IPv4 (bogon's isReserved; loopback is not)."""
    ip = ipaddress.ip_address(host)
    return any(ip in n for n in _RESERVED)


def is_bogon(host: str) -> bool:
    return is_private(host) or is_reserved(host)


def match_address(mine: list[Address], theirs: list[Address]) -> Address | None:
    """The remote local address sharing the longest /8, /16, /24 prefix with one of ours."""
    best: Address | None = None
    best_segments = 0
    for local in mine:
        a = local[0].split(".")
        for remote in theirs:
            b = remote[0].split(".")
            shared = 0
            while shared < 3 and a[shared] == b[shared]:
                shared += 1
            if shared == 3:
                return remote
            if shared > best_segments:
                best, best_segments = remote, shared
    return best


def choose_client_path(
    *,
    relayed: bool,
    relay_address: Address,
    server_address: Address,
    client_address: Address | None,
    server_firewall: int,
    server_addresses: list[Address],
    server_holepunchable: bool,
    client_firewall: int,
    local_addresses: list[Address],
    lan: bool = True,
) -> Path:
    """Where the client's UDX stream goes once the handshake reply is in.

    relayed: the reply came through a relay (not from the server's own node).
    server_address: the server as the relay saw it (== relay_address if direct).
    client_address: our address as the relay saw it.
    """
    if not relayed:
        # The server answered from its own node: it is reachable there.
        return Path(PathKind.DIRECT, relay_address)
    if server_firewall == FIREWALL_OPEN or not server_holepunchable:
        public = [a for a in server_addresses if not is_bogon(a[0])]
        return Path(PathKind.DIRECT, public[0] if public else server_address)
    if client_firewall == FIREWALL_OPEN:
        return Path(PathKind.PASSIVE)
    if lan and client_address is not None and client_address[0] == server_address[0]:
        candidates = [a for a in server_addresses if not is_reserved(a[0])]
        if candidates:
            return Path(PathKind.LAN, match_address(local_addresses, candidates) or candidates[0])
    return Path(PathKind.HOLEPUNCH)


def server_connects_now(*, client_firewall: int, direct: bool) -> bool:
    """Whether the server connects its UDX stream at once (else it waits for the
    client's first packet carrying the stream id)."""
    return client_firewall == FIREWALL_OPEN or direct
