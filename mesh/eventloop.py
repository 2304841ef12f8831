"""The event loop mesh processes run on: asyncio's, plus work run at the end of
the loop iteration in progress.

Batching in this code base happens per loop iteration: the RPC session sends the
messages of one iteration as one protomux batch, the inference batcher gathers
the requests of one iteration into one run. With plain asyncio the only way to
run something "after everything else in this iteration" is `call_soon`, which
runs it in the next iteration, after another poll of the selector: on a request
and reply path that was two extra iterations on each side (about a third of a
worker's loop iterations at one client).

`MeshEventLoop` runs the callbacks given to `at_iteration_end` right after the
iteration's ready callbacks. `at_iteration_end` falls back to `call_soon` on any
other loop (tests, aiohttp's default loop), so code using it runs anywhere, only
a turn later. Entry points start their loop with `run()`.

A MeshEventLoop can also poll for I/O briefly before it sleeps (`busy_poll_s`,
`set_busy_poll`; see busy_poll.py): server processes turn it on to save the
wake-ups that dominate latency at low load. It is off unless asked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .busy_poll import BusyPollSelector, BusyPollStats

T = TypeVar("T")


def _nothing() -> None:
    pass


class MeshEventLoop(asyncio.SelectorEventLoop):
    def __init__(self, selector=None, busy_poll_s: float = 0.0):
        self._busy_poll: BusyPollSelector | None = None
        self._executor_jobs = 0
        self._poll_pausers: list[Callable[[], bool]] = []
        if selector is None:
            selector = self._busy_poll = BusyPollSelector(busy_poll_s, paused=self._threads_working)
        elif busy_poll_s:
            raise ValueError("busy polling needs the loop's own selector")
        super().__init__(selector)
        self._iteration_end: list[Callable[[], None]] = []
        self._in_iteration_end = False

    def at_iteration_end(self, fn: Callable[[], None]) -> None:
        """Run `fn` once the ready callbacks of this iteration have run."""
        self._iteration_end.append(fn)
        if self._in_iteration_end:
            # added by an iteration-end callback: it runs at the end of the next
            # iteration, which must not block in the selector waiting for I/O
            self.call_soon(_nothing)

    def set_busy_poll(self, max_s: float) -> None:
        """Poll for up to `max_s` (adaptive) before sleeping; 0 turns polling off."""
        if self._busy_poll is None:
            raise ValueError("busy polling needs the loop's own selector")
        self._busy_poll.window.set_max(max_s)

    def busy_poll_stats(self) -> BusyPollStats | None:
        return self._busy_poll.stats if self._busy_poll is not None else None

    def pause_busy_poll_while(self, working: Callable[[], bool]) -> Callable[[], None]:
        """Do not poll while `working()` is true: code whose threads report back to
        this loop (and so need the GIL) registers here. Returns the undo."""
        self._poll_pausers.append(working)

        def undo() -> None:
            if working in self._poll_pausers:
                self._poll_pausers.remove(working)
        return undo

    def _threads_working(self) -> bool:
        if self._executor_jobs:
            return True
        for working in self._poll_pausers:
            if working():
                return True
        return False

    def run_in_executor(self, executor, func, *args):
        future = super().run_in_executor(executor, func, *args)
        self._executor_jobs += 1
        future.add_done_callback(self._executor_job_done)
        return future

    def _executor_job_done(self, _future) -> None:
        self._executor_jobs -= 1

    def _run_once(self) -> None:
        super()._run_once()
        if not self._iteration_end:
            return
        callbacks, self._iteration_end = self._iteration_end, []
        self._in_iteration_end = True
        try:
            for fn in callbacks:
                try:
                    fn()
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:  # as a failing call_soon callback: reported, the loop goes on
                    self.call_exception_handler({"message": "exception in an iteration-end callback",
                                                 "exception": exc, "callback": fn})
        finally:
            self._in_iteration_end = False


def at_iteration_end(fn: Callable[[], None], loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Run `fn` at the end of the running loop's current iteration (MeshEventLoop),
    or in its next iteration (any other loop)."""
    loop = loop or asyncio.get_running_loop()
    hook = getattr(loop, "at_iteration_end", None)
    if hook is not None:
        hook(fn)
    else:
        loop.call_soon(fn)


def set_busy_poll(max_s: float, loop: asyncio.AbstractEventLoop | None = None) -> bool:
    """Turn busy polling of the running loop (or `loop`) on (`max_s` > 0) or off.
    False, and nothing done, when it is not a MeshEventLoop (tests, other loops)."""
    loop = loop or asyncio.get_running_loop()
    if busy_poll_stats(loop) is None:  # not a MeshEventLoop, or one on a selector of its own
        return False
    loop.set_busy_poll(max_s)
    return True


def pause_busy_poll_while(working: Callable[[], bool],
                          loop: asyncio.AbstractEventLoop | None = None) -> Callable[[], None]:
    """MeshEventLoop.pause_busy_poll_while on the running loop (or `loop`); a no-op
    returning a no-op undo on other loops."""
    loop = loop or asyncio.get_running_loop()
    if isinstance(loop, MeshEventLoop):
        return loop.pause_busy_poll_while(working)
    return _nothing


def busy_poll_stats(loop: asyncio.AbstractEventLoop | None = None) -> BusyPollStats | None:
    """The busy-poll counters of the running loop (or `loop`); None on other loops."""
    loop = loop or asyncio.get_running_loop()
    return loop.busy_poll_stats() if isinstance(loop, MeshEventLoop) else None


def new_event_loop(busy_poll_s: float = 0.0) -> MeshEventLoop:
    return MeshEventLoop(busy_poll_s=busy_poll_s)


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """Makes MeshEventLoops (for test runners that create loops through the policy)."""

    def new_event_loop(self) -> MeshEventLoop:
        return MeshEventLoop()


def run(main: Coroutine[Any, Any, T], busy_poll_s: float = 0.0) -> T:
    """asyncio.run(main) on a MeshEventLoop."""
    with asyncio.Runner(loop_factory=lambda: new_event_loop(busy_poll_s)) as runner:
        return runner.run(main)
