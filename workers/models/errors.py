"""Errors of the model store, registry and manager.

Each carries a wire `code`: an RPC handler raising one is sent as REQUEST_ERROR with
that code, so a remote caller sees RpcError(code=...) and can tell a checksum
mismatch from a missing model.
"""

from __future__ import annotations


class ModelError(Exception):
    """Base of the model subsystem's errors."""

    code = "MODEL_ERROR"


class BadRequestError(ModelError, ValueError):
    """A malformed request value (missing field, bad sha256 text, bad offset)."""

    code = "BAD_REQUEST"


class NotFoundError(ModelError, LookupError):
    """No such model, version, file or upload session."""

    code = "NOT_FOUND"


class ConflictError(ModelError):
    """(id, version) already names a model with different content."""

    code = "CONFLICT"


class UploadRejectedError(ModelError):
    """An upload that cannot become a stored file; nothing of it is kept."""

    code = "UPLOAD_REJECTED"


class TooLargeError(UploadRejectedError):
    code = "TOO_LARGE"


class TruncatedError(UploadRejectedError):
    code = "TRUNCATED"


class ChecksumError(UploadRejectedError):
    code = "CHECKSUM_MISMATCH"


class InvalidModelError(UploadRejectedError):
    """The bytes are not a model of the declared type (e.g. not ONNX)."""

    code = "INVALID_MODEL"


class UploadExpiredError(ModelError):
    code = "UPLOAD_EXPIRED"


class FetchError(ModelError):
    """No peer could supply a file or a model's metadata."""

    code = "FETCH_FAILED"
