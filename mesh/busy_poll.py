"""Busy polling: an event loop that polls for I/O a little before it sleeps.

On a virtual machine, waking a sleeping process costs far more than the work it
wakes for. A UDP round trip between two processes on the project's 2-core test VM
took 120-134 us when both sides slept in epoll_wait and 13 us when both polled:
each wake-up is an inter-processor interrupt the hypervisor delivers to a halted
virtual CPU, and the sender pays part of it inside sendto (about 45 us per send to
a sleeping peer, measured). A request through the mesh crosses four such wake-ups
(client, gateway, worker, gateway), so at low load they, and the cold caches that
come with them, are most of its latency.

The remedy is the one KVM uses for a halting guest (halt polling), Linux for
sockets (net.core.busy_poll) and Aeron for its agents (a back-off idle strategy):
before sleeping, poll for a while, giving the CPU to any other runnable thread
between polls (sched_yield), so nothing else waits on the poller. The window is
adaptive, as KVM's:

- a wake-up that came within `max_s` of going idle grows the window (doubling from
  `step_s`), so that steady traffic is met by a polling loop;
- a window that ran out with nothing, followed by a long sleep (over `max_s`),
  halves it, whether I/O or a timer ended the sleep, so a quiet process soon polls
  no more: after traffic stops, all the polling it does adds up to under 2 x `max_s`;
- timers do not grow it: a due timer needs no poller to be on time.

Threads: a poller holds the GIL between its polls, and CPython hands the GIL to a
waiting thread only after the switch interval (5 ms) unless the holder blocks. A
worker thread finishing a job while the loop polled could not report back until the
window ran out (measured: 1 ms executor jobs took 1.61 ms at p50 and 2.6-2.9 ms at
p90 with a 2 ms window, against 1.34 and 1.63 ms without). So the selector does not
poll while `paused()` says that other threads have work in flight (the mesh loop
counts its executor jobs, and code with its own threads registers a check); the
thread's result then wakes a sleeping loop, as without polling.

Costs: while requests come at least every `max_s`, a process polls its idle time
away and shows as busy in `top` (the polling thread yields to any other runnable
thread on its core). `max_s = 0` turns polling off; the selector then only adds
one Python call per sleep.

`BusyPollWindow` is the policy (sans-IO); `BusyPollSelector` runs it around a
`selectors` selector. Both take their clock and yield function as arguments.
"""

from __future__ import annotations

import os
import selectors
import time
from dataclasses import dataclass
from typing import Callable

STEP_S = 50e-6  # the first window, and the smallest kept when halving

# POSIX; elsewhere time.sleep(0) gives the GIL and the CPU up as well as Python can
_yield_cpu: Callable[[], object] = getattr(os, "sched_yield", lambda: time.sleep(0))


class BusyPollWindow:
    """How long to poll before sleeping; adapts to how soon wake-ups come."""

    def __init__(self, max_s: float = 0.0, step_s: float = STEP_S):
        if max_s < 0 or step_s <= 0:
            raise ValueError(f"busy poll needs max_s >= 0 and step_s > 0, got {max_s}, {step_s}")
        self.max_s = max_s
        self.step_s = step_s
        self.window = 0.0

    def set_max(self, max_s: float) -> None:
        if max_s < 0:
            raise ValueError(f"busy poll max must be >= 0 seconds, got {max_s}")
        self.max_s = max_s
        self.window = min(self.window, max_s)

    def woke(self, idle_s: float, polled_s: float, by_io: bool = True) -> None:
        """A sleep ended, by an I/O event or (`by_io` false) a due timer, `idle_s`
        after going idle, of which `polled_s` were spent polling without result."""
        if idle_s <= self.max_s:
            if by_io:
                self.window = min(self.max_s, max(self.step_s, self.window * 2))
        elif polled_s > 0:
            half = self.window / 2
            self.window = half if half >= self.step_s else 0.0


# how /metrics describes BusyPollStats (gateway and workers alike)
SECONDS_HELP = "time the event loop spent polling for I/O instead of sleeping (busy_poll_us)"
POLLS_HELP = "busy-poll windows by result: hit (an event came while polling), miss (the loop slept after all)"


@dataclass
class BusyPollStats:
    hits: int = 0          # polls that found an event (a sleep and its wake-up saved)
    misses: int = 0        # windows that ran out; the loop slept after all
    poll_seconds: float = 0.0  # time spent polling, hits and misses

    def by_result(self) -> dict[str, int]:
        """Windows by the `result` label /metrics gives them."""
        return {"hit": self.hits, "miss": self.misses}


class BusyPollSelector(selectors.DefaultSelector):
    """The platform's default selector, polling for up to the adaptive window
    before each blocking select.

    `select(0)` (asyncio's poll while callbacks are ready) is passed straight
    through: the loop is not idle then.
    """

    def __init__(self, max_s: float = 0.0, *, clock: Callable[[], float] = time.perf_counter,
                 yield_cpu: Callable[[], object] = _yield_cpu,
                 paused: Callable[[], bool] = lambda: False):
        super().__init__()
        self.window = BusyPollWindow(max_s)
        self.stats = BusyPollStats()
        self.paused = paused  # True: other threads will need the GIL soon; sleep instead
        self._clock = clock
        self._yield = yield_cpu

    def select(self, timeout: float | None = None):
        if timeout is not None and timeout <= 0:
            return super().select(timeout)
        window = self.window
        if window.max_s <= 0 or self.paused():
            return super().select(timeout)
        clock = self._clock
        start = clock()
        limit = window.window if timeout is None else min(window.window, timeout)
        polled = 0.0
        if limit > 0:
            poll = super().select
            end = start + limit
            while True:
                events = poll(0)
                now = clock()
                if events:
                    self.stats.hits += 1
                    self.stats.poll_seconds += now - start
                    return events
                if now >= end:
                    break
                self._yield()
            polled = now - start
            self.stats.misses += 1
            self.stats.poll_seconds += polled
            if timeout is not None:
                timeout = max(timeout - polled, 0.0)
        events = super().select(timeout)
        window.woke(clock() - start, polled, bool(events))
        return events
