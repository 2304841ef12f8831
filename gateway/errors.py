"""The gateway's error tree and the one table that turns errors into HTTP statuses.

Every failure a route can meet is a `GatewayError` subclass with a stable `kind`
(used in JSON bodies and in the errors-by-kind metric). `STATUS` is the only place
that says which HTTP status an error becomes; `from_worker_code` is the only place
that says which gateway error a worker's RPC error code becomes.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    kind = "internal"

    def __init__(self, message: str, **details: object):
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(GatewayError):
    kind = "bad_request"


class MalformedJSON(BadRequest):
    kind = "malformed_json"


class InvalidTensor(BadRequest):
    """A tensor whose name, shape, dtype or data is wrong (ours or the worker's check)."""

    kind = "invalid_input"


class ChecksumMismatch(BadRequest):
    kind = "checksum_mismatch"


class UnsupportedMediaType(GatewayError):
    kind = "unsupported_media_type"


class LengthRequired(GatewayError):
    """A model upload without Content-Length: the model manager needs the size up front."""

    kind = "length_required"


class InvalidModel(GatewayError):
    """The uploaded bytes are not a model of the declared type (the manager's INVALID_MODEL)."""

    kind = "invalid_model"


class Conflict(GatewayError):
    """(model id, version) already names other content."""

    kind = "conflict"


class Unauthorized(GatewayError):
    kind = "unauthorized"


class Forbidden(GatewayError):
    kind = "forbidden"


class NotFound(GatewayError):
    kind = "not_found"


class ModelNotFound(NotFound):
    kind = "model_not_found"


class MethodNotAllowed(GatewayError):
    kind = "method_not_allowed"


class PayloadTooLarge(GatewayError):
    kind = "payload_too_large"


class UploadTruncated(BadRequest):
    """The body ended before the declared Content-Length (the manager's UPLOAD_TRUNCATED)."""

    kind = "upload_truncated"


class RateLimited(GatewayError):
    kind = "rate_limited"

    def __init__(self, message: str, retry_after: float):
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after


class NoWorkers(GatewayError):
    """No healthy worker serves the model (none found, or all quarantined)."""

    kind = "no_workers"


class ModelNotReady(GatewayError):
    kind = "model_not_ready"


class UploadLost(GatewayError):
    """The manager no longer knows the upload session (expired, or the manager restarted)."""

    kind = "upload_lost"


class WorkerUnavailable(GatewayError):
    """The worker could not be reached: the request never started there (retryable)."""

    kind = "worker_unavailable"


class WorkerBusy(GatewayError):
    """The worker refused the request because it is full (retryable elsewhere)."""

    kind = "worker_busy"


class WorkerFailed(GatewayError):
    """The worker started the request and failed it (not retried: it may have run)."""

    kind = "worker_failed"


class UnknownMethod(WorkerFailed):
    """The worker has no such RPC method (an older or different kind of worker): not a health failure."""

    kind = "unknown_method"


class DeadlineExceeded(GatewayError):
    kind = "deadline_exceeded"


# The one table: error class -> HTTP status. Lookups walk the MRO, so a subclass
# without its own row gets its parent's status.
STATUS: dict[type[GatewayError], int] = {
    GatewayError: 500,
    BadRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    MethodNotAllowed: 405,
    Conflict: 409,
    LengthRequired: 411,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidModel: 422,
    RateLimited: 429,
    WorkerFailed: 502,
    NoWorkers: 503,
    ModelNotReady: 503,
    UploadLost: 503,
    WorkerUnavailable: 503,
    WorkerBusy: 503,
    DeadlineExceeded: 504,
}

# Errors on which a request is moved to another worker: the worker did not start it.
RETRYABLE = (WorkerUnavailable, WorkerBusy)


def http_status(error: GatewayError) -> int:
    """The HTTP status of `error` from `STATUS`."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


# Worker and model-manager RPC error codes (cause codes of REQUEST_ERROR; see
# workers/errors.py and workers/models/errors.py) -> gateway errors. Codes not
# listed (MODEL_LOAD_FAILED, INFERENCE_FAILED, MODEL_TOO_LARGE, FETCH_FAILED,
# STORAGE_ERROR, INTERNAL, ...) are the worker's own failure: 502.
_WORKER_CODES: dict[str, type[GatewayError]] = {
    "BUSY": WorkerBusy,
    "UNAVAILABLE": WorkerUnavailable,          # draining or stopped: it did not start the call
    "INVALID_INPUT": InvalidTensor,
    "MODEL_NOT_FOUND": ModelNotFound,
    "MODEL_NOT_LOADED": ModelNotReady,         # known, not loaded, lazy loading off
    "NOT_FOUND": NotFound,
    "CONFLICT": Conflict,
    "CHECKSUM_MISMATCH": ChecksumMismatch,
    "UPLOAD_TOO_LARGE": PayloadTooLarge,
    "UPLOAD_TRUNCATED": UploadTruncated,
    "INVALID_MODEL": InvalidModel,
    "UPLOAD_NOT_FOUND": UploadLost,
    "UNKNOWN_METHOD": UnknownMethod,
    # generated by the RPC layer itself (RPC.md): the deadline passed, or the channel
    # went away, so the reply will never come
    "TIMEOUT_EXCEEDED": DeadlineExceeded,
    "CHANNEL_CLOSED": WorkerUnavailable,
    "CHANNEL_DESTROYED": WorkerUnavailable,
}


def from_worker_code(code: object, message: str) -> GatewayError:
    """The gateway error for a worker's RPC error `code` (unknown codes: WorkerFailed)."""
    cls = _WORKER_CODES.get(str(code).upper() if code is not None else "", WorkerFailed)
    return cls(message, worker_code=code)


def error_body(error: GatewayError) -> dict:
    """The JSON body of an error response: {"error": {"kind", "message", ...}}."""
    body: dict = {"kind": error.kind, "message": error.message}
    body.update({k: v for k, v in error.details.items() if k != "worker_code" or v is not None})
    return {"error": body}
