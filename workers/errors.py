"""The workers package's error tree.

Every error a worker handler raises on purpose is a `WorkerError` with a stable
string `code`. The RPC layer sends an exception that has a `code` attribute as a
REQUEST_ERROR with that cause code, so the caller sees `RpcError(code=...)`; the
gateway maps codes to HTTP statuses in its own table. `wire_error` is the one
place that turns any exception into (code, message, details) for logs, stats and
replies, so unexpected exceptions are never passed off as a known code.

Codes (stable, part of the wire contract):

    BUSY               capacity and queue full; `retry_after_ms` says when to retry
    UNAVAILABLE        the worker is draining or stopped; try another worker
    INVALID_INPUT      a request value that does not fit (names, dtypes, shapes)
    MODEL_NOT_FOUND    no such model id/version in the model source
    MODEL_NOT_LOADED   the model is known but not loaded and lazy loading is off
    MODEL_TOO_LARGE    the model alone exceeds the session cache's memory bound
    CHECKSUM_MISMATCH  a model file's sha256 differs from the pinned one
    MODEL_LOAD_FAILED  onnxruntime refused the file
    INFERENCE_FAILED   onnxruntime failed while running a valid request
    NOT_FOUND          a record (CRUD workers) does not exist
    CONFLICT           a record (CRUD workers) already exists / version clash
    STORAGE_ERROR      a worker's own storage failed
    CONFIG_INVALID     configuration that cannot be used (raised at start-up)
    INTERNAL           an unexpected exception (a bug); the message is generic
"""

from __future__ import annotations

from typing import Any


class WorkerError(Exception):
    """Base of every error raised on purpose by a worker.

    `code` is the wire cause code; `details` is a small JSON/msgpack-able dict
    that callers may use (e.g. the expected dtype), never needed to act.
    """

    code = "WORKER_ERROR"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.details = dict(details or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class Busy(WorkerError):
    """Capacity and queue are full: retry after `retry_after_ms` (or elsewhere)."""

    code = "BUSY"

    def __init__(self, message: str, *, retry_after_ms: int, details: dict[str, Any] | None = None):
        retry_after_ms = max(1, int(retry_after_ms))
        super().__init__(f"{message}; retry after {retry_after_ms} ms",
                         details={**(details or {}), "retry_after_ms": retry_after_ms})
        self.retry_after_ms = retry_after_ms


class Unavailable(WorkerError):
    """The worker is draining or stopped and takes no new requests."""

    code = "UNAVAILABLE"


class InvalidInput(WorkerError):
    """A request value that does not match what the method or model expects."""

    code = "INVALID_INPUT"


class ModelNotFound(WorkerError):
    code = "MODEL_NOT_FOUND"


class ModelNotLoaded(WorkerError):
    code = "MODEL_NOT_LOADED"


class ModelTooLarge(WorkerError):
    code = "MODEL_TOO_LARGE"


class ChecksumMismatch(WorkerError):
    code = "CHECKSUM_MISMATCH"


class ModelLoadFailed(WorkerError):
    code = "MODEL_LOAD_FAILED"


class InferenceFailed(WorkerError):
    code = "INFERENCE_FAILED"


class NotFound(WorkerError):
    code = "NOT_FOUND"


class Conflict(WorkerError):
    code = "CONFLICT"


class StorageError(WorkerError):
    code = "STORAGE_ERROR"


class ConfigInvalid(WorkerError, ValueError):
    code = "CONFIG_INVALID"


INTERNAL = "INTERNAL"

CODES: frozenset[str] = frozenset(
    cls.code for cls in (Busy, Unavailable, InvalidInput, ModelNotFound, ModelNotLoaded,
                         ModelTooLarge, ChecksumMismatch, ModelLoadFailed, InferenceFailed,
                         NotFound, Conflict, StorageError, ConfigInvalid)
) | {INTERNAL}


class InternalError(WorkerError):
    """What callers see for an unexpected exception: the code, not the traceback."""

    code = INTERNAL


def wire_error(exc: BaseException) -> tuple[str, str, dict[str, Any]]:
    """(code, message, details) for an exception leaving a handler.

    A `WorkerError` keeps its code and message. Anything else is a bug in the
    worker: it becomes INTERNAL with a generic message (the traceback goes to
    the log, not to the caller).
    """
    if isinstance(exc, WorkerError):
        return exc.code, exc.message, exc.details
    return INTERNAL, f"internal error ({type(exc).__name__})", {}


def as_worker_error(exc: BaseException) -> WorkerError:
    """`exc` itself if it is a WorkerError, else an InternalError wrapping it."""
    if isinstance(exc, WorkerError):
        return exc
    code, message, details = wire_error(exc)
    err = InternalError(message, details=details)
    err.__cause__ = exc
    return err
