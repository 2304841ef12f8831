"""The mesh package's error tree.

Local failures and failures reported by a remote peer are kept apart so a caller
can tell "the network said no" from "we could not ask".
"""


class MeshError(Exception):
    """Base of every error raised by the mesh package."""


class DecodeError(MeshError, ValueError):
    """Bytes that do not decode as the expected wire structure."""


class EncodeError(MeshError, ValueError):
    """A value that cannot be put on the wire (out of range, too large)."""


class CryptoError(MeshError):
    """A signature, MAC or handshake that does not verify."""


class TimeoutError_(MeshError, TimeoutError):
    """A request or handshake that got no answer in time."""


class RemoteError(MeshError):
    """An error reported by a remote peer (with its wire code)."""

    def __init__(self, message: str, code: str | int | None = None):
        super().__init__(message)
        self.code = code


class ClosedError(MeshError):
    """The object (node, stream, channel) was closed or destroyed."""
