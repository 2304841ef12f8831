"""Serving the files of loaded models to peers (`get`, `read_chunk`).

Workers fetch models from any manager or worker that has the file
(workers.models.source.NetworkModelSource): a peer answers `get` with the
model's entry and `read_chunk` with bytes of the file named by its sha256. The
fetcher verifies the whole file's sha256, so a file changed on disk since it
was loaded only fails that fetch. Only files of currently loaded models are
served; anything else is MODEL_NOT_FOUND.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any, Mapping

from ..errors import InvalidInput

MAX_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")


def chunk_request(value: Any) -> tuple[str, int, int]:
    """(sha256, offset, length) of a read_chunk request; InvalidInput if malformed."""
    if not isinstance(value, Mapping):
        raise InvalidInput("read_chunk needs a map with sha256, offset and length")
    sha256 = value.get("sha256")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise InvalidInput("'sha256' must be 64 lowercase hex characters", details={"expected": "sha256 hex"})
    out = []
    for key in ("offset", "length"):
        v = value.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise InvalidInput(f"'{key}' must be a non-negative integer", details={"expected": "uint"})
        out.append(v)
    offset, length = out
    if length > MAX_CHUNK:
        raise InvalidInput(f"length {length} exceeds {MAX_CHUNK}", details={"expected": MAX_CHUNK})
    return sha256, offset, length


async def read_chunk(path: Path, size: int, offset: int, length: int) -> dict[str, Any]:
    """{"data": bytes, "size": file size}; InvalidInput for an offset past the end."""
    if offset > size:
        raise InvalidInput(f"offset {offset} is past the end of the file ({size} bytes)",
                           details={"expected": size})
    data = await asyncio.to_thread(_read, path, offset, min(length, size - offset))
    return {"data": data, "size": size}


def _read(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)
