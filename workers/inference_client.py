"""InferenceClient: calling an inference worker's RPC methods from Python.

    client = InferenceClient(runtime.peer(conn))          # an RpcPeer to a worker
    outputs = await client.infer("mlp-mid", {"x": rows})  # {"y": ndarray, ...}
    reply = await client.request("stats")                 # any other method, as peer.request
    await client.close()

What it adds to `peer.request("infer", ...)`: concurrent `infer` calls for a model
the worker batches travel as one joined request (workers/coalesce.py, the gateway's
rule), so a process with many callers pays the per-message work of the RPC hop
(msgpack, framing, dispatch, validation) once per joined request instead of once per
call, on both ends. The worker's dynamic batcher would have run those rows together
anyway; each caller still gets exactly its own rows back, or its own error.

Which models join comes from the worker's `capacity` reply (batching on, its batch
size and per-request row limits), read in the background when the client has no
reply or one older than `capacity_ttl_s`. Until the first reply is in, calls go out
one by one; a lone call (nothing else in flight) never waits.

Errors are the RPC layer's, as for a direct call: `RpcRemoteError` with the worker's
code (BUSY, INVALID_INPUT, ...), `RpcTimeoutError` after `timeout`, `ChannelClosedError`.
A joined request that failed for one caller's input is sent again call by call, so
that error reaches that caller alone.

`max_rows` is the most rows in one joined request (0 or 1: no joining). The default
is half the worker's batch size: two joined requests then alternate on the worker
(one computes while the other's replies and next calls cross the connection)
instead of one full batch going back and forth in lock-step.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Mapping

import numpy as np

from mesh.errors import ClosedError, MeshError, TimeoutError_
from mesh.rpc import RpcPeer, RpcRemoteError, RpcTimeoutError
from mesh.rpc.errors import UNKNOWN_METHOD

from .coalesce import Coalescer, batch_limits
from .errors import Busy, ModelNotFound, ModelNotLoaded, Unavailable

# error codes that every call of a joined request would have got alone as well: the
# worker did not run it, or the model is not there
_SHARED_CODES = frozenset((Busy.code, Unavailable.code, ModelNotFound.code, ModelNotLoaded.code, UNKNOWN_METHOD))
HALF_BATCH = -1   # max_rows default: half of the worker's batch size for each model


def _shared(error: BaseException) -> bool:
    if isinstance(error, RpcRemoteError):
        return error.code in _SHARED_CODES
    return isinstance(error, (TimeoutError_, ClosedError))


def _timed_out(timeout: float) -> RpcTimeoutError:
    return RpcTimeoutError(f"no response to infer within {timeout}s")


class InferenceClient:
    """Calls one inference worker over `peer`, joining concurrent infer calls."""

    def __init__(self, peer: RpcPeer, *, timeout: float = 30.0, max_rows: int = HALF_BATCH,
                 capacity_ttl_s: float = 5.0):
        if timeout <= 0 or capacity_ttl_s <= 0:
            raise ValueError(f"timeout and capacity_ttl_s must be positive, got {timeout}, {capacity_ttl_s}")
        if max_rows < 0 and max_rows != HALF_BATCH:
            raise ValueError(f"max_rows must be 0 or more (or HALF_BATCH), got {max_rows}")
        self.peer = peer
        self.id = "peer"   # the coalescer's key: this client has one worker
        self.timeout = timeout
        self.capacity_ttl_s = capacity_ttl_s
        self._max_rows = max_rows
        self._limits: dict = {}
        self._stale_at = 0.0   # time.monotonic() after which calls ask for a new capacity reply
        self._refreshing: asyncio.Task | None = None
        # with HALF_BATCH the worker's reported limits are the only bound
        self._coalescer = Coalescer(1 << 30 if max_rows == HALF_BATCH else max_rows, self._limit_of, _shared,
                                    _timed_out)

    @property
    def joined_requests(self) -> int:
        """Joined requests answered (each carried several calls)."""
        return self._coalescer.joined_calls   # the gateway's names: its requests are HTTP requests

    @property
    def joined_calls(self) -> int:
        """Calls answered from inside a joined request."""
        return self._coalescer.joined_requests

    def _limit_of(self, _worker_id: str, model: str, version: Any) -> int:
        rows = self._limits.get((model, version), 0)
        return rows // 2 if self._max_rows == HALF_BATCH else rows

    async def call(self, method: str, value: Any, timeout: float) -> Any:
        """One request to the worker (the coalescer's view of it)."""
        return await self.peer.request(method, value, timeout=timeout)

    async def refresh(self) -> dict:
        """The worker's `capacity` reply, now; it also renews which models join."""
        reply = await self.peer.request("capacity", None, timeout=self.timeout)
        self._limits = batch_limits(reply)
        self._stale_at = time.monotonic() + self.capacity_ttl_s
        return reply

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except MeshError:
            # a worker without `capacity` or a connection going away: calls stay
            # unjoined, and the first call after the ttl asks again
            self._stale_at = time.monotonic() + self.capacity_ttl_s
        finally:
            self._refreshing = None

    async def request(self, method: str, value: Any = None, *, timeout: float | None = None) -> Any:
        """`peer.request(method, value)`, with `infer` calls joined where the worker batches."""
        timeout = self.timeout if timeout is None else timeout
        if method != "infer":
            return await self.peer.request(method, value, timeout=timeout)
        if self._refreshing is None and time.monotonic() >= self._stale_at:
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh_quietly())
        return await self._coalescer.call(self, value, timeout)

    async def infer(self, model: str, inputs: Mapping[str, np.ndarray], *, version: str | None = None,
                    timeout: float | None = None) -> dict[str, np.ndarray]:
        """The outputs of `model` (`version`, or the worker's choice) for `inputs`."""
        reply = await self.request("infer", {"model": model, "version": version, "inputs": dict(inputs)},
                                   timeout=timeout)
        return reply["outputs"]

    async def close(self) -> None:
        """Stop the capacity refresh and cancel joined requests still in flight."""
        if self._refreshing is not None:
            self._refreshing.cancel()
            await asyncio.gather(self._refreshing, return_exceptions=True)
        await self._coalescer.close()
