"""The model catalogue: uploads streamed to the model manager, and model signatures.

The model manager is a service on topic `config.model_manager`; an upload is a
sequence of RPC calls to one manager (upload_begin, upload_chunk..., upload_commit, or
upload_abort), so its memory use is one chunk. The gateway hashes the stream (sha256)
and checks it against the client's X-Checksum-Sha256 before committing; the manager
is given the hash to check as well.
Signatures (inputs/outputs of a model) come from the `models` method of a worker
serving it and are cached for a short time.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, AsyncIterator

from .dispatch import Dispatcher
from .errors import (BadRequest, ChecksumMismatch, GatewayError, InvalidTensor, ModelNotFound, NoWorkers,
                     PayloadTooLarge, UnknownMethod, WorkerFailed)

MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SIGNATURE_TTL_S = 10.0


def check_model_id(model: str) -> str:
    if not MODEL_ID.match(model):
        raise BadRequest(f"model id {model!r} must be 1-128 of letters, digits, '.', '_' or '-'")
    return model


class Catalogue:
    def __init__(self, dispatcher: Dispatcher):
        self.dispatcher = dispatcher
        self.config = dispatcher.config
        self._signatures: dict[str, tuple[float, dict | None]] = {}

    async def _manager(self, deadline: float):
        service = self.config.model_manager
        pool = await self._managers(deadline)
        return self.dispatcher.balancer.pick(service, "least-connections", pool)

    async def _managers(self, deadline: float) -> list:
        try:
            return await self.dispatcher.candidates(self.config.model_manager, deadline)
        except ModelNotFound:
            # no manager is a service outage (503), not an unknown model (404)
            raise NoWorkers(f"no model manager found on topic {self.config.model_manager!r}") from None

    async def _call(self, method: str, value: Any, deadline: float) -> Any:
        await self._managers(deadline)
        reply, _ = await self.dispatcher.call(self.config.model_manager, method, value, deadline)
        return reply

    async def list(self, deadline: float) -> Any:
        return await self._call("list_models", {}, deadline)

    async def get(self, model: str, version: str | None, deadline: float) -> Any:
        return await self._call("get_model", {"model": model, "version": version}, deadline)

    async def delete(self, model: str, version: str | None, deadline: float) -> Any:
        self._signatures.pop(model, None)
        return await self._call("delete_model", {"model": model, "version": version}, deadline)

    async def upload(self, model: str, version: str | None, metadata: dict, chunks: AsyncIterator[bytes],
                     size: int | None, checksum: str | None, deadline: float) -> Any:
        """Stream `chunks` to one model manager; returns its record of the stored model."""
        manager = await self._manager(deadline)
        begun = await manager.call("upload_begin", {"model": model, "version": version, "size": size,
                                                    "sha256": checksum, "metadata": metadata}, self._left(deadline))
        upload = begun.get("upload") if isinstance(begun, dict) else None
        if upload is None:
            raise WorkerFailed(f"model manager gave no upload id: {begun!r}")
        try:
            received, digest = await self._send_chunks(manager, upload, chunks, deadline)
            if checksum is not None and checksum.lower() != digest:
                raise ChecksumMismatch(f"body sha256 is {digest}, X-Checksum-Sha256 says {checksum.lower()}")
            if received == 0:
                raise BadRequest("model body is empty")
        except BaseException:
            await self._abort(manager, upload, deadline)
            raise
        return await manager.call("upload_commit", {"upload": upload, "sha256": digest, "size": received},
                                  self._left(deadline))

    def _left(self, deadline: float) -> float:
        return deadline - self.dispatcher.now()

    async def _send_chunks(self, manager, upload: Any, chunks: AsyncIterator[bytes], deadline: float) -> tuple[int, str]:
        """(bytes sent, their sha256) after sending `chunks` regrouped to upload_chunk_bytes."""
        sha, offset, pending = hashlib.sha256(), 0, bytearray()
        limit, step = self.config.max_model_bytes, self.config.upload_chunk_bytes

        async def flush() -> None:
            await manager.call("upload_chunk", {"upload": upload, "offset": offset - len(pending),
                                                "data": bytes(pending)}, self._left(deadline))
            pending.clear()

        async for chunk in chunks:
            offset += len(chunk)
            if offset > limit:
                raise PayloadTooLarge(f"model is larger than the limit of {limit} bytes")
            sha.update(chunk)
            pending += chunk
            if len(pending) >= step:
                await flush()
        if pending:
            await flush()
        return offset, sha.hexdigest()

    async def _abort(self, manager, upload: Any, deadline: float) -> None:
        try:
            await manager.call("upload_abort", {"upload": upload}, max(deadline - self.dispatcher.now(), 0.5))
        except GatewayError:
            pass  # the upload failed already; the manager expires unfinished uploads on its own

    async def signature(self, model: str, deadline: float) -> dict | None:
        """{"id", "version", "inputs": [...], "outputs": [...]} of `model`, or None if not described."""
        now = self.dispatcher.now()
        cached = self._signatures.get(model)
        if cached is not None and now - cached[0] < SIGNATURE_TTL_S:
            return cached[1]
        try:
            reply, _ = await self.dispatcher.call(model, "models", {}, deadline)
        except UnknownMethod:
            reply = None   # the worker does not describe its models: it checks inputs itself
        entries = reply.get("models") if isinstance(reply, dict) else reply
        found = None
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and entry.get("id") == model:
                found = entry
        self._signatures[model] = (now, found)
        return found

    async def require_signature(self, model: str, deadline: float) -> dict:
        sig = await self.signature(model, deadline)
        if sig is None:
            raise ModelNotFound(f"workers of {model!r} do not describe it", model=model)
        return sig


__all__ = ["Catalogue", "check_model_id", "InvalidTensor"]
