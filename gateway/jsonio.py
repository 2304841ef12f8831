"""JSON for the gateway's HTTP bodies: the one module that imports orjson.

orjson parses a 64-float inference body in about 3 us against 29 us for the
standard library, and writes a reply in under 1 us against 10 us; at the
gateway's request rates that is several percent of its CPU. It is strict where
the standard library is lenient: NaN and Infinity are not JSON (a body holding
them is refused as malformed; an output value that is NaN is written as null).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

JSON = "application/json"
_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY

JSONDecodeError = orjson.JSONDecodeError  # a ValueError


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON; raises JSONDecodeError (a ValueError) on bad input."""
    return orjson.loads(data)


def dumps(value: Any) -> bytes:
    """UTF-8 JSON bytes; raises TypeError for a value JSON cannot hold."""
    return orjson.dumps(value, option=_OPTIONS)


def json_response(value: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=dumps(value), status=status, headers=headers, content_type=JSON)
