"""Joined requests: concurrent `infer` calls bound for one worker travel as one request.

The client side of the inference worker's `infer` method, shared by the gateway's
dispatcher and `workers.inference_client.InferenceClient`. Calls for the same model
sent to the same worker in the same event-loop iteration are joined into one `infer`
request whose inputs are theirs concatenated along axis 0; the worker's outputs are
sliced back, in order, to each caller. The worker's dynamic batcher runs rows that
arrive together in one run anyway; one message instead of many saves the
per-message work on both sides of the RPC hop (msgpack, secret-stream framing,
dispatch, validation, stats).

Invariants:
- Only models the worker itself batches: its `capacity` reply lists the model with
  `batching: true` (the worker's word that rows are independent; `batch_limits`),
  and a call joins a group only while the group stays within the worker's
  `max_batch_size` and `max_request_rows` and the caller's `max_rows`.
- Only plain calls: a map of exactly model, version and inputs, every input an
  ndarray with the same leading dimension; the group's inputs agree in names,
  dtypes and trailing shapes.
- A lone call is never held back: with no joinable call to that worker in flight
  it is sent at once, so one client sees no added latency. The calls that follow it
  in the same iteration join one request to that worker.
- A caller that balances calls over several workers asks `open_worker` first: a call
  that fits a joined request still open in this iteration goes to that request's
  worker, so that calls arriving together are not spread into several smaller
  joined requests, each paying the per-message work (the balancer then spreads
  joined requests, iteration by iteration).
- Each caller ends with what it would have got alone. Errors that `shared` says
  every caller would have got as well (the worker did not run the request: BUSY,
  unavailable; the model is missing; time is up) go to every caller (their own
  retry moves them elsewhere, as for a single call); any other error of the joined
  request (one caller's bad tensor, a failed run) or outputs that do not split by
  rows make each call go again alone, so one bad request fails alone.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from mesh.eventloop import at_iteration_end

_PLAIN_KEYS = frozenset(("model", "version", "inputs"))

log = logging.getLogger("workers.coalesce")


class Target(Protocol):
    """A worker to call: the gateway's WorkerHandle, or InferenceClient's view of its peer."""

    id: str

    async def call(self, method: str, value: Any, timeout: float) -> Any: ...

Layout = tuple[str, Any, tuple]   # (model, version, ((input name, dtype, trailing shape), ...))


def layout_of(value: Any) -> tuple[Layout, int] | None:
    """(what must match for calls to join, rows) of an infer value; None if it cannot join any."""
    if type(value) is not dict or not value.keys() <= _PLAIN_KEYS:
        return None
    model, inputs = value.get("model"), value.get("inputs")
    if type(model) is not str or type(inputs) is not dict or not inputs:
        return None
    rows = -1
    parts = []
    for name in (inputs if len(inputs) == 1 else sorted(inputs)):
        arr = inputs[name]
        if type(arr) is not np.ndarray or arr.ndim == 0 or (rows >= 0 and arr.shape[0] != rows):
            return None
        rows = arr.shape[0]
        parts.append((name, arr.dtype, arr.shape[1:]))
    if rows < 1:
        return None
    return (model, value.get("version"), tuple(parts)), rows


@dataclass(eq=False)
class _Call:
    value: dict
    rows: int
    future: asyncio.Future


@dataclass(eq=False)
class _Group:
    worker: Target
    layout: Layout
    limit: int
    deadline: float = 0.0
    rows: int = 0
    calls: list[_Call] = field(default_factory=list)


class Coalescer:
    """Joins concurrent infer calls per worker. `limit_of(worker_id, model, version)` is the
    most rows that worker batches for that model (0: it does not batch it); `shared(error)`
    says whether an error of a joined request is one each of its calls would have got alone.
    `max_rows` caps the rows of a joined request (0 or 1: no joining). `expired(timeout)`, if
    given, is the error a joined call still waiting at its own deadline gets (a call sent
    alone gets the target's own); without it the caller enforces its deadline itself."""

    def __init__(self, max_rows: int, limit_of: Callable[[str, str, Any], int],
                 shared: Callable[[BaseException], bool],
                 expired: Callable[[float], BaseException] | None = None):
        self.max_rows = max_rows
        self._limit_of = limit_of
        self._shared = shared
        self._expired = expired
        self._open: dict[tuple[str, Layout], _Group] = {}
        self._latest: dict[Layout, _Group] = {}   # the group of each layout opened last, while open
        self._inflight: dict[str, int] = {}    # worker id -> coalescible calls waiting on it
        self._tasks: set[asyncio.Task] = set()
        self.joined_requests = 0   # requests that went out inside a joined request
        self.joined_calls = 0      # joined requests sent
        self.resent = 0            # requests sent again alone after their joined request failed

    async def close(self) -> None:
        """Cancel joined requests still in flight (the caller stops); their callers see a cancel."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def plan(self, value: Any) -> tuple[Layout, int] | None:
        """(layout, rows) of an infer value that may join others; None if it goes alone."""
        return layout_of(value) if self.max_rows > 1 else None

    def open_worker(self, plan: tuple[Layout, int] | None, pool: Sequence[Target]) -> Target | None:
        """The worker in `pool` of a joined request still open in this iteration that a call
        of `plan` fits in, if there is one (see the module's invariants)."""
        if plan is None or not self._latest:
            return None
        layout, rows = plan
        group = self._latest.get(layout)
        if group is None or group.rows + rows > group.limit:
            return None
        wanted = group.worker.id
        return next((w for w in pool if w.id == wanted), None)

    async def call(self, worker: Target, value: Any, timeout: float, plan: Any = ...) -> Any:
        """What `worker.call("infer", value, timeout)` returns, possibly as part of a joined
        request. `plan` is `self.plan(value)` when the caller has it already."""
        found = self.plan(value) if plan is ... else plan
        if found is None:
            return await worker.call("infer", value, timeout)
        layout, rows = found
        limit = min(self.max_rows, self._limit_of(worker.id, layout[0], layout[1]))
        inflight = self._inflight.get(worker.id, 0)
        self._inflight[worker.id] = inflight + 1
        try:
            if rows >= limit:
                return await worker.call("infer", value, timeout)
            if inflight == 0:
                # sent at once; an empty group stays open for the calls that follow it in this
                # iteration, so that they travel together to this worker (open_worker)
                self._group(worker, layout, limit, rows)
                return await worker.call("infer", value, timeout)
            return await self._join(worker, layout, limit, value, rows, timeout)
        finally:
            left = self._inflight[worker.id] - 1
            if left:
                self._inflight[worker.id] = left
            else:
                del self._inflight[worker.id]

    async def _join(self, worker: Target, layout: Layout, limit: int, value: dict, rows: int,
                    timeout: float) -> Any:
        loop = asyncio.get_running_loop()
        group = self._group(worker, layout, limit, rows)
        call = _Call(value, rows, loop.create_future())
        group.calls.append(call)
        group.rows += rows
        deadline = loop.time() + timeout
        group.deadline = max(group.deadline, deadline)
        if self._expired is None:
            return await call.future
        timer = loop.call_at(deadline, _expire, call.future, self._expired, timeout)
        try:
            return await call.future
        finally:
            timer.cancel()

    def _group(self, worker: Target, layout: Layout, limit: int, rows: int) -> _Group:
        """The group open in this iteration for `worker` and `layout` with room for `rows`;
        a new one if there is none, or it is full (it leaves as it is at the iteration's end)."""
        key = (worker.id, layout)
        group = self._open.get(key)
        if group is not None and group.rows + rows > group.limit:
            self._forget(key, group)
            group = None
        if group is None:
            group = self._open[key] = self._latest[layout] = _Group(worker, layout, limit)
            at_iteration_end(lambda: self._close(key, group))
        return group

    def _forget(self, key: tuple[str, Layout], group: _Group) -> None:
        if self._open.get(key) is group:
            del self._open[key]
        if self._latest.get(key[1]) is group:
            del self._latest[key[1]]

    def _close(self, key: tuple[str, Layout], group: _Group) -> None:
        self._forget(key, group)
        if not group.calls:   # opened behind a call sent alone, and nobody followed it
            return
        task = asyncio.get_running_loop().create_task(self._send(group))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, group: _Group) -> None:
        calls = [c for c in group.calls if not c.future.done()]   # callers gone (their deadline): dropped
        try:
            if len(calls) == 1:
                await self._alone(group, calls[0])
            elif calls:
                await self._joined(group, calls)
        except asyncio.CancelledError:   # close(): nobody is left to answer them
            for c in calls:
                if not c.future.done():
                    c.future.cancel()
            raise
        except Exception as e:  # a bug here: the callers hear of it instead of waiting for their deadline
            log.exception("joined infer request to worker %s failed", group.worker.id[:16])
            for c in calls:
                _settle(c.future, error=e)

    async def _joined(self, group: _Group, calls: list[_Call]) -> None:
        model, version, parts = group.layout
        inputs = {name: np.concatenate([c.value["inputs"][name] for c in calls]) for name, _, _ in parts}
        value = {"model": model, "version": version, "inputs": inputs}
        remaining = group.deadline - asyncio.get_running_loop().time()
        try:
            reply = await group.worker.call("infer", value, remaining)
        except Exception as e:  # noqa: BLE001 - sorted below
            if self._shared(e):
                for c in calls:
                    _settle(c.future, error=e)
                return
            reply = None   # someone's input or the run: each call again, alone
        replies = _split(reply, [c.rows for c in calls]) if reply is not None else None
        if replies is None:
            self.resent += len(calls)
            await asyncio.gather(*(self._alone(group, c) for c in calls))
            return
        self.joined_calls += 1
        self.joined_requests += len(calls)
        for c, r in zip(calls, replies):
            _settle(c.future, result=r)

    async def _alone(self, group: _Group, call: _Call) -> None:
        try:
            result = await group.worker.call("infer", call.value, group.deadline - asyncio.get_running_loop().time())
        except Exception as e:  # noqa: BLE001 - handed to its caller as a direct call would have raised it
            _settle(call.future, error=e)
        else:
            _settle(call.future, result=result)


def _split(reply: Any, rows: list[int]) -> list[dict] | None:
    """The joined reply sliced into one reply per call; None when its outputs do not split by rows."""
    if not isinstance(reply, dict) or not isinstance(reply.get("outputs"), dict):
        return None
    outputs = reply["outputs"]
    total = sum(rows)
    if not all(isinstance(a, np.ndarray) and a.ndim >= 1 and a.shape[0] == total for a in outputs.values()):
        return None
    out, start = [], 0
    for n in rows:
        out.append({**reply, "outputs": {name: a[start:start + n] for name, a in outputs.items()}})
        start += n
    return out


def _expire(future: asyncio.Future, expired: Callable[[float], BaseException], timeout: float) -> None:
    if not future.done():
        future.set_exception(expired(timeout))


def _settle(future: asyncio.Future, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():   # its caller gave up (deadline or cancel)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def batch_limits(capacity: Any) -> dict:
    """{(model, version): most rows per joined request} from an inference worker's
    `capacity` reply, for the models it batches, each limit within the most rows the
    worker takes in one request; (model, None) holds the smallest limit of a model
    all of whose loaded versions batch (a call that names no version may reach any)."""
    if not isinstance(capacity, dict):
        return {}
    models, max_request_rows = capacity.get("models"), capacity.get("max_request_rows")
    if not isinstance(models, list):
        return {}
    cap = max_request_rows if type(max_request_rows) is int and max_request_rows > 0 else None
    limits: dict = {}
    batched_only: dict[str, bool] = {}
    for m in models:
        if not isinstance(m, dict) or not isinstance(m.get("model"), str):
            continue
        model, version, rows = m["model"], m.get("version"), m.get("max_batch_size")
        if cap is not None and type(rows) is int:
            rows = min(rows, cap)
        batches = m.get("batching") is True and type(rows) is int and rows > 1 and isinstance(version, str)
        batched_only[model] = batched_only.get(model, True) and batches
        if batches:
            limits[(model, version)] = rows
            limits[(model, None)] = min(rows, limits.get((model, None), rows))
    for model, ok in batched_only.items():
        if not ok:
            limits.pop((model, None), None)
    return limits
