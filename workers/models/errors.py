"""Errors of the model store, registry, manager and fetcher, under workers.errors.

Each has a wire `code`: an RPC handler raising one is sent as REQUEST_ERROR with
that code, so a remote caller sees RpcError(code=...) and can tell a checksum
mismatch from a missing model. Where workers.errors already has the meaning
(INVALID_INPUT, MODEL_NOT_FOUND, CONFLICT, CHECKSUM_MISMATCH) the class subclasses
it and keeps its code; the upload-specific codes are new:

    UPLOAD_TOO_LARGE   declared size over the limit, or more bytes than declared
    UPLOAD_TRUNCATED   commit before all declared bytes arrived
    INVALID_MODEL      the bytes are not a model of the declared type (not ONNX)
    UPLOAD_NOT_FOUND   no such upload session (never begun, finished or expired)
    FETCH_FAILED       no peer could supply a file or a model's metadata
"""

from __future__ import annotations

from workers.errors import ChecksumMismatch, Conflict, InvalidInput, ModelNotFound, WorkerError


class ModelError(WorkerError):
    """Base of the model subsystem's errors."""

    code = "MODEL_ERROR"


class BadRequestError(ModelError, InvalidInput):
    """A malformed request value (missing field, bad sha256 text, bad offset)."""

    code = InvalidInput.code


class NotFoundError(ModelError, ModelNotFound):
    """No such model, version or stored file."""

    code = ModelNotFound.code


class ConflictError(ModelError, Conflict):
    """(id, version) already names a model with different content."""

    code = Conflict.code


class UploadRejectedError(ModelError):
    """An upload that cannot become a stored file; nothing of it is kept."""

    code = "UPLOAD_REJECTED"


class TooLargeError(UploadRejectedError):
    code = "UPLOAD_TOO_LARGE"


class TruncatedError(UploadRejectedError):
    code = "UPLOAD_TRUNCATED"


class ChecksumError(UploadRejectedError, ChecksumMismatch):
    code = ChecksumMismatch.code


class InvalidModelError(UploadRejectedError):
    """The bytes are not a model of the declared type (e.g. not ONNX)."""

    code = "INVALID_MODEL"


class UploadNotFoundError(ModelError):
    """No such upload session: never begun, already finished, or expired."""

    code = "UPLOAD_NOT_FOUND"


class FetchError(ModelError):
    """No peer could supply a file or a model's metadata."""

    code = "FETCH_FAILED"
