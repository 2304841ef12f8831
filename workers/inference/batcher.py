"""Admission, capacity and dynamic batching for one loaded model.

A `Dispatcher` owns a model's queue. `submit(feeds, rows)` either queues the
request or, when `max_queue` requests already wait beyond what the free run
slots (of `max_concurrent`) will take next, refuses at once with BUSY and a
retry hint (never a hang).

Runs happen in the worker's thread pool, at most `max_concurrent` at a time
for this model; a run is handed to a thread the moment it is decided (no task,
no loop turn). With batching on (and a model whose
inputs and outputs all have a dynamic leading dimension), a run takes every
waiting request up to `max_batch_size` rows, concatenates them along axis 0,
runs once, and slices the outputs back to each caller.

When to wait for more rows: requests arriving in the same event-loop turn
(e.g. callers woken by the previous batch, or requests read from one batch of
packets) gather first: until the end of that loop iteration
(`mesh.eventloop.at_iteration_end`; one turn later on other loops). A lone caller (idle model whose recent runs served one request each)
skips it, except on inline models: there an in-process caller whose run
completes inline would never yield, and concurrent callers would go unnoticed.

While a run of the model is in flight, rows that arrive and do not fill a batch
follow it (`follow_runs`): they are handed to that run's thread (its lane), which
starts them the moment the run ends, so the executor neither sits idle until a
busy event loop notices the end (measured on the mid MLP over RPC: the median
idle time between runs fell from 1.3 ms to under 0.1 ms) nor runs partial batches
side by side. Only a full batch starts beside a run in flight. On a CPU worker
the executor threads share the cores with the event loop, and two runs side by
side slow each other and the loop down: with 32 callers joining their calls
(workers/inference_client.py), 16-row runs of the mid MLP took 4.5-5.5 ms side by
side and 3.5-3.9 ms one after the other in a lane, and the worker served
3,000-3,600 rows/s against 4,000-4,500 (2-core machine). With `follow_runs` off, a
partial batch waits at most `max_delay_ms` after its oldest request arrived
(capped at half the model's recent run time so the wait never dominates) and then
starts beside the run in flight: lower latency on a machine with idle cores, for
models where a larger batch gains little.

A burst that finds the model idle is split (`split_bursts`): callers in a closed
loop (each waits for its answer before sending again) otherwise arrive together,
wait together, and leave the executor idle while the transport carries a whole
batch's replies and the next requests. Run as two halves back to back in one
lane, half the callers are on the wire while the other half computes. Models for
which batching does not pay are served with `batching = false` per model; the
same queue and capacity rules apply with one request per run.

If a batched run fails, its requests are re-run one by one, so one bad request
fails alone. Models whose runs take only microseconds run on the event-loop
thread instead (`inline_max_us`), where a thread hop would cost more than the run.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from mesh.eventloop import at_iteration_end

from ..errors import Busy, InferenceFailed, ModelNotLoaded, WorkerError, as_worker_error
from .runner import Session
from .stats import InferenceStats


@dataclass(frozen=True)
class ServingConfig:
    """Per-model serving settings.

    batching: combine concurrent requests into one run (needs a dynamic batch dim).
    max_batch_size: most rows in one run (a larger single request runs alone).
    max_delay_ms: with follow_runs off, longest a partial batch waits for more
    rows before starting beside a run in flight (see the module doc).
    max_concurrent: runs in flight at once.
    max_queue: requests allowed to wait beyond those running; past it, BUSY.
    split_bursts: a burst of more than half a batch that finds the model idle
    runs as two half batches back to back, so that the first half's replies
    travel (and its callers send their next requests) while the second half
    computes; see the module doc.
    follow_runs: rows that arrive while a run is in flight and do not fill a
    batch run right after it in its thread, instead of beside it after
    `max_delay_ms` (which applies only with this off); see the module doc.
    inline_max_us: run on the event-loop thread, skipping the executor hop
    (~100-200 us on a busy 2-core machine), while the model's recent run time
    is at most this; 0 disables. Only tiny models qualify, so the loop is never
    blocked for long.
    """

    batching: bool = True
    max_batch_size: int = 32
    max_delay_ms: float = 1.0
    max_concurrent: int = 2
    max_queue: int = 128
    inline_max_us: float = 200.0
    split_bursts: bool = True
    follow_runs: bool = True

    def __post_init__(self):
        if (self.max_batch_size < 1 or self.max_concurrent < 1 or self.max_queue < 0 or self.max_delay_ms < 0
                or self.inline_max_us < 0):
            raise ValueError(f"invalid serving config {self}")


class RunExecutor(ThreadPoolExecutor):
    """The worker's onnxruntime threads, shared by all its models. It counts the
    calls that wait for a thread, so that a lane (`Dispatcher._lane`) gives its
    thread up to another model's run instead of keeping it while there is work
    of its own: the pool stays first come, first served between models. It also
    counts the calls not yet finished (`busy`): the event loop does not busy-poll
    while a run will soon need the GIL to hand its results back (mesh/busy_poll.py)."""

    def __init__(self, max_workers: int, thread_name_prefix: str = ""):
        super().__init__(max_workers, thread_name_prefix=thread_name_prefix)
        self._waiting = 0
        self._unfinished = 0
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        return self._waiting

    def busy(self) -> bool:
        return self._unfinished > 0

    def submit(self, fn, /, *args, **kwargs):
        with self._lock:
            self._waiting += 1
            self._unfinished += 1
        try:
            return super().submit(self._started, fn, args, kwargs)
        except BaseException:
            with self._lock:
                self._waiting -= 1
                self._unfinished -= 1
            raise

    def _started(self, fn, args, kwargs):
        with self._lock:
            self._waiting -= 1
        try:
            return fn(*args, **kwargs)
        finally:
            with self._lock:
                self._unfinished -= 1


@dataclass(eq=False)
class _Item:
    feeds: Mapping[str, np.ndarray]
    rows: int
    future: asyncio.Future
    t0: float          # perf_counter at admission (stats)
    t_loop: float      # loop time at admission (delay deadline)


Result = tuple[dict[str, np.ndarray], int]


class Dispatcher:
    def __init__(self, name: str, session: Session, config: ServingConfig, executor: Executor,
                 stats: InferenceStats):
        self.name = name
        self.session = session
        self.config = config
        self.batching = config.batching and session.batch_dynamic
        self._executor = executor
        self._stats = stats
        self._loop = asyncio.get_running_loop()
        self._pending: deque[_Item] = deque()
        self._pending_rows = 0
        self._running = 0
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task] = set()
        self._soon = False  # a gathering wake-up is pending
        self._soon_passed = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_fired = False
        self._ewma_run_s: float | None = None
        self._ewma_requests = 1.0
        self._following = False  # this busy period's partial batches follow the run in flight (its lane)
        self._lane_lock = threading.Lock()  # the hand-off between the loop and a lane's thread
        self._lane_open = False  # a split run's thread will take the hand-off when its run ends
        self._handoff: list[_Item] = []
        self._idle_since: float | None = None

    # ------------------------------------------------------------ public

    def load(self) -> dict[str, Any]:
        return {"running": self._running, "queued": len(self._pending) + len(self._handoff),
                "max_concurrent": self.config.max_concurrent, "max_queue": self.config.max_queue,
                "batching": self.batching, "max_batch_size": self.config.max_batch_size}

    async def submit(self, feeds: Mapping[str, np.ndarray], rows: int) -> Result:
        """(outputs, rows in the run that served it); raises Busy, ModelNotLoaded,
        InferenceFailed."""
        if self._closed:
            raise ModelNotLoaded(f"model {self.name} was unloaded")
        free_slots = self.config.max_concurrent - self._running
        if len(self._pending) + len(self._handoff) >= self.config.max_queue + free_slots:
            self._stats.busy.inc(self.name)
            raise Busy(f"model {self.name}: {self._running} running and {len(self._pending)} queued "
                       f"(max_queue {self.config.max_queue})", retry_after_ms=self.retry_after_ms())
        item = _Item(feeds, rows, self._loop.create_future(), time.perf_counter(), self._loop.time())
        if not self._pending:
            self._soon_passed = False  # a new group of arrivals: let it gather for one loop turn
        self._pending.append(item)
        self._pending_rows += rows
        self._idle.clear()
        self._pump()
        return await item.future

    def retry_after_ms(self) -> int:
        """A guess of when a slot frees up: recent run time times queue depth."""
        run_s = self._ewma_run_s or 0.005
        per_run = max(1.0, self._ewma_requests) * self.config.max_concurrent
        return max(1, math.ceil(1000 * run_s * (1 + (len(self._pending) + len(self._handoff)) / per_run)))

    async def close(self) -> None:
        """Refuse new requests and wait until queued and running ones finish."""
        self._closed = True
        await self._idle.wait()

    # ------------------------------------------------------------ dispatch

    def _pump(self) -> None:
        while self._running < self.config.max_concurrent:
            self._drop_cancelled()
            if not self._pending:
                break
            if self.batching and self._postpone():
                return
            batch = self._take()
            if self._inline():
                self._run_inline(batch)
            else:
                self._start(batch)
        self._update_idle()

    def _postpone(self) -> bool:
        """True when dispatch is put off to let more requests join (a wake-up is set).

        Requests that arrive in the same loop turn (callers woken by one batch)
        gather first, except for a lone caller (see `_lone`). While another run
        is in flight, a partial batch follows it (`_following`) or, with
        follow_runs off, waits for the timer (`max_delay_ms`)."""
        if not self._soon_passed and not self._lone():
            if not self._soon:
                self._soon = True
                at_iteration_end(self._after_soon, self._loop)
            return True
        if self._running == 0 or self._pending_rows >= self.config.max_batch_size:
            return False
        if self._following and self._lane_open:
            # the run in flight takes these when it ends (or its _ran pumps); what is
            # in flight without a lane (a failed batch re-run one by one) is not followed
            self._hand_off()
            return True
        if self._timer_fired:
            return False
        delay = self.config.max_delay_ms / 1000
        if self._ewma_run_s is not None:
            delay = min(delay, self._ewma_run_s / 2)
        due = self._pending[0].t_loop + delay
        if delay <= 0 or self._loop.time() >= due:
            return False
        if self._timer is None:
            self._timer = self._loop.call_at(due, self._after_timer)
        return True

    def _lone(self) -> bool:
        """Skip the gathering turn: the model is idle, its recent runs served one
        request each, and the run goes to the executor (which suspends the
        caller, so callers that turn concurrent still queue up behind it)."""
        return self._running == 0 and self._ewma_requests < 1.5 and not self._inline()

    def _after_soon(self) -> None:
        self._soon = False
        self._soon_passed = True
        self._pump()

    def _after_timer(self) -> None:
        self._timer = None
        self._timer_fired = True
        self._pump()

    def _drop_cancelled(self) -> None:
        while self._pending and self._pending[0].future.done():
            self._pending_rows -= self._pending.popleft().rows

    def _take(self) -> list[_Item]:
        """The next run's requests, oldest first, up to max_batch_size rows.

        Full batches rather than rows shared over the free slots: measured on
        the shared 2-core machine, two half batches in parallel gave 0.62x of
        raw batch-32 throughput for the mid MLP and one full batch 0.75x; rows
        beyond a full batch still go to the next free slot."""
        limit = self.config.max_batch_size
        if self.batching and self.config.follow_runs and not self._inline():
            self._following = True
        if self._running == 0:
            if (self.batching and self.config.split_bursts and limit > 1 and self._pending_rows > limit // 2
                    and len(self._pending) > 1 and not self._inline() and self._callers_away()):
                limit = min(limit, (self._pending_rows + 1) // 2)
                self._following = True   # the second half follows the first
        batch: list[_Item] = []
        rows = 0
        while self._pending:
            item = self._pending[0]
            if not item.future.done():
                if batch and (not self.batching or rows + item.rows > limit):
                    break
                batch.append(item)
                rows += item.rows
            self._pending.popleft()
            self._pending_rows -= item.rows
        self._timer_fired = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return batch

    def _start(self, batch: list[_Item]) -> None:
        """Give `batch` to an executor thread now: no task and no loop turn between
        the decision and the run. A run started while splitting keeps its thread
        (a lane): rows the loop hands off meanwhile (`_hand_off`) run as soon as
        the run ends, without waiting for the loop to notice the end."""
        self._running += 1
        with self._lane_lock:
            self._lane_open = self._following
        try:
            self._executor.submit(self._lane, batch)
        except RuntimeError:  # the worker's executor is shut down: it is stopping
            self._running -= 1
            _fail(batch, ModelNotLoaded(f"model {self.name} was unloaded"))

    def _callers_away(self) -> bool:
        """Did the model sit idle, since its last run, for a good part of a run
        time? Then its callers spend that long away (a network round trip) and a
        split run overlaps it; callers in this process return at once and
        splitting would only make the runs smaller."""
        run_s = self._ewma_run_s
        return run_s is not None and self._idle_since is not None and \
            self._loop.time() - self._idle_since >= run_s / 2

    def _update_idle(self) -> None:
        if not self._pending and self._running == 0:
            self._following = False
            if not self._idle.is_set():
                self._idle_since = self._loop.time()
            self._idle.set()

    def _lane(self, batch: list[_Item]) -> None:
        """Executor thread: run `batch`, then whatever was handed off meanwhile,
        until the hand-off is empty or other runs wait for a thread (they go
        first; this model's next run queues behind them); each outcome goes back
        to the loop."""
        while True:
            t_start = time.perf_counter()
            try:
                outcome = _execute(self.session, [i.feeds for i in batch], [i.rows for i in batch])
            except BaseException as e:  # noqa: BLE001 - handed to the loop, which tells every caller
                outcome = e
            others_wait = getattr(self._executor, "waiting", 0) > 0  # another model's run wants a thread
            with self._lane_lock:
                if self._lane_open and self._handoff and not others_wait and not isinstance(outcome, BaseException):
                    following, self._handoff = self._handoff, []
                else:  # the lane ends; the loop takes back what is left in the hand-off (_ran)
                    following, self._lane_open = [], False
            try:
                self._loop.call_soon_threadsafe(self._ran, batch, t_start, outcome, bool(following))
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return
            if not following:
                return
            batch = following

    def _ran(self, batch: list[_Item], t_start: float, outcome: Any, lane_goes_on: bool) -> None:
        """Loop thread: one run of a lane ended."""
        try:
            self._deliver(batch, t_start, outcome)
        except BaseException as e:  # a bug here: the callers still hear back, the slot is still freed
            _fail(batch, as_worker_error(e) if isinstance(e, Exception) else e)
            raise
        finally:
            if not lane_goes_on:
                with self._lane_lock:
                    back, self._handoff = self._handoff, []
                self._pending.extendleft(reversed(back))
                self._pending_rows += sum(i.rows for i in back)
                self._running -= 1
            self._pump()  # rows that did not fit the hand-off before go to it (or to a run) now

    def _deliver(self, batch: list[_Item], t_start: float, outcome: Any) -> None:
        for item in batch:
            self._stats.queue_s.observe(t_start - item.t0, self.name)
        if isinstance(outcome, BaseException):
            if isinstance(outcome, WorkerError) and len(batch) > 1:
                self._running += 1  # released by the task
                task = self._loop.create_task(self._singly_then_release(batch, outcome))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                _fail(batch, as_worker_error(outcome) if isinstance(outcome, Exception) else outcome)
            return
        results, run_s = outcome
        rows = sum(i.rows for i in batch)
        self._record(batch, rows, run_s)
        for item, out in zip(batch, results):
            _resolve(item.future, (out, rows))

    def _hand_off(self) -> None:
        """While a split run's lane is open, move waiting rows (up to a batch) to
        it; they run the moment its run ends. Otherwise they keep waiting here."""
        limit = self.config.max_batch_size
        with self._lane_lock:
            if not self._lane_open:
                return
            rows = sum(i.rows for i in self._handoff)
            while self._pending and rows + self._pending[0].rows <= limit:
                item = self._pending.popleft()
                self._pending_rows -= item.rows
                if not item.future.done():
                    self._handoff.append(item)
                    rows += item.rows

    def _run_inline(self, batch: list[_Item]) -> None:
        """Run on the loop thread, no task and no thread hop (tiny models only)."""
        t_start = time.perf_counter()
        for item in batch:
            self._stats.queue_s.observe(t_start - item.t0, self.name)
        rows = sum(i.rows for i in batch)
        try:
            results, run_s = _execute(self.session, [i.feeds for i in batch], [i.rows for i in batch])
        except Exception as e:
            if len(batch) == 1 or not isinstance(e, WorkerError):
                _fail(batch, as_worker_error(e))  # callers hear back; a bug is logged by the worker
            else:  # the executor path re-runs them one by one
                self._running += 1
                task = self._loop.create_task(self._singly_then_release(batch, e))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return
        self._record(batch, rows, run_s)
        for item, out in zip(batch, results):
            _resolve(item.future, (out, rows))

    async def _singly_then_release(self, batch: list[_Item], error: WorkerError) -> None:
        try:
            await self._run_singly(batch, error)
        finally:
            self._running -= 1
            self._pump()

    def _inline(self) -> bool:
        return self._ewma_run_s is not None and self._ewma_run_s * 1e6 <= self.config.inline_max_us

    async def _run_singly(self, batch: list[_Item], first_error: WorkerError) -> None:
        for item in batch:
            try:
                (out,), run_s = await self._loop.run_in_executor(self._executor, _execute, self.session,
                                                                 [item.feeds], [item.rows])
            except Exception as e:
                if not item.future.done():
                    item.future.set_exception(as_worker_error(e))
                continue
            self._record([item], item.rows, run_s)
            _resolve(item.future, (out, item.rows))

    def _record(self, batch: list[_Item], rows: int, run_s: float) -> None:
        self._ewma_run_s = run_s if self._ewma_run_s is None else 0.8 * self._ewma_run_s + 0.2 * run_s
        self._ewma_requests = 0.8 * self._ewma_requests + 0.2 * len(batch)
        self._stats.batches.inc(self.name)
        self._stats.rows.inc(self.name, amount=rows)
        self._stats.batch_rows.observe(rows, self.name)
        self._stats.batch_requests.observe(len(batch), self.name)
        self._stats.run_s.observe(run_s, self.name)


def _fail(batch: list[_Item], error: BaseException) -> None:
    for item in batch:
        if not item.future.done():
            item.future.set_exception(error)


def _resolve(future: asyncio.Future, value: Result) -> None:
    if not future.done():  # the caller may have given up (cancelled)
        future.set_result(value)


def _execute(session: Session, feeds_list: list[Mapping[str, np.ndarray]],
             rows_list: list[int]) -> tuple[list[dict[str, np.ndarray]], float]:
    """Runs in an executor thread: concatenate, run once, split along axis 0.
    Returns the per-request outputs and the seconds spent here (no thread hop)."""
    t0 = time.perf_counter()
    if len(feeds_list) == 1:
        return [session.run(feeds_list[0])], time.perf_counter() - t0
    feeds = {name: np.concatenate([f[name] for f in feeds_list], axis=0) for name in feeds_list[0]}
    out = session.run(feeds)
    total = sum(rows_list)
    for name, value in out.items():
        if value.ndim == 0 or value.shape[0] != total:
            raise InferenceFailed(f"output {name!r} has leading dim {value.shape[:1]}, not the batch of {total}; "
                                  "disable batching for this model")
    results, start = [], 0
    for rows in rows_list:
        results.append({name: value[start:start + rows] for name, value in out.items()})
        start += rows
    return results, time.perf_counter() - t0
