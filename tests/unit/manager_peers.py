"""An in-process RPC peer for ModelManager tests.

It calls the manager's method table through `Worker.call` (the same wrapper RPC
calls go through), passes request and reply values through msgpack as the RPC
codec does (so a value the wire cannot carry fails here too, and tuples come back
as lists), and raises handler errors the way the RPC client presents them: as a
mesh RemoteError carrying the handler's code.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack

from mesh.errors import RemoteError
from workers.errors import WorkerError


class LocalPeer:
    def __init__(self, worker, *, fail_reads_after: int | None = None, corrupt: bool = False):
        self.worker = worker
        self.calls: list[str] = []
        self.fail_reads_after = fail_reads_after
        self.corrupt = corrupt

    async def request(self, method: str, value: Any = None, *, timeout: float) -> Any:
        self.calls.append(method)
        if method == "read_chunk" and self.fail_reads_after is not None:
            if self.calls.count("read_chunk") > self.fail_reads_after:
                raise RemoteError("connection reset by test", code="CHANNEL_CLOSED")
        try:
            reply = await asyncio.wait_for(self.worker.call(method, _wire(value)), timeout)
        except WorkerError as e:
            raise RemoteError(e.message, code=e.code) from e
        reply = _wire(reply)
        if method == "read_chunk" and self.corrupt:
            data = bytearray(reply["data"])
            data[0] ^= 0xFF
            reply = {**reply, "data": bytes(data)}
        return reply


def _wire(value: Any) -> Any:
    return msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False)
