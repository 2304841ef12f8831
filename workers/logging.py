"""Structured JSON logs on stdlib logging: one JSON object per line.

    from workers.logging import get_logger
    log = get_logger("workers.inference")
    log.info("model loaded", extra={"model": "digits", "version": "1", "ms": 12.5})

Every line has `ts` (ISO 8601 UTC), `level`, `logger`, `msg`, plus the fields
passed in `extra` and those bound with `bind()`; exceptions add `exc`. Configure
once at the edge (`configure_logging`), never at import time.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any, Mapping

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=_fallback, separators=(",", ":"))


def _fallback(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return repr(value)


def configure_logging(level: str | int = "INFO", stream: IO[str] | None = None,
                      root: str = "") -> logging.Handler:
    """Send `root`'s records (default: all) as JSON lines to `stream` (stderr).

    Replaces handlers that an earlier call installed, so calling it twice does
    not print lines twice. Returns the handler (tests read from their stream).
    """
    logger = logging.getLogger(root)
    for h in list(logger.handlers):
        if getattr(h, "_mesh_json", False):
            logger.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._mesh_json = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level.upper() if isinstance(level, str) else level)
    return handler


class BoundLogger(logging.LoggerAdapter):
    """A logger that adds fixed fields (e.g. worker name) to every line."""

    def process(self, msg: str, kwargs: Any) -> tuple[str, Any]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs

    def bind(self, **fields: Any) -> "BoundLogger":
        return BoundLogger(self.logger, {**(self.extra or {}), **fields})


def get_logger(name: str, **fields: Any) -> BoundLogger:
    """A logger named `name` with `fields` on each of its lines."""
    return BoundLogger(logging.getLogger(name), dict(fields))


def bind(logger: logging.Logger | BoundLogger, fields: Mapping[str, Any]) -> BoundLogger:
    if isinstance(logger, BoundLogger):
        return logger.bind(**fields)
    return BoundLogger(logger, dict(fields))
