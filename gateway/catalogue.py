"""The model catalogue: uploads streamed to the model manager, and model signatures.

The model manager is a service on topic `config.model_manager`; an upload is a
sequence of RPC calls to one manager (upload_begin, upload_chunk..., upload_commit, or
upload_abort), so its memory use is one chunk. The client declares the size
(Content-Length) and sha256 (X-Checksum-Sha256) up front, since the manager's
upload_begin needs both and its commit verifies them; the gateway hashes the
stream as well, so a mismatch aborts the upload rather than reaching the commit.
Manager methods used: upload_begin/chunk/commit/abort, list, get, versions, delete
(workers/models/manager.py); its error codes map to statuses in errors.py.
Signatures (inputs/outputs of a model) come from the `models` method of a worker
serving it (entries {"model", "version", "inputs": [{"name", "dtype", "shape"}],
"outputs", ...}, dynamic dims as a name or None) and are cached for a short time.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, AsyncIterator

from .dispatch import Dispatcher
from .errors import (BadRequest, ChecksumMismatch, GatewayError, InvalidTensor, ModelNotFound, NoWorkers,
                     PayloadTooLarge, UnknownMethod, UploadTruncated, WorkerFailed)

MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SIGNATURE_TTL_S = 10.0


def check_model_id(model: str, what: str = "model id") -> str:
    if not MODEL_ID.match(model):
        raise BadRequest(f"{what} {model!r} must be 1-128 of letters, digits, '.', '_' or '-'")
    return model


@dataclass(frozen=True)
class UploadRequest:
    """What a client declares about a model upload; the manager verifies size and sha256."""

    model: str
    version: str
    sha256: str            # lower-case hex
    size: int
    type: str = "onnx"
    tags: tuple[str, ...] = ()

    def begin_value(self) -> dict:
        return {"id": self.model, "version": self.version, "sha256": self.sha256, "size": self.size,
                "type": self.type, "tags": list(self.tags)}


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

    async def list(self, model_type: str | None, tag: str | None, deadline: float) -> Any:
        """The manager's `list` reply {"models": [entry]}, filtered by type and tag."""
        query = {k: v for k, v in (("type", model_type), ("tag", tag)) if v is not None}
        return await self._call("list", query, deadline)

    async def get(self, model: str, version: str | None, deadline: float) -> Any:
        """The manager's entry of `model` (its newest version when `version` is None)."""
        query = {"id": model} if version is None else {"id": model, "version": version}
        return await self._call("get", query, deadline)

    async def delete(self, model: str, version: str | None, deadline: float) -> dict:
        """{"deleted": [entry, ...]}: one version, or every version when `version` is None."""
        self._signatures.pop(model, None)
        if version is not None:
            reply = await self._call("delete", {"id": model, "version": version}, deadline)
            return {"deleted": [reply.get("deleted") if isinstance(reply, dict) else reply]}
        listed = await self._call("versions", {"id": model}, deadline)
        versions = [e.get("version") for e in listed.get("versions", [])] if isinstance(listed, dict) else []
        if not versions:
            raise ModelNotFound(f"model {model!r} is not in the catalogue", model=model)
        deleted = []
        for v in versions:
            reply = await self._call("delete", {"id": model, "version": v}, deadline)
            deleted.append(reply.get("deleted") if isinstance(reply, dict) else reply)
        return {"deleted": deleted}

    async def upload(self, declared: UploadRequest, chunks: AsyncIterator[bytes], deadline: float) -> tuple[Any, bool]:
        """(the manager's entry, created) after streaming `chunks` to one model manager.

        created is False when the manager already held these bytes under this id and
        version (nothing is sent). The manager checks the declared size and sha256 at
        commit; the gateway hashes the stream too so that a mismatch aborts the
        upload instead of committing it.
        """
        manager = await self._manager(deadline)
        begun = await manager.call("upload_begin", declared.begin_value(), self._left(deadline))
        if isinstance(begun, dict) and isinstance(begun.get("model"), dict):
            return begun["model"], False
        upload = begun.get("upload") if isinstance(begun, dict) else None
        offset = begun.get("offset", 0) if isinstance(begun, dict) else None
        if upload is None or not isinstance(offset, int) or not 0 <= offset <= declared.size:
            raise WorkerFailed(f"model manager gave no usable upload session: {begun!r}")
        step = min(self.config.upload_chunk_bytes, int(begun.get("chunk_size") or self.config.upload_chunk_bytes))
        try:
            received, digest = await self._send_chunks(manager, upload, chunks, offset, step, declared.size,
                                                       deadline)
            if received != declared.size:
                raise UploadTruncated(f"body has {received} bytes, Content-Length says {declared.size}")
            if digest != declared.sha256:
                raise ChecksumMismatch(f"body sha256 is {digest}, X-Checksum-Sha256 says {declared.sha256}")
        except BaseException:
            await self._abort(manager, upload, deadline)
            raise
        return await manager.call("upload_commit", {"upload": upload}, self._left(deadline)), True

    def _left(self, deadline: float) -> float:
        return deadline - self.dispatcher.now()

    async def _send_chunks(self, manager, upload: Any, chunks: AsyncIterator[bytes], start: int, step: int,
                           size: int, deadline: float) -> tuple[int, str]:
        """(bytes received, their sha256) after sending `chunks` from byte `start` on (the manager
        has the bytes before it, e.g. all of them when it already stores that sha256), regrouped
        to `step` bytes."""
        sha, received, sent, pending = hashlib.sha256(), 0, start, bytearray()

        async def send(data: bytes) -> None:
            nonlocal sent
            await manager.call("upload_chunk", {"upload": upload, "offset": sent, "data": data},
                               self._left(deadline))
            sent += len(data)

        async for chunk in chunks:
            received += len(chunk)
            if received > size:
                raise PayloadTooLarge(f"body is longer than its Content-Length of {size} bytes")
            sha.update(chunk)
            skip = max(0, min(len(chunk), start - (received - len(chunk))))
            pending += chunk[skip:]
            while len(pending) >= step:
                await send(bytes(pending[:step]))
                del pending[:step]
        if pending:
            await send(bytes(pending))
        return received, sha.hexdigest()

    async def _abort(self, manager, upload: Any, deadline: float) -> None:
        try:
            await manager.call("upload_abort", {"upload": upload}, max(deadline - self.dispatcher.now(), 0.5))
        except GatewayError:
            pass  # the upload failed already; the manager expires unfinished uploads on its own

    async def signature(self, model: str, deadline: float) -> dict | None:
        """{"model", "version", "inputs": [...], "outputs": [...]} of `model` from a worker's `models`
        reply, or None if the worker does not describe it (then the worker checks inputs itself)."""
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
            if isinstance(entry, dict) and entry_model(entry) == model:
                found = entry
        self._signatures[model] = (now, found)
        return found

    async def require_signature(self, model: str, deadline: float) -> dict:
        sig = await self.signature(model, deadline)
        if sig is None:
            raise ModelNotFound(f"workers of {model!r} do not describe it", model=model)
        return sig


def entry_model(entry: dict) -> object:
    """The model id of an entry of a worker's `models` reply ("model"; "id" in manager entries)."""
    return entry.get("model", entry.get("id"))


__all__ = ["Catalogue", "UploadRequest", "check_model_id", "entry_model", "InvalidTensor"]
