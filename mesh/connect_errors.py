"""Errors of the connection layer (connect.py, server.py, swarm.py).

All are MeshErrors so callers can catch the whole tree; timeouts are also
`TimeoutError_` and a peer's explicit refusal is a `RemoteError`.
"""

from __future__ import annotations

from mesh.errors import ClosedError, MeshError, RemoteError, TimeoutError_


class PeerNotFoundError(MeshError):
    """No DHT node knows a route (router entry) to that public key."""


class PeerConnectionFailedError(MeshError):
    """Relays were found but no handshake through them got an answer."""


class HandshakeTimeoutError(TimeoutError_):
    """The handshake or the first packet of the stream did not arrive in time."""


class ConnectionRefusedByPeer(RemoteError):
    """The server aborted the handshake (its firewall hook refused our key)."""


class ServerIncompatibleError(RemoteError):
    """The server speaks another handshake version or sent no UDX stream info."""


class HolepunchRequiredError(MeshError):
    """Both sides are firewalled on different hosts: NAT holepunching (not
    implemented yet) would be needed."""


class DuplicateConnectionError(ClosedError):
    """Closed because another connection to the same peer was kept."""


class BadHandshakeError(MeshError):
    """A handshake message that does not decode or authenticate."""
