"""hyperdht's noise payload (`messages.noisePayload`): what each side says inside
the Noise handshake: version, error, firewall, holepunch info, addresses, the
UDX stream id, secret-stream version, relay-through and relay addresses.

Layout: version uint (=1) | flags uint | error uint | firewall uint | then by
flag 1 holepunch, 2 addresses4, 4 addresses6, 8 udx, 16 secretStream,
32 relayThrough, 64 relayAddresses. Unknown flag bits and trailing bytes are
tolerated (newer peers may append fields). A version other than 1 decodes to a
payload with only `version` set, as hyperdht does, so the caller can answer
VERSION_MISMATCH.

The udx field's `features` uint carries bit 1 (reusableSocket, hyperdht's).
Bit 64 is this project's: LARGE_DATAGRAMS, "I read UDX datagrams of any size
up to 64 KiB" (libudx reads at most 2,048 bytes). hyperdht reads only bit 1 and
never sets 64, so a Node peer neither sees nor claims it; two Python peers use
it to send larger packets on loopback paths (mesh.transport).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from . import encoding as enc
from .encoding import Address, Reader
from .errors import DecodeError, EncodeError

# firewall values
FIREWALL_UNKNOWN, FIREWALL_OPEN, FIREWALL_CONSISTENT, FIREWALL_RANDOM = 0, 1, 2, 3
# error values
ERROR_NONE, ERROR_ABORTED, ERROR_VERSION_MISMATCH, ERROR_TRY_LATER = 0, 1, 2, 3

MAX_ADDRESSES = 64
UDX_REUSABLE_SOCKET = 1
UDX_LARGE_DATAGRAMS = 64


@dataclass(frozen=True)
class RelayInfo:
    relay_address: Address
    peer_address: Address


@dataclass(frozen=True)
class HolepunchInfo:
    id: int
    relays: list[RelayInfo] = field(default_factory=list)


@dataclass(frozen=True)
class UdxInfo:
    id: int
    seq: int = 0
    reusable_socket: bool = False
    version: int = 1
    large_datagrams: bool = False


@dataclass(frozen=True)
class RelayThroughInfo:
    public_key: bytes
    token: bytes
    version: int = 1


@dataclass(frozen=True)
class NoisePayload:
    version: int = 1
    error: int = ERROR_NONE
    firewall: int = FIREWALL_UNKNOWN
    holepunch: HolepunchInfo | None = None
    addresses4: list[Address] = field(default_factory=list)
    addresses6: list[Address] = field(default_factory=list)
    udx: UdxInfo | None = None
    secret_stream: int | None = 1  # secret-stream version, None when absent
    relay_through: RelayThroughInfo | None = None
    relay_addresses: list[Address] | None = None


def _ipv6(addr: Address) -> bytes:
    host, port = addr
    try:
        packed = ipaddress.IPv6Address(host).packed
    except ValueError as e:
        raise EncodeError(f"not an IPv6 address: {host!r}") from e
    return packed + enc.uint16(port)


def encode_noise_payload(p: NoisePayload) -> bytes:
    flags = (
        (1 if p.holepunch else 0)
        | (2 if p.addresses4 else 0)
        | (4 if p.addresses6 else 0)
        | (8 if p.udx else 0)
        | (16 if p.secret_stream is not None else 0)
        | (32 if p.relay_through else 0)
        | (64 if p.relay_addresses is not None else 0)
    )
    out = [enc.uint(1), enc.uint(flags), enc.uint(p.error), enc.uint(p.firewall)]
    if p.holepunch:
        out.append(enc.uint(p.holepunch.id))
        out.append(enc.array(p.holepunch.relays, lambda r: enc.ipv4(r.relay_address) + enc.ipv4(r.peer_address)))
    if p.addresses4:
        out.append(enc.array(p.addresses4, enc.ipv4))
    if p.addresses6:
        out.append(enc.array(p.addresses6, _ipv6))
    if p.udx:
        u = p.udx
        features = (UDX_REUSABLE_SOCKET if u.reusable_socket else 0) | (UDX_LARGE_DATAGRAMS if u.large_datagrams else 0)
        out += [enc.uint(1), enc.uint(features), enc.uint(u.id), enc.uint(u.seq)]
    if p.secret_stream is not None:
        out.append(enc.uint(1))
    if p.relay_through:
        r = p.relay_through
        out += [enc.uint(1), enc.uint(0), enc.fixed(r.public_key, 32), enc.fixed(r.token, 32)]
    if p.relay_addresses is not None:
        out.append(enc.array(p.relay_addresses, enc.ipv4))
    return b"".join(out)


def decode_noise_payload(buf: bytes) -> NoisePayload:
    """Decode a noise payload; raises DecodeError on truncated or malformed input."""
    r = Reader(buf)
    version = r.uint()
    if version != 1:
        return NoisePayload(version=version, secret_stream=None)
    flags = r.uint()
    error = r.uint()
    firewall = r.uint()
    holepunch = None
    if flags & 1:
        hid = r.uint()
        relays = r.array(lambda: RelayInfo(r.ipv4(), r.ipv4()), MAX_ADDRESSES)
        holepunch = HolepunchInfo(hid, relays)
    addresses4 = r.array(r.ipv4, MAX_ADDRESSES) if flags & 2 else []
    addresses6 = r.array(r.ipv6, MAX_ADDRESSES) if flags & 4 else []
    udx = None
    if flags & 8:
        uversion, features, uid, useq = r.uint(), r.uint(), r.uint(), r.uint()
        if uid > 0xFFFFFFFF:
            raise DecodeError("udx stream id out of range")
        udx = UdxInfo(id=uid, seq=useq, reusable_socket=bool(features & UDX_REUSABLE_SOCKET), version=uversion,
                      large_datagrams=bool(features & UDX_LARGE_DATAGRAMS))
    secret_stream = r.uint() if flags & 16 else None
    relay_through = None
    if flags & 32:
        rversion = r.uint()
        r.uint()  # flags, reserved
        relay_through = RelayThroughInfo(r.fixed(32), r.fixed(32), rversion)
    relay_addresses = r.array(r.ipv4, MAX_ADDRESSES) if flags & 64 else None
    return NoisePayload(
        version=version, error=error, firewall=firewall, holepunch=holepunch,
        addresses4=addresses4, addresses6=addresses6, udx=udx, secret_stream=secret_stream,
        relay_through=relay_through, relay_addresses=relay_addresses,
    )
