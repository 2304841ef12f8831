"""The one error table: every error class has a status; worker codes map as documented."""

from __future__ import annotations

import pytest

from gateway import errors


def all_errors(cls=errors.GatewayError):
    yield cls
    for sub in cls.__subclasses__():
        yield from all_errors(sub)


@pytest.mark.parametrize("code,status,kind", [
    ("BUSY", 503, "worker_busy"), ("INVALID_INPUT", 400, "invalid_input"), ("MODEL_NOT_FOUND", 404, "model_not_found"),
    ("TIMEOUT_EXCEEDED", 504, "deadline_exceeded"), ("CHANNEL_CLOSED", 503, "worker_unavailable"),
    ("busy", 503, "worker_busy"), ("SOMETHING_NEW", 502, "worker_failed"), (None, 502, "worker_failed"),
    ("UNAVAILABLE", 503, "worker_unavailable"), ("MODEL_NOT_LOADED", 503, "model_not_ready"),
    ("INFERENCE_FAILED", 502, "worker_failed"), ("MODEL_LOAD_FAILED", 502, "worker_failed"),
    # the model manager's codes (workers/models/errors.py)
    ("UPLOAD_TOO_LARGE", 413, "payload_too_large"), ("UPLOAD_TRUNCATED", 400, "upload_truncated"),
    ("INVALID_MODEL", 422, "invalid_model"), ("UPLOAD_NOT_FOUND", 503, "upload_lost"),
    ("CHECKSUM_MISMATCH", 400, "checksum_mismatch"), ("CONFLICT", 409, "conflict"),
    ("FETCH_FAILED", 502, "worker_failed"),
])
def test_worker_codes(code, status, kind):
    e = errors.from_worker_code(code, "m")
    assert (errors.http_status(e), e.kind) == (status, kind)


def test_every_error_has_a_4xx_or_5xx_and_a_unique_kind():
    classes = list(all_errors())
    assert all(400 <= errors.http_status(c("x") if c is not errors.RateLimited else c("x", 1.0)) < 600
               for c in classes)
    assert len({c.kind for c in classes}) == len(classes)


def test_retryable_are_the_not_started_errors():
    assert errors.RETRYABLE == (errors.WorkerUnavailable, errors.WorkerBusy)
